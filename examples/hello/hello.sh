#!/bin/sh
# Say who and where we are, from inside the container.
echo "hello from task ${SLURM_PROCID:-0} of ${SLURM_NTASKS:-1} on ${SLURMD_NODENAME:-$(hostname)}" \
     "uid $(id -u) container ${CH_RUNNING:+yes}"
