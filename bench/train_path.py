"""Training speed on the path users run: the real loader on real shards against tokens made on the GPU (issue 13).

    python bench/train_path.py --params params/record.yaml --data-dir DIR --steps 20 --out bench/results/x.json

golf's own pieces (``Trainer``, the compiled forward, the EMA update, the rank-0 training loader
of ``make_train_loader``) on one device, both phases (plain, then looping). Per phase, the same
steps are fed from each source in turn, in this one process:

- ``real loader, old``: golf before issue 13 — all micro-batches gathered and copied from pageable
  memory before the first forward, the loss read with ``.item()`` every step;
- ``real loader, inline``: ``loader_prefetch: false`` — micro-batches made on demand, one at a
  time, no per-step sync;
- ``real loader, prefetch``: ``loader_prefetch: true`` — made ahead in a thread, pinned, copied on
  a side stream (golf/prefetch.py);
- ``on-device tokens``: uniform ids drawn on the device, no host work at all (the ceiling).

"host ms/step" is a source's ms/step minus the on-device one. Warm-up: the first step of each
phase compiles its graph (``first_step_s``); rerun to see the compile cache at work
(``compile_cache_dir``). CPU smoke run: ``--params params/demo.yaml --steps 3 --set
data_dir=/tmp/demo_data tokenizer_path=/tmp/demo_data/tokenizer.model``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from golf.config import load_config
from golf.model import build_model
from golf.prefetch import PrefetchLoader
from golf.runtime import DistInfo, pick_device
from golf.train import EMA, Trainer, compiled_forward, grad_accum_steps, make_train_loader, micro_batch_seqs
from golf.compile_policy import prepare_compile, set_fast_matmul, use_compile

SOURCES = ("real loader, old", "real loader, inline", "real loader, prefetch", "on-device tokens")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


class Runner:
    """One training step as golf.train runs it (schedule, step, EMA), fed from a chosen source."""

    def __init__(self, cfg, device: torch.device):
        self.cfg, self.device = cfg, device
        self.dist = DistInfo()
        self.model = build_model(cfg, device)
        self.trainer = Trainer(self.model, cfg, self.dist)
        self.forward = compiled_forward(self.model, self.trainer, cfg, device)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.accum, self.seqs = grad_accum_steps(cfg, 1), micro_batch_seqs(cfg, 1)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.n = 0

    def _device_batch(self):
        ids = torch.randint(0, self.cfg.vocab_size, (self.seqs, self.cfg.train_seq_len + 1), device=self.device,
                            generator=self.gen)
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()  # contiguous, like the loader's

    def open(self, source: str):
        """What ``step`` reads from: a loader, a PrefetchLoader, or None for on-device tokens."""
        if source == "on-device tokens":
            return None
        loader = make_train_loader(self.cfg, self.dist)
        if source == "real loader, old":
            return loader
        return PrefetchLoader(loader, self.device, depth=4 if source == "real loader, prefetch" else 0)

    def step(self, source: str, feed) -> torch.Tensor:
        """One step; returns its loss, a 0-d device tensor (reading it syncs)."""
        self.trainer.set_schedule(1.0, self.n)
        if source == "real loader, old":
            batches = [feed.next_batch(self.device) for _ in range(self.accum)]  # all before the first forward
            loss = self.trainer.step(batches, self.forward)
            loss.item()  # the per-step sync golf had
        elif source == "on-device tokens":
            loss = self.trainer.step((self._device_batch() for _ in range(self.accum)), self.forward, self.accum)
        else:
            loss = self.trainer.step((feed.next_batch() for _ in range(self.accum)), self.forward, self.accum)
        self.ema.update(self.model)
        self.n += 1
        return loss


def measure(runner: Runner, source: str, steps: int, warm: int) -> dict:
    feed = runner.open(source)
    try:
        for _ in range(warm):  # fills the prefetch queue and the allocator's caches
            runner.step(source, feed)
        _sync(runner.device)
        if runner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runner.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.step(source, feed)
        _sync(runner.device)
        dt = (time.perf_counter() - t0) / steps
    finally:
        if isinstance(feed, PrefetchLoader):
            feed.close()
    return {"ms_per_step": dt * 1000, "peak_mem_mib": _peak_mib(runner.device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/record.yaml")
    ap.add_argument("--data-dir", help="folder of fineweb_train_*.bin shards (default: the params' data_dir)")
    ap.add_argument("--set", nargs="*", default=[], help="override params keys, KEY=VALUE")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per phase and source")
    ap.add_argument("--warm", type=int, default=2, help="untimed steps before each timed block")
    ap.add_argument("--rounds", type=int, default=1, help="measure every source this many times; report the median")
    ap.add_argument("--sources", nargs="*", choices=SOURCES, default=list(SOURCES),
                    help="feed only these sources (default: all four; on-device tokens is the baseline)")
    ap.add_argument("--out", help="write the results as JSON to this file")
    args = ap.parse_args()

    overrides = list(args.set) + ([f"data_dir={args.data_dir}"] if args.data_dir else [])
    cfg = load_config(args.params, overrides)
    device = pick_device(cfg.device)
    set_fast_matmul(device)
    compiled = use_compile(cfg, device)
    cache_dir = prepare_compile(cfg) if compiled else None
    cache_warm = bool(cache_dir and any(cache_dir.iterdir()))

    t_setup = time.perf_counter()
    runner = Runner(cfg, device)
    setup_s = time.perf_counter() - t_setup

    first_step_s, rows = {}, []
    for phase, looping in (("plain", False), ("looping", True)):
        if looping and cfg.num_loops == 0:
            continue
        runner.model.set_looping(looping)
        _sync(device)
        t0 = time.perf_counter()
        runner.step("on-device tokens", None)  # compiles this phase's graph
        _sync(device)
        first_step_s[phase] = time.perf_counter() - t0
        print(f"{phase}: first step (compile) {first_step_s[phase]:.1f} s", flush=True)
        sources = [s for s in SOURCES if s in args.sources or s == "on-device tokens"]
        got: dict[str, list[dict]] = {s: [] for s in sources}
        for _ in range(args.rounds):
            for source in sources:
                got[source].append(measure(runner, source, args.steps, args.warm))
        base_ms = statistics.median(r["ms_per_step"] for r in got["on-device tokens"])
        for source in sources:
            ms = statistics.median(r["ms_per_step"] for r in got[source])
            rows.append({"phase": phase, "source": source, "tokens_per_s": cfg.train_batch_tokens / (ms / 1000),
                         "ms_per_step": ms, "host_ms_per_step": ms - base_ms,
                         "peak_mem_mib": max(r["peak_mem_mib"] for r in got[source]),
                         "ms_per_step_rounds": [r["ms_per_step"] for r in got[source]]})
            # as it goes, so a run cut off by a time limit still leaves its finished rows
            print(f"{phase}: {source}: {rows[-1]['tokens_per_s']:,.0f} tok/s, {ms:.1f} ms/step", flush=True)

    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "params": args.params,
            "overrides": overrides, "data_dir": cfg.data_dir, "attention_backend": runner.model.attention_backend,
            "compile": compiled, "compile_cache_dir": str(cache_dir) if cache_dir else None,
            "compile_cache_warm_at_start": cache_warm, "grad_accum": runner.accum,
            "micro_batch_seqs": runner.seqs, "seq_len": cfg.train_seq_len, "steps": args.steps,
            "warm": args.warm, "rounds": args.rounds}
    warmup = {"setup_s": setup_s, "first_step_s": first_step_s,
              "total_s": setup_s + sum(first_step_s.values())}
    print(json.dumps(meta))
    print(f"warm-up: set-up {setup_s:.1f} s, first step " +
          ", ".join(f"{p} {s:.1f} s" for p, s in first_step_s.items()) +
          f" (compile cache {'warm' if cache_warm else 'cold' if compiled else 'unused'})")
    print(f"{'phase':<8} {'source':<23} {'tok/s':>11} {'ms/step':>9} {'host ms/step':>13} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['phase']:<8} {r['source']:<23} {r['tokens_per_s']:>11,.0f} {r['ms_per_step']:>9.1f} "
              f"{r['host_ms_per_step']:>13.1f} {r['peak_mem_mib']:>9,.0f}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "warmup": warmup, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
