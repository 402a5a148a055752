#!/usr/bin/env bash
# A staged workflow: pull the input over HTTP, process it in two steps, push the results
# with rsync. Run as written:
#
#     docs/examples/staged_workflow.sh INPUT_URL RSYNC_DESTINATION [WORKFLOW_DIR]
#
#   INPUT_URL           http(s)://... of a CSV file; add #sha256=HEX to have it checked
#   RSYNC_DESTINATION   rsync://HOST[:PORT]/MODULE/DIR (an rsync daemon) or [USER@]HOST:DIR
#                       (rsync over ssh, with your ssh keys)
#   WORKFLOW_DIR        the workflow database to create (default ./staged-demo)
#
# The first job downloads the input into its working directory (resumed after a dropped
# connection, retried after a 5xx) and counts its rows; the second gets the first's
# count.txt as its input (a parent's file), writes a summary, and its *.out files are
# pushed to RSYNC_DESTINATION when it ends. docs/data-movement.md explains each step.
set -euo pipefail

INPUT_URL=${1:?usage: staged_workflow.sh INPUT_URL RSYNC_DESTINATION [WORKFLOW_DIR]}
DESTINATION=${2:?usage: staged_workflow.sh INPUT_URL RSYNC_DESTINATION [WORKFLOW_DIR]}
SITE=${3:-$PWD/staged-demo}
INPUT_NAME=$(basename "${INPUT_URL%%[?#]*}")

balsam init "$SITE"
export BALSAM_DB_PATH=$SITE

balsam app --name count_rows --executable "sh -c 'tail -n +2 $INPUT_NAME | wc -l > count.txt'"
balsam app --name summarize --executable "sh -c 'echo rows: \$(cat count.txt) > summary.out'"

fetch=$(balsam job --name fetch --workflow staged --application count_rows \
    --url-in "$INPUT_URL" --yes)
balsam job --name summary --workflow staged --application summarize \
    --parent "$fetch" --input-files count.txt \
    --stage-out-files '*.out' --url-out "$DESTINATION" --yes >/dev/null

# Runs both jobs on this machine and exits when nothing is left to do.
balsam launcher --consume-all --job-mode serial

balsam ls --wf staged
