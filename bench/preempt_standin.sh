#!/bin/sh
# A stand-in for `python -m trainer` in the preemption benchmark. Usage: preempt_standin.sh SAVE_S [args...]
# With +extra.quick=1 among its arguments it ends at once (the urgent run). Otherwise it runs until stopped,
# and a SIGTERM is a preemption as the trainer takes it: SAVE_S seconds to its safe point and checkpoint,
# then exit 75.
save=$1; shift
for arg in "$@"; do case "$arg" in +extra.quick=1) exit 0;; esac; done
trap 'sleep "$save"; exit 75' TERM
sleep 600 & wait $!
