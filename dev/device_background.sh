#!/usr/bin/env bash
# A long job across several calls of one warm device machine: the device tool kills what a command
# leaves running, except a process in a session of its own (setsid), which runs until the machine goes
# back (30 minutes held). The first call starts the job that way; every call (the first too) then
# copies the job's results into $OUT every 20 s until SECONDS have passed or the job has ended, so a
# call cut off by its limit still returns the latest. Call again within the machine's idle release (30 s) to keep it.
#
#   bash dev/device_background.sh start SECONDS "COMMAND" FILE...   # first call
#   bash dev/device_background.sh watch SECONDS FILE...             # later calls
#
# COMMAND runs in the repository root with PYTHONPATH set to the carried wheels (.whl, installed by
# start), stdout and stderr to /tmp/bg/job.log. FILE: what to return (besides job.log), e.g.
# /tmp/bg/ablr.tgz; at most 6 (the tool returns 8 files). Example, the record-size ablation:
#   bash dev/device_background.sh start 580 "bash bench/ablation.sh record '42 314 1337' --gpus 0 1 2 3 \
#     --stop-taking-after 1300 --archive /tmp/bg/ablr.tgz" /tmp/bg/ablr.tgz
set -uo pipefail
: "${OUT:?device_background.sh: OUT, the folder the device tool returns, is not set}"
mode=${1:?usage: device_background.sh start SECONDS COMMAND FILE... | watch SECONDS FILE...}
seconds=${2:?SECONDS missing}
shift 2
mkdir -p /tmp/bg
if [[ $mode == start ]]; then
  command=${1:?COMMAND missing}
  shift
  if [[ -f /tmp/bg/job.pid ]] && kill -0 "$(cat /tmp/bg/job.pid)" 2>/dev/null; then
    echo "device_background.sh: a job is still running (pid $(cat /tmp/bg/job.pid)): watch it, or kill it first" >&2
    exit 1
  fi
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "device_background.sh: wheel install failed" >&2; exit 1; }
  fi
  PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 \
    setsid nohup bash -c "$command; echo \"exit \$? at \$(date -u +%T)\"" >/tmp/bg/job.log 2>&1 </dev/null &
  echo $! >/tmp/bg/job.pid
  echo "started: $command"
elif [[ $mode != watch ]]; then
  echo "device_background.sh: mode must be start or watch, got '$mode'" >&2
  exit 2
fi
deadline=$(( $(date +%s) + seconds ))
while :; do
  for f in /tmp/bg/job.log "$@"; do
    [[ -f $f ]] && cp "$f" "$OUT/$(basename "$f").part" && mv "$OUT/$(basename "$f").part" "$OUT/$(basename "$f")"
  done
  nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used --format=csv,noheader >"$OUT/gpus.txt" 2>&1
  (( $(date +%s) >= deadline )) && break
  grep -Eq '^exit [0-9]+ at' /tmp/bg/job.log 2>/dev/null && break  # the job ended: its last files are copied
  sleep 20
done
tail -5 /tmp/bg/job.log
