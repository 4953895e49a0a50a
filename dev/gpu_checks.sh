#!/usr/bin/env bash
# The checks made on one lent GPU, in order, as one background job (dev/device_background.sh):
#   sbs    bench/side_by_side.py: the record's script, golf train, golf train with the fast switches
#   run    golf run --params params/record.yaml --seeds 42, a few steps, through the notebooks
#   study  a 2-arm golf study through the notebooks (record, and a twin that quantizes with other clip sigmas),
#          scoring TTT and plain (the run stage scores sliding too)
#   scoring  bench/eval_full.py: full-val sliding and score-first TTT seconds (a prefix, extrapolated), with
#          the fast switches at batch 256, then by default
# STAGES picks them (default: all four, in that order), e.g. STAGES="study scoring"; STUDY_SET adds the
# study's own overrides (e.g. STUDY_SET=compile=off: no compiling, when little device time is left).
# After each, the results (no weights) are packed into /tmp/bg/gpu_checks.tgz.
#
#   bash dev/device_background.sh start 580 "bash dev/gpu_checks.sh" /tmp/bg/gpu_checks.tgz
#   (carry .whl, data/real8192 and gpu_tree: gpu_tree/rec/train_gpt.py is the record's script, unpacked)
set -uo pipefail
. dev/gpu_wheels.sh || exit 1
R=/tmp/bg/gpu_checks
mkdir -p "$R"
{ date -u; nvidia-smi -L; git log -1 --format=%H 2>/dev/null; python3 -c 'import torch; print(torch.__version__)'; } >"$R/machine.txt" 2>&1
pack() {
  tar czf /tmp/bg/gpu_checks.tgz.part -C /tmp/bg gpu_checks && mv /tmp/bg/gpu_checks.tgz.part /tmp/bg/gpu_checks.tgz
}
keep() {  # a study folder without its weights and artifacts
  tar cf - --exclude='*.pt' --exclude='*.ptz' --exclude='*.bin' -C outputs "$1" | tar xf - -C "$R"
}
stage() {
  local name=$1 t0=$SECONDS
  shift
  "$@" >"$R/$name.log" 2>&1
  echo "$name rc=$? seconds=$(( SECONDS - t0 )) ended=$(date -u +%T)" | tee -a "$R/steps.txt"
}
data=(data_dir=data/real8192 tokenizer_path=data/real8192/tokenizer.model)
short=(iterations=${STEPS:-20} warmup_steps=3 max_wallclock_seconds=0 val_loss_every=0 train_log_every=5
       gptq_calibration_batches=8 max_val_tokens=262144)
for s in ${STAGES:-sbs run study scoring}; do
  case $s in
    sbs) stage sbs python3 bench/side_by_side.py --record-script gpu_tree/rec/train_gpt.py --data-dir data/real8192 \
           --steps 40 --log-every 5 --logs "$R/sbs" --out "$R/side_by_side.json" ;;
    run) stage run python3 -m golf run --params params/record.yaml --seeds 42 --study gpu-run --set "${data[@]}" "${short[@]}"
         keep gpu-run ;;
    study) stage study python3 -m golf study --study gpu-study --seeds 42 --arms record=params/record.yaml \
             "clip10=params/record.yaml matrix_clip_sigmas=10" --modes ttt plain --set "${data[@]}" "${short[@]}" max_val_tokens=131072 ${STUDY_SET:-}
           keep gpu-study ;;
    scoring) stage scoring_fast python3 bench/eval_full.py --skip-old --sliding-windows 65536 --ttt-chunks 8 \
               --batch-seqs 256 --set fused_mlp=true fused_qkv=true fused_ce=true --json "$R/eval_full_fast.json"
             pack
             stage scoring_default python3 bench/eval_full.py --skip-old --sliding-windows 65536 --ttt-chunks 8 \
               --json "$R/eval_full_default.json" ;;
  esac
  pack
done
