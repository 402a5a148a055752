#!/bin/bash
# scheduler: flux (the allocation's options are on the flux batch command line)
# Flux gives a batch script no host list variable: ask this instance for it.
BALSAM_FLUX_HOSTLIST=$(flux getattr hostlist) || exit 1
export BALSAM_FLUX_HOSTLIST BALSAM_FLUX_URI="$FLUX_URI"
# Balsam launcher: project 'my proj; touch x', queue debug, 4 node(s), 30 minute(s), mpi mode
export BALSAM_DB_PATH=@TMP@/wf
cd @TMP@/wf
exec /opt/balsam launcher --consume-all --job-mode mpi --time-limit-minutes 27
