#!/usr/bin/env bash
# Leave-one-out ablation of the frontier switches at demo size, on CPU (issue 16): each arm is
# params/frontier_demo.yaml with one switch group set back to the record's; 'record' is
# params/demo.yaml (the record's stack on the same demo model). bench/study.py runs golf train,
# quantize and evaluate --mode ttt per arm and seed, then golf compare (frontier the baseline).
# Reruns resume.    bash bench/ablation_demo.sh "1 2"
set -euo pipefail
seeds=${1:-"1"}
F=params/frontier_demo.yaml
python bench/study.py --gpus cpu --prefix ablm --seeds $seeds --arms \
  "frontier=$F" \
  "record=params/demo.yaml" \
  "no-varlen=$F attention_mask=causal" \
  "no-lanes-mix=$F parallel_mode=lanes" \
  "no-smear=$F smear_gate=false" \
  "no-attn-gate=$F attn_out_gate=false" \
  "no-optim=$F muon_ns_coefficients=record min_lr=0 matrix_lr=0.022 muon_momentum=0.99 muon_wd_taper_at=0 warmdown_frac=0.667 beta2=0.95" \
  "no-quant=$F attn_clip_sigmas=0 mlp_clip_sigmas=0 embed_bits=8 embed_clip_sigmas=20 gate_int8=false" \
  "no-lqer=$F lqer_rank=0"
