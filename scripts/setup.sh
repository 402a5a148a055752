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
    # PostgreSQL server binaries (the tests start their own private cluster), util-linux for
    # setpriv and flock, Slurm and munge (the tests start their own cluster of four nodes),
    # zsh (balsamactivate is tested in bash and zsh, the shells of HPC login nodes), and the
    # scp of openssh-client (0.5's scp: stage-in and stage-out URLs), rsync (rsync:// and
    # HOST:PATH staging; the tests run their own rsync daemon), openssh-server (the tests run
    # their own sshd on a loopback port for rsync over ssh), and podman with runc, catatonit
    # (the init process of `podman run --init`; only a recommendation of the podman package,
    # so a minimal install lacks it), busybox-static (container apps run in an image
    # imported from a busybox root filesystem) and nginx-light (the edge service is tested
    # behind a real nginx terminating TLS, as docs/server.md deploys it; the tests run their
    # own nginx on a loopback port, never the package's service).
    apt_install postgresql-15 util-linux slurm-wlm munge zsh openssh-client rsync openssh-server \
        podman runc catatonit busybox-static nginx-light
fi

PYTHON=${PYTHON:-python3}
# A venv without pip is what a failed 'python -m venv' leaves behind: make it again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    # Debian ships venv's ensurepip separately: without python3-venv, 'python3 -m venv' fails.
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
    "$PYTHON" -m venv --clear .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [[ "${1:-}" == "--tests" ]]; then
    .venv/bin/python -m pip install -q -e '.[dev,mpi,transfer,server,plot]'
else
    .venv/bin/python -m pip install -q -e .
fi
