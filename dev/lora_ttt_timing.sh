#!/usr/bin/env bash
# LoRA TTT's adapted forward eager against `ttt_lora_compile`, on one trained and quantized run, side by
# side on GPUs 0 and 1, each on its own copy of the run (the result file is per mode) and cut at SECONDS:
#
#   bash dev/lora_ttt_timing.sh RUN_DIR OUT_DIR [SECONDS=480] [MAX_VAL_TOKENS=262144]
#
# LORA_VARIANTS (default "eager compiled") picks which run, LORA_GPUS (default "0 1") their GPUs, in order:
# LORA_VARIANTS=compiled LORA_GPUS=3 times the compiled one alone on GPU 3.
# Writes OUT_DIR/lora_{eager,compiled}.log (and .json where the evaluation finished). In each log, "ready
# in" to "attention backend" is the model's build, the bar's chunk/s the speed once running. Exit status
# 0 when every variant finished or was cut at SECONDS, else 1. On the device machines, after a study, e.g.
# RUN_DIR=outputs/ablr-no-quant/seed1337 (a record-size frontier artifact).
set -uo pipefail
die() { echo "lora_ttt_timing.sh: $*" >&2; exit 2; }
run=${1:?usage: lora_ttt_timing.sh RUN_DIR OUT_DIR [SECONDS] [MAX_VAL_TOKENS]}
out=${2:?OUT_DIR missing}
seconds=${3:-480}
tokens=${4:-262144}
[[ -f $run/final_model.int6.ptz ]] || die "no artifact in '$run' (quantize it first)"
read -ra variants <<<"${LORA_VARIANTS:-eager compiled}"
read -ra gpus <<<"${LORA_GPUS:-0 1}"
(( ${#variants[@]} > 0 )) || die "LORA_VARIANTS is empty"
for variant in "${variants[@]}"; do
  [[ $variant == eager || $variant == compiled ]] || die "a variant is eager or compiled, got '$variant'"
done
(( $(printf '%s\n' "${variants[@]}" | sort -u | wc -l) == ${#variants[@]} )) || die "a variant given twice: '${variants[*]}'"
(( ${#gpus[@]} >= ${#variants[@]} )) || die "one GPU per variant: LORA_GPUS='${gpus[*]}'"
for gpu in "${gpus[@]}"; do [[ $gpu =~ ^[0-9]+$ ]] || die "a GPU is an index, got '$gpu'"; done
(( $(printf '%s\n' "${gpus[@]:0:${#variants[@]}}" | sort -u | wc -l) == ${#variants[@]} )) \
  || die "each variant on its own GPU: LORA_GPUS='${gpus[*]}'"
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$scratch"' EXIT INT TERM
for i in "${!variants[@]}"; do
  variant=${variants[$i]} gpu=${gpus[$i]}
  copy=$scratch/$variant
  mkdir -p "$copy"
  # what evaluate reads: the config, the quantization record and the artifact (not the weights)
  cp "$run"/config.yaml "$run"/final_model.int6.ptz "$copy"/ || die "could not copy '$run'"
  for extra in quantize_config.yaml quant_budget.json environment.json run.json; do
    [[ -f $run/$extra ]] && cp "$run/$extra" "$copy"/
  done
  sets=(max_val_tokens="$tokens")
  [[ $variant == compiled ]] && sets+=(ttt_lora_compile=true)
  (
    CUDA_VISIBLE_DEVICES=$gpu timeout "$seconds" python3 -m golf evaluate --run-dir "$copy" --mode lora_ttt \
      --set "${sets[@]}" >"$out/lora_$variant.log" 2>&1
    rc=$?
    printf '\nrc %s (%s, GPU %s, cut at %s s)\n' "$rc" "$variant" "$gpu" "$seconds" >>"$out/lora_$variant.log"
    [[ -f $copy/eval_lora_ttt.json ]] && cp "$copy/eval_lora_ttt.json" "$out/lora_$variant.json"
    echo "$rc" >"$scratch/$variant.rc"
  ) &
done
wait
status=0
for variant in "${variants[@]}"; do
  echo "== $variant"
  tr '\r' '\n' <"$out/lora_$variant.log" | grep -E "ready in|attention backend" | cut -c1-120
  tr '\r' '\n' <"$out/lora_$variant.log" | grep -E "chunk/s|s/chunk|\(artifact\): val_loss" | tail -2
  grep -E "^rc " "$out/lora_$variant.log"
  rc=$(cat "$scratch/$variant.rc" 2>/dev/null || echo 1)
  [[ $rc == 0 || $rc == 124 ]] || status=1
done
exit $status
