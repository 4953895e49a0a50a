#!/usr/bin/env bash
# Leave-one-out ablation of the frontier switches at demo size, on CPU, through golf run + golf compare
# (issue 16). Each arm is params/frontier_demo.yaml with one switch group set back to the record's;
# 'record' is params/demo.yaml (the record's stack on the same demo model). Reruns resume.
#   bash bench/ablation_demo.sh "1 2" "1"     # seeds of frontier and record, seeds of each ablation
set -euo pipefail
main_seeds=${1:-"1 2"}
abl_seeds=${2:-"1"}
golf() { python -m golf "$@"; }
golf run --params params/frontier_demo.yaml --seeds $main_seeds --study abl-frontier
golf run --params params/demo.yaml --seeds $main_seeds --study abl-record
declare -A arms=(
  [no-varlen]="attention_mask=causal"
  [no-smear]="smear_gate=false"
  [no-attn-gate]="attn_out_gate=false"
  [no-optim]="muon_ns_coefficients=record min_lr=0 matrix_lr=0.022 muon_momentum=0.99 muon_wd_taper_at=0 warmdown_frac=0.667 beta2=0.95"
  [no-quant]="attn_clip_sigmas=0 mlp_clip_sigmas=0 embed_bits=8 embed_clip_sigmas=20"
  [no-lqer]="lqer_rank=0"
)
order=(no-varlen no-smear no-attn-gate no-optim no-quant no-lqer)
for arm in "${order[@]}"; do
  golf run --params params/frontier_demo.yaml --seeds $abl_seeds --study "abl-$arm" --set ${arms[$arm]}
done
golf compare outputs/abl-frontier outputs/abl-record $(for a in "${order[@]}"; do echo outputs/abl-$a; done) \
  --names frontier record "${order[@]}" --stage ttt --out outputs/abl-compare
