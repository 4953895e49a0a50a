#!/usr/bin/env bash
# Leave-one-out ablation of the frontier switches (issue 16): each arm is the frontier params with one
# switch group set back to the record's; 'record' is the record's stack on the same model.
# golf study runs each arm and seed (resuming what finished), then golf compare (frontier the baseline);
# the study is outputs/PREFIX, each arm outputs/PREFIX/ARM.
#
#   bash bench/ablation.sh demo "1 2"                     # demo model on CPU, study ablm
#   bash bench/ablation.sh record "42 314 1337" --gpus 0 1 [--set KEY=VALUE ...]   # record size, study ablr
#
# On the device machines (a record-size run took 12-14 minutes with four cold compiles at once on four
# H100s, 6.5 minutes with the cache warm: more than one call), run it in a process session of its own
# that outlives the call, dev/device_background.sh, on one machine kept warm between calls; the
# archive is rewritten after every finished job, so what finished before the machine goes back is kept:
#   bash dev/device_background.sh start 560 "bash bench/ablation.sh record '42 314 1337' --gpus 0 1 2 3 \
#     --restore bench/results/ablr.tgz --stop-taking-after 1150 --archive /tmp/bg/ablr.tgz" /tmp/bg/ablr.tgz
# then, each call made as soon as the last returns: bash dev/device_background.sh watch 560 /tmp/bg/ablr.tgz
# and keep the ablr.tgz that comes back as bench/results/ablr.tgz (finished runs only, no weights).
#
# At record size every arm trains the same short budget on data/real8192 (120 steps of the record's
# batch, one warm-up step, no mid-run validation), with ema_decay 0.97 for all arms: the record's
# 0.997 would leave 70% of the initial weights in a 120-step run (0.97^120 = 2.6%). Later --set
# values win over these.
set -euo pipefail
size=${1:?usage: bash bench/ablation.sh demo|record "SEEDS" [golf study args]}
seeds=${2:-"1"}
shift $(( $# < 2 ? $# : 2 ))
case "$size" in
  demo) F=params/frontier_demo.yaml R=params/demo.yaml prefix=ablm common=(--gpus cpu) ;;
  record) F=params/frontier.yaml R=params/record.yaml prefix=ablr
          common=(--without-notebooks --set data_dir=data/real8192 tokenizer_path=data/real8192/tokenizer.model iterations=120
                  max_wallclock_seconds=0 warmup_steps=1 val_loss_every=0 train_log_every=10 ema_decay=0.97) ;;
  *) echo "ablation.sh: size must be demo or record, got '$size'" >&2; exit 2 ;;
esac
python3 -m golf study --study "$prefix" --seeds $seeds "${common[@]}" --lead-arms frontier record "$@" --arms \
  "frontier=$F" \
  "record=$R" \
  "no-varlen=$F attention_mask=causal" \
  "no-lanes-mix=$F parallel_mode=lanes" \
  "no-smear=$F smear_gate=false" \
  "no-attn-gate=$F attn_out_gate=false" \
  "no-optim=$F muon_ns_coefficients=record min_lr=0 matrix_lr=0.022 muon_momentum=0.99 muon_wd_taper_at=0 warmdown_frac=0.667 beta2=0.95" \
  "no-quant=$F attn_clip_sigmas=0 mlp_clip_sigmas=0 embed_bits=8 embed_clip_sigmas=20 gate_int8=false" \
  "no-lqer=$F lqer_rank=0"
