"""venv_reexec.py: runs a test script under the project's venv (made by venv.sh, with tahoe-lafs 1.20.0) when it
was started by another Python: the scripts drive real tahoe-lafs nodes and import allmydata."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def ensure(script):
    """Returns if allmydata imports here; else re-executes `script` (with the same arguments) under the venv's
    Python, or exits saying why it cannot."""
    name = os.path.basename(script)
    try:
        import allmydata  # noqa: F401  (only to know we run in the tahoe venv)
        return
    except ImportError:
        pass
    if os.environ.get("TAHOE_MOUNT_TEST_REEXEC"):
        sys.exit(f"{name}: the interpreter from venv.sh cannot import allmydata")
    out = subprocess.run(["bash", os.path.join(HERE, "venv.sh")], stdout=subprocess.PIPE)
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"{name}: no tahoe-lafs here, and mount-tests/venv.sh failed (status {out.returncode})")
    python = out.stdout.decode().strip().splitlines()[-1]
    os.environ["TAHOE_MOUNT_TEST_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(script)] + sys.argv[1:])
