#!/usr/bin/env bash
# Install what Balsam and its tests need on a fresh Debian 12 machine, into ./.venv.
# Idempotent: quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        local sudo=""
        [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

if [[ "${1:-}" == "--tests" ]]; then
    # PostgreSQL server binaries (the tests start their own private cluster), util-linux for setpriv.
    apt_install postgresql-15 util-linux
fi

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [[ "${1:-}" == "--tests" ]]; then
    .venv/bin/python -m pip install -q -e '.[dev,mpi]'
else
    .venv/bin/python -m pip install -q -e .
fi
