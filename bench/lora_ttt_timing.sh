#!/usr/bin/env bash
# LoRA TTT's adapted forward eager against `ttt_lora_compile`, on one trained and quantized run, side by
# side on GPUs 0 and 1, each on its own copy of the run (the result file is per mode) and cut at SECONDS:
#
#   bash bench/lora_ttt_timing.sh RUN_DIR OUT_DIR [SECONDS=480] [MAX_VAL_TOKENS=262144]
#
# Writes OUT_DIR/lora_{eager,compiled}.log (and .json where the evaluation finished). In each log, "ready
# in" to "attention backend" is the model's build, the bar's chunk/s the speed once running. On the device
# machines, after a study, e.g. RUN_DIR=outputs/ablr-no-quant/seed1337 (a record-size frontier artifact).
set -uo pipefail
run=${1:?usage: lora_ttt_timing.sh RUN_DIR OUT_DIR [SECONDS] [MAX_VAL_TOKENS]}
out=${2:?OUT_DIR missing}
seconds=${3:-480}
tokens=${4:-262144}
[[ -f $run/final_model.int6.ptz ]] || { echo "lora_ttt_timing.sh: no artifact in '$run' (quantize it first)" >&2; exit 2; }
mkdir -p "$out"
for variant in eager compiled; do
  copy=$(mktemp -d)/run
  cp -r "$run" "$copy" && rm -f "$copy"/eval_lora_ttt*.json
  sets=(max_val_tokens="$tokens")
  [[ $variant == compiled ]] && sets+=(ttt_lora_compile=true)
  gpu=$([[ $variant == eager ]] && echo 0 || echo 1)
  (
    CUDA_VISIBLE_DEVICES=$gpu timeout "$seconds" python3 -m golf evaluate --run-dir "$copy" --mode lora_ttt \
      --set "${sets[@]}" >"$out/lora_$variant.log" 2>&1
    echo "rc $? ($variant, GPU $gpu, cut at $seconds s)" >>"$out/lora_$variant.log"
    [[ -f $copy/eval_lora_ttt.json ]] && cp "$copy/eval_lora_ttt.json" "$out/lora_$variant.json"
  ) &
done
wait
for variant in eager compiled; do
  echo "== $variant"
  tr '\r' '\n' <"$out/lora_$variant.log" | grep -E "ready in|attention backend" | cut -c1-120
  tr '\r' '\n' <"$out/lora_$variant.log" | grep -E "chunk/s|s/chunk|\(artifact\): val_loss|^rc " | tail -3
done
