#!/usr/bin/env bash
# Creates (once) the Python venv that holds the reference implementation, tahoe-lafs 1.20.0, and Python zfec.
# Idempotent and quick when the venv is already there. Prints the interpreter's path on the last line.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${TAHOE_MOUNT_VENV:-$repo/.venv}
want="tahoe-lafs==1.20.0 zfec"
stamp=$venv/.tahoe-mount-venv-ok
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import allmydata, zfec' 2>/dev/null; then
  echo "$venv/bin/python"; exit 0
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  # A fresh Debian may have no Python, and splits venv/ensurepip out of python3.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  else
    echo "need python3 with venv: install python3 and python3-venv" >&2; exit 1
  fi
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check $want
"$venv/bin/python" -c 'import allmydata, zfec'
echo "$want" > "$stamp"
echo "$venv/bin/python"
