"""Does golf's compiled training step build with these switches, and how fast is it? One process per call.

    python bench/compile_check.py --set smear_gate=true [--looping] [--steps 3]

Record config (or --params), the compiled model as golf.train compiles it, one micro-batch of
tokens drawn on the device per step (forward + backward, no optimizer). Prints one line: the
overrides, "ok" with the first step's seconds (the compile) and ms per later step, or "FAILED"
with the exception's last line. Exit status 0 either way, so a shell loop can try many variants.
"""
from __future__ import annotations

import argparse
import time
import traceback

import torch

from golf.config import load_config
from golf.model import build_model
from golf.runtime import pick_device
from golf.train import micro_batch_seqs
from golf.compile_policy import set_fast_matmul


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/record.yaml")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--looping", action="store_true", help="the looped phase's graph instead of the plain one")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(args.params, args.set)
    device = pick_device(cfg.device)
    set_fast_matmul(device)
    label = " ".join(args.set) or "(record)"
    try:
        model = build_model(cfg, device)
        model.set_looping(args.looping)
        fwd = torch.compile(model, dynamic=False, fullgraph=True)
        seqs = micro_batch_seqs(cfg, 1)
        ids = torch.randint(0, cfg.vocab_size, (seqs, cfg.train_seq_len + 1), device=device)
        ids[:, ::300] = 1  # a BOS every 300 tokens: documents for the document mask
        x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            fwd(x, y).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        later = 1000 * sum(times[1:]) / max(len(times) - 1, 1)
        print(f"ok      {label}: first step {times[0]:.1f} s, then {later:.1f} ms per micro-batch", flush=True)
    except Exception as exc:  # report and go on: the point is to learn which variants build
        last = traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[0]
        print(f"FAILED  {label}: {last[:200]}", flush=True)


if __name__ == "__main__":
    main()
