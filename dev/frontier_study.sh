#!/usr/bin/env bash
# The frontier-vs-record study on one lent GPU (docs: bench/RESULTS.md, "Frontier vs record, faithful").
# params/frontier.yaml (#1855 as logged) against params/record.yaml (#1533), 3 seeds each, 80 steps of
# half the record's batch on data/real8192s (golf data prepare --corpus shakespeare,python-doc,linux-doc,gcide
# --tokenizer data/real8192/tokenizer.model --val-docs 6500 --shard-tokens 10000000, the first train
# shard kept: documents shuffled, val a random sample), ema_decay 0.97 for both (the records' EMA would
# keep most of the initial weights after 80 steps), 16 GPTQ calibration batches, val capped at 131,072
# tokens; scored quantized by score-first TTT and plain. Two runs at a time share the GPU (--gpus 0 0).
# golf study runs golf train / quantize / evaluate directly (--without-notebooks); the study is
# outputs/fvr, each arm outputs/fvr/ARM, the comparison outputs/fvr/compare.
#
#   bash dev/frontier_study.sh probe                 # 3 packed frontier steps: does the packed graph build?
#   bash dev/device_background.sh start 560 "bash dev/frontier_study.sh run --archive /tmp/bg/fvr.tgz" /tmp/bg/fvr.tgz
set -euo pipefail
data=(data_dir=data/real8192s tokenizer_path=data/real8192s/tokenizer.model)
case "${1:?usage: bash dev/frontier_study.sh probe|run [golf study args]}" in
  probe)
    rm -rf /tmp/fvr-probe
    python3 -m golf train --params params/frontier.yaml --run-dir /tmp/fvr-probe --set "${data[@]}" iterations=3 \
      max_wallclock_seconds=0 warmup_steps=0 val_loss_every=0 train_log_every=1 max_val_tokens=262144 ;;
  run)
    shift
    python3 -m golf study --study fvr --without-notebooks --seeds 42 314 1337 --gpus 0 0 --modes ttt plain \
      --set "${data[@]}" iterations=80 train_batch_tokens=393216 max_wallclock_seconds=0 warmup_steps=1 \
      val_loss_every=0 train_log_every=10 ema_decay=0.97 gptq_calibration_batches=16 max_val_tokens=131072 \
      --lead-arms frontier record --arms "frontier=params/frontier.yaml pack_documents=${PACK:-true}" \
      "record=params/record.yaml" "$@" ;;
  *) echo "frontier_study.sh: probe or run" >&2; exit 2 ;;
esac
