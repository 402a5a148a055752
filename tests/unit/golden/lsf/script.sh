#!/bin/bash
# scheduler: lsf (the allocation's options are on the bsub command line)
# Balsam launcher: project 'my proj; touch x', queue debug, 4 node(s), 30 minute(s), mpi mode
export BALSAM_DB_PATH=@TMP@/wf
cd @TMP@/wf
exec /opt/balsam launcher --consume-all --job-mode mpi --time-limit-minutes 27
