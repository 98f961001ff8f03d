#!/usr/bin/env bash
# Usage: python-ok.sh PYTHON. Exits 0 when PYTHON is Python 3.11 or newer; otherwise says
# what was found and how to get a suitable one, and exits 1.
set -u
python=${1:-python3}
if "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  exit 0
fi
if command -v "$python" >/dev/null 2>&1; then
  found=$("$python" --version 2>&1 | head -n 1)
else
  found="not found"
fi
echo "make: this project needs Python 3.11 or newer, and $python is: $found." >&2
echo "make: install one (Debian 12 and Ubuntu 24.04: apt-get install python3 python3-venv;" \
  "older systems: a python3.11 or later package, or pyenv), then run" \
  "make PYTHON=/path/to/python3.11 (or newer)." >&2
exit 1
