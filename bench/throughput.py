"""Training throughput at the record config on one GPU, both phases (spec §7.3).

    python bench/throughput.py --params params/record.yaml --steps 10 --warmup 3 [--set k=v ...]

Synthetic uniform tokens, the real step of golf.train.Trainer (grad_accum 8 on one GPU, micro-batch
48 x 2048), compiled as training compiles. Prints tokens/s per GPU, ms/step and peak memory per phase.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from golf.config import load_config
from golf.model import build_model
from golf.runtime import DistInfo
from golf.train import Trainer, compiled_forward, grad_accum_steps, micro_batch_seqs
from golf.compile_policy import set_fast_matmul


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/record.yaml")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per phase")
    ap.add_argument("--warmup", type=int, default=3, help="untimed (compile) steps per phase")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()

    cfg = load_config(args.params, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_fast_matmul(device)
    model = build_model(cfg, device)
    trainer = Trainer(model, cfg, DistInfo())
    forward = compiled_forward(model, trainer, cfg, device)
    compiled = forward is not model
    accum, seqs = grad_accum_steps(cfg, 1), micro_batch_seqs(cfg, 1)
    gen = torch.Generator(device=device).manual_seed(0)

    def batches():
        for _ in range(accum):
            ids = torch.randint(0, cfg.vocab_size, (seqs, cfg.train_seq_len + 1), device=device, generator=gen)
            yield ids[:, :-1], ids[:, 1:]

    rows = []
    for looping in (False, True):
        model.set_looping(looping)
        t_compile = time.perf_counter()
        for _ in range(args.warmup):
            trainer.set_schedule(1.0, 0)
            trainer.step(batches(), forward, accum)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        warm_s = t0 - t_compile
        for _ in range(args.steps):
            trainer.step(batches(), forward, accum)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        rows.append({
            "phase": "looped (17 virtual layers)" if looping else "plain (11 layers)",
            "tokens_per_s_per_gpu": cfg.train_batch_tokens / dt,
            "ms_per_step": dt * 1000,
            "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
            "warmup_s": warm_s,
        })
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "attention_backend": model.attention_backend, "compile": compiled, "grad_accum": accum,
            "micro_batch_seqs": seqs, "steps": args.steps}
    print(json.dumps(meta))
    print(f"{'phase':<28} {'tok/s/GPU':>12} {'ms/step':>9} {'peak MiB':>10} {'warmup s':>9}")
    for r in rows:
        print(f"{r['phase']:<28} {r['tokens_per_s_per_gpu']:>12,.0f} {r['ms_per_step']:>9.1f} "
              f"{r['peak_mem_mib']:>10,.0f} {r['warmup_s']:>9.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
