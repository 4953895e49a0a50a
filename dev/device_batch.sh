#!/usr/bin/env bash
# Several benchmark commands in one call of the lent GPU machine, each logged to its own file, all
# packed into ONE archive before the first command and after every one ($OUT/res.tgz): the device
# tool returns at most 8 files from $OUT, and what is in $OUT when a call is cut off still comes back.
#
#   bash dev/device_batch.sh NAME "COMMAND" [NAME "COMMAND" ...]
#
# e.g. bash dev/device_batch.sh tests "python3 -m pytest -q -m gpu tests/test_model.py" \
#          slide "python3 bench/eval_full.py --skip-old --ttt-chunks 0 --sliding-windows 16384 --json \$R/slide.json"
# Each COMMAND runs in the repository root under bash with R (this call's fresh results folder)
# exported: write \$R, escaped, so that the COMMAND's shell expands it. Its stdout and stderr go to
# $R/logs/NAME.txt, its seconds and exit status to $R/steps.txt. NAME: letters, digits, '.', '_', '-'.
# Wheels carried in .whl/ are installed first (the machine lacks brotli, pandas, papermill). The exit
# status is 1 if any COMMAND failed. Unpack here with tar xzf <files_at>/res.tgz.
set -uo pipefail
if (( $# == 0 || $# % 2 )); then
  echo "device_batch.sh: give NAME \"COMMAND\" pairs" >&2
  exit 2
fi
for (( i = 1; i <= $#; i += 2 )); do
  if [[ ! ${!i} =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "device_batch.sh: NAME '${!i}' must be letters, digits, '.', '_' or '-'" >&2
    exit 2
  fi
done
: "${OUT:?device_batch.sh: OUT, the folder the device tool returns, is not set}"
R=$(mktemp -d /tmp/res.XXXXXX)  # fresh each call: a warm machine keeps /tmp
export R PYTHONUNBUFFERED=1
mkdir -p "$R/logs"
pack() {
  if tar czf "$OUT/res.tgz.tmp" -C "$R" . 2>> "$R/pack_errors.txt"; then
    mv "$OUT/res.tgz.tmp" "$OUT/res.tgz"
  else
    echo "device_batch.sh: packing $R failed (see pack_errors.txt in the last archive)" >&2
    rm -f "$OUT/res.tgz.tmp"
  fi
}
trap 'pack; exit 143' TERM
{ date -u; nvidia-smi -L 2>/dev/null; git log -1 --format=%H 2>/dev/null; } > "$R/machine.txt"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$R/logs/pip.txt" 2>&1 || { echo "device_batch.sh: installing .whl/ failed (logs/pip.txt)" >&2; pack; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
pack
failed=0
while (( $# )); do
  name=$1 cmd=$2
  shift 2
  t0=$(date +%s)
  bash -c "$cmd" > "$R/logs/$name.txt" 2>&1
  rc=$?
  (( rc )) && failed=1
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 )) ended=$(date -u +%H:%M:%S)" | tee -a "$R/steps.txt"
  pack
done
exit $failed
