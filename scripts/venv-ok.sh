#!/usr/bin/env bash
# Usage: venv-ok.sh VENV_PYTHON. Exits 0 when the virtual environment's interpreter runs,
# is Python 3.11 or newer and has a working pip; 1 otherwise (quietly).
set -u
python=$1
[ -x "$python" ] || exit 1
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 || exit 1
"$python" -m pip --version >/dev/null 2>&1
