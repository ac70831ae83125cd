#!/bin/sh
# A stand-in for `python -m trainer` in the service benchmarks: it records when it started and ended
# (for the dispatch benchmark) and sleeps. Usage: standin_trainer.sh TIMES_FILE SECONDS [trainer args...]
times=$1; secs=$2; shift 2
name=unknown
for arg in "$@"; do case "$arg" in run_name=*) name=${arg#run_name=};; esac; done
name=${name#\'}; name=${name%\'}  # the service quotes the value for Hydra's override parser
echo "start $name $(date +%s.%N)" >> "$times"
sleep "$secs"
echo "end $name $(date +%s.%N)" >> "$times"
