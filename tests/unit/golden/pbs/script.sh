#!/bin/bash
#PBS -N balsam-12
#PBS -l select=4
#PBS -l place=scatter:excl
#PBS -l walltime=00:30:00
#PBS -j oe
#PBS -o @TMP@/wf/qsubmit/
#PBS -A 'my proj; touch x'
#PBS -q debug
# Balsam launcher: project 'my proj; touch x', queue debug, 4 node(s), 30 minute(s), mpi mode
export BALSAM_DB_PATH=@TMP@/wf
cd @TMP@/wf
exec /opt/balsam launcher --consume-all --job-mode mpi --time-limit-minutes 27
