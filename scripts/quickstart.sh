#!/usr/bin/env bash
# Install Balsam and run its README quick start on the embedded default (SQLite, local launcher).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export BALSAM_HOME="${BALSAM_HOME:-$HOME/.balsam}"
WF="${1:-$HOME/myWorkflow}"
[[ -e "$WF" ]] && { echo "quickstart: $WF exists; pass another path" >&2; exit 1; }

set -x
balsam init "$WF"
# shellcheck disable=SC1091
source balsamactivate "$(basename "$WF")"
balsam app --name SayHello --executable "echo hello,"
balsam job --name hi --workflow test --application SayHello --args 'world!' --yes
balsam submit-launch -A MyProject -q DebugQueue -t 5 -n 1 --job-mode=mpi
set +x
for _ in $(seq 60); do
    balsam ls --state JOB_FINISHED | grep -q " hi " && break
    sleep 1
done
balsam ls
cat "$WF"/data/test/hi_*/hi.out
