#!/usr/bin/env bash
# Several benchmark commands in one call of the lent GPU machine, each logged to its own file, all
# packed into ONE archive after every command ($OUT/res.tgz): the device tool returns at most 8 files
# from $OUT, and what is in $OUT when a call is cut off still comes back.
#
#   bash bench/device_batch.sh NAME "COMMAND" [NAME "COMMAND" ...]
#
# e.g. bash bench/device_batch.sh tests "python3 -m pytest -q -m gpu tests/test_model.py" \
#          slide "python3 bench/eval_full.py --skip-old --ttt-chunks 0 --sliding-windows 16384 --json \$R/slide.json"
# Each COMMAND runs in the repository root under bash, with R (the results folder) exported; its
# stdout and stderr go to $R/NAME.txt, its seconds and exit status to $R/steps.txt. Wheels carried in
# .whl/ are installed first (the machine lacks brotli, pandas, papermill). Unpack here with
# tar xzf <files_at>/res.tgz.
set -uo pipefail
if (( $# == 0 || $# % 2 )); then
  echo "device_batch.sh: give NAME \"COMMAND\" pairs" >&2
  exit 2
fi
: "${OUT:?device_batch.sh: OUT, the folder the device tool returns, is not set}"
export R=${R:-/tmp/res} PYTHONUNBUFFERED=1
mkdir -p "$R"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "device_batch.sh: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
pack() { tar czf "$OUT/res.tgz.tmp" -C "$R" . && mv "$OUT/res.tgz.tmp" "$OUT/res.tgz"; }
{ date -u; nvidia-smi -L 2>/dev/null; git log -1 --format=%H 2>/dev/null; } > "$R/machine.txt"
while (( $# )); do
  name=$1 cmd=$2
  shift 2
  t0=$(date +%s)
  bash -c "$cmd" > "$R/$name.txt" 2>&1
  rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 )) ended=$(date -u +%H:%M:%S)" | tee -a "$R/steps.txt"
  pack
done
