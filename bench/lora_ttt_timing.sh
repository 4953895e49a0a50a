#!/usr/bin/env bash
# LoRA TTT's adapted forward eager against `ttt_lora_compile`, on one trained and quantized run, side by
# side on GPUs 0 and 1, each on its own copy of the run (the result file is per mode) and cut at SECONDS:
#
#   bash bench/lora_ttt_timing.sh RUN_DIR OUT_DIR [SECONDS=480] [MAX_VAL_TOKENS=262144]
#
# LORA_VARIANTS (default "eager compiled") picks which run, LORA_GPUS (default "0 1") their GPUs, in order:
# LORA_VARIANTS=compiled LORA_GPUS=3 times the compiled one alone on GPU 3.
# Writes OUT_DIR/lora_{eager,compiled}.log (and .json where the evaluation finished). In each log, "ready
# in" to "attention backend" is the model's build, the bar's chunk/s the speed once running. On the device
# machines, after a study, e.g. RUN_DIR=outputs/ablr-no-quant/seed1337 (a record-size frontier artifact).
set -uo pipefail
run=${1:?usage: lora_ttt_timing.sh RUN_DIR OUT_DIR [SECONDS] [MAX_VAL_TOKENS]}
out=${2:?OUT_DIR missing}
seconds=${3:-480}
tokens=${4:-262144}
[[ -f $run/final_model.int6.ptz ]] || { echo "lora_ttt_timing.sh: no artifact in '$run' (quantize it first)" >&2; exit 2; }
read -ra variants <<<"${LORA_VARIANTS:-eager compiled}"
read -ra gpus <<<"${LORA_GPUS:-0 1}"
(( ${#gpus[@]} >= ${#variants[@]} )) || { echo "lora_ttt_timing.sh: one GPU per variant: LORA_GPUS='${gpus[*]}'" >&2; exit 2; }
for variant in "${variants[@]}"; do
  [[ $variant == eager || $variant == compiled ]] || { echo "lora_ttt_timing.sh: a variant is eager or compiled, got '$variant'" >&2; exit 2; }
done
mkdir -p "$out"
for i in "${!variants[@]}"; do
  variant=${variants[$i]} gpu=${gpus[$i]}
  copy=$(mktemp -d)/run
  cp -r "$run" "$copy" && rm -f "$copy"/eval_lora_ttt*.json
  sets=(max_val_tokens="$tokens")
  [[ $variant == compiled ]] && sets+=(ttt_lora_compile=true)
  (
    CUDA_VISIBLE_DEVICES=$gpu timeout "$seconds" python3 -m golf evaluate --run-dir "$copy" --mode lora_ttt \
      --set "${sets[@]}" >"$out/lora_$variant.log" 2>&1
    echo "rc $? ($variant, GPU $gpu, cut at $seconds s)" >>"$out/lora_$variant.log"
    [[ -f $copy/eval_lora_ttt.json ]] && cp "$copy/eval_lora_ttt.json" "$out/lora_$variant.json"
  ) &
done
wait
for variant in "${variants[@]}"; do
  echo "== $variant"
  tr '\r' '\n' <"$out/lora_$variant.log" | grep -E "ready in|attention backend" | cut -c1-120
  tr '\r' '\n' <"$out/lora_$variant.log" | grep -E "chunk/s|s/chunk|\(artifact\): val_loss|^rc " | tail -3
done
