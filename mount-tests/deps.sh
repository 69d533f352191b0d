#!/usr/bin/env bash
# Installs the programs the mount and its tests need, when missing: FUSE 3 (fusermount3, for mounting), the
# tools the mount tests and benchmarks drive through a real mount (rsync, restic, fio), and what peer_suites.py
# needs to build pjdfstest, fsx and fsstress from source and run them (autotools, gcc, make, prove from perl, and
# the headers xfstests' configure asks for). Debian's packages, via apt-get when run as root; otherwise says what
# is missing and fails.
set -euo pipefail
missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v rsync >/dev/null || missing+=(rsync)
command -v restic >/dev/null || missing+=(restic)
command -v fio >/dev/null || missing+=(fio)
command -v autoreconf >/dev/null || missing+=(autoconf)
command -v automake >/dev/null || missing+=(automake)
command -v libtoolize >/dev/null || missing+=(libtool)
command -v gcc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
command -v prove >/dev/null || missing+=(perl)
for pkg in xfslibs-dev uuid-dev libattr1-dev libacl1-dev libaio-dev libinih-dev liburcu-dev; do
  [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == *" ok installed" ]] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
elif [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: missing ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
if [ ! -e /dev/fuse ]; then
  echo "deps.sh: /dev/fuse is missing: load the fuse module (modprobe fuse)" >&2
  exit 1
fi
