"""Quantize and evaluation timings at the record config on one GPU (spec §5, §6, §7.4).

    python bench/quant_eval.py --train-steps 20 --slice-tokens 1048576 --ttt-chunks 8

Trains the record model a little on synthetic tokens, runs the full quantize step (64 calibration
batches, GPTQ, Brotli) and reports its wall time and artifact bytes; then times sliding-window and
score-first TTT evaluation on a slice of the val stream and extrapolates to the record's
T = 40,540,160 tokens (633,409 windows, 1238 chunks), saying so.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from golf.bpb import ByteLUTs
from golf.config import load_config
from golf.evaluate import eval_sliding, eval_ttt
from golf.scoring import count_windows, ttt_chunks
from golf.model import build_model
from golf.quant import load_artifact, quantize_model
from golf.runtime import DistInfo
from golf.submission import code_bytes
from golf.train import Trainer, grad_accum_steps, micro_batch_seqs

RECORD_T = 40_540_160


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/record.yaml")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--slice-tokens", type=int, default=1 << 20, help="val tokens for the sliding timing")
    ap.add_argument("--ttt-chunks", type=int, default=8, help="TTT chunks to time")
    ap.add_argument("--json")
    args = ap.parse_args()

    cfg = load_config(args.params, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")
    model = build_model(cfg, device)
    model.set_looping(True)
    trainer = Trainer(model, cfg, DistInfo())
    accum, seqs = grad_accum_steps(cfg, 1), micro_batch_seqs(cfg, 1)
    gen = torch.Generator(device=device).manual_seed(0)

    def batch():
        ids = torch.randint(0, cfg.vocab_size, (seqs, cfg.train_seq_len + 1), device=device, generator=gen)
        return ids[:, :-1], ids[:, 1:]

    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        trainer.set_schedule(1.0, 0)
        trainer.step([batch() for _ in range(accum)])
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "train_steps": args.train_steps, "train_s": time.perf_counter() - t0}

    calib = (batch()[0] for _ in iter(int, 1))
    t0 = time.perf_counter()
    blob, report = quantize_model(model, cfg, calib, device, code_bytes(cfg))
    out["quantize_wall_s"] = time.perf_counter() - t0
    out.update({k: v for k, v in report.items() if k != "tensors"})
    print(json.dumps(out, indent=1), flush=True)

    qmodel = build_model(cfg, device)
    t0 = time.perf_counter()
    load_artifact(blob, qmodel)
    out["load_artifact_s"] = time.perf_counter() - t0
    qmodel.set_looping(True)
    qmodel.eval()

    V = cfg.vocab_size
    luts = ByteLUTs(torch.ones(V, dtype=torch.int16), torch.zeros(V, dtype=torch.bool),
                    torch.zeros(V, dtype=torch.bool)).to(device)
    n_tok = args.slice_tokens
    val = torch.randint(0, V, (n_tok + 1,), generator=torch.Generator().manual_seed(1))
    fwd = torch.compile(qmodel.forward_logits, dynamic=False, fullgraph=True) if device.type == "cuda" else None
    warm = val[: 64 * cfg.eval_stride + cfg.eval_seq_len + 1]
    eval_sliding(qmodel, warm, luts, cfg, forward_logits=fwd, progress=False)  # compile outside the timing
    res = eval_sliding(qmodel, val, luts, cfg, forward_logits=fwd, progress=False)
    per_window = res["seconds"] / count_windows(n_tok, cfg.eval_seq_len, cfg.eval_stride)
    out["sliding_slice"] = res
    out["sliding_extrapolated_s"] = per_window * count_windows(RECORD_T, cfg.eval_seq_len, cfg.eval_stride)
    print(json.dumps({k: out[k] for k in ("sliding_slice", "sliding_extrapolated_s")}, indent=1), flush=True)

    ttt_tokens = args.ttt_chunks * cfg.ttt_chunk_tokens
    tmodel = copy.deepcopy(qmodel)
    tmodel.train()
    res = eval_ttt(tmodel, val[: ttt_tokens + 1], luts, cfg, forward_logits=fwd, progress=False)
    n_chunks = ttt_chunks(ttt_tokens, cfg.ttt_chunk_tokens)
    out["ttt_slice"] = res
    out["ttt_s_per_chunk"] = res["seconds"] / n_chunks
    out["ttt_extrapolated_s"] = out["ttt_s_per_chunk"] * ttt_chunks(RECORD_T, cfg.ttt_chunk_tokens)
    out["note"] = (f"sliding timed on {n_tok:,} tokens and TTT on {args.ttt_chunks} chunks of synthetic tokens; "
                   f"both extrapolated linearly to T = {RECORD_T:,} on this one GPU")
    print(json.dumps({k: out[k] for k in ("ttt_slice", "ttt_s_per_chunk", "ttt_extrapolated_s", "note")}, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
