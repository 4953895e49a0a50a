"""Where a training step and a sliding-window batch spend their GPU time: kernels by kind, per step.

    python bench/profile_step.py --steps 2 [--set fused_mlp=true ...] [--scorer]
    python bench/profile_step.py --params params/demo.yaml --steps 1 --scorer   # CPU smoke check
    python bench/profile_step.py --phases looping --inductor combo_kernels=True [--native-gqa]   # variants
    python bench/profile_step.py --traces DIR ...; python bench/profile_step.py --explain DIR/x.trace.json.gz

Training: golf's step (``Trainer``, compiled forward, EMA) on tokens drawn on the device, each phase
warmed (compiled) first, then ``--steps`` steps under ``torch.profiler``. Scorer: ``compiled_nll``
on ``--scorer-batches`` batches of sliding windows. The trace's kernels are summed by kind (matmul,
attention, Triton-fused, optimizer, other); "busy" is the sum of kernel times over the wall time
(below 100%: the GPU waited for the host). The ``--top`` longest kernels are listed by name.
"""
from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_path import Runner  # noqa: E402  (golf's step as golf.train runs it)

from golf.config import load_config  # noqa: E402
from golf.runtime import pick_device  # noqa: E402
from golf.compile_policy import prepare_compile, set_fast_matmul, use_compile  # noqa: E402

KINDS = (
    ("attention", re.compile(r"flash|fmha|cudnn|attention|sdpa", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|sm90_|sm80_|cublas|matmul|wgmma|triton_tem", re.I)),
    ("optimizer", re.compile(r"foreach|multi_tensor|adam|lerp", re.I)),
    ("triton fused", re.compile(r"^triton_", re.I)),
)


def kind_of(name: str) -> str:
    return next((k for k, pat in KINDS if pat.search(name)), "other")


def kernel_events(trace_path: Path) -> list[dict]:
    return kernel_events_of(json.loads(trace_path.read_text())["traceEvents"])


def idle_gaps(events: list[dict], n: int, top: int) -> tuple[float, list[tuple[str, float, int]]]:
    """Where the GPU sat idle: the time between one kernel's end and the next one's start (any stream),
    per call, and the ``top`` kernel pairs (before -> after) that the idle time falls between."""
    spans = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events)
    total, by_pair, end, last = 0.0, defaultdict(lambda: [0.0, 0]), None, None
    for start, stop, name in spans:
        if end is not None and start > end:
            gap = (start - end) / 1000
            total += gap
            pair = f"{last[:50]} -> {name[:50]}"
            by_pair[pair][0] += gap / n
            by_pair[pair][1] += 1
        if end is None or stop > end:
            end, last = stop, name
    pairs = sorted(by_pair.items(), key=lambda kv: -kv[1][0])[:top]
    return total / n, [(k, v[0], v[1] // max(n, 1)) for k, v in pairs]


def profiled(fn, n: int, device: torch.device, label: str, top: int, keep_trace: Path | None = None) -> dict:
    """Run ``fn`` n times under the profiler; print the kernel table; return the summary. ``keep_trace``:
    also write the whole Chrome trace there, gzipped (CPU ops included: which op launched what)."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    sync()
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        wall_ms = (time.perf_counter() - t0) * 1000 / n
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = kernel_events(path)
        if keep_trace is not None:
            keep_trace.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as src, gzip.open(keep_trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
    ks = [(e["name"], e["dur"] / 1000) for e in events]
    idle_ms, idle_top = idle_gaps(events, n, top)
    by_kind, by_name = defaultdict(float), defaultdict(lambda: [0.0, 0])
    for name, ms in ks:
        by_kind[kind_of(name)] += ms / n
        by_name[name][0] += ms / n
        by_name[name][1] += 1
    busy = sum(by_kind.values())
    print(f"\n== {label}: {wall_ms:.1f} ms wall per call, kernels {busy:.1f} ms (busy {100 * busy / wall_ms:.0f}%), "
          f"{len(ks) // max(n, 1)} kernels per call")
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<13} {ms:9.1f} ms  {100 * ms / busy:5.1f}%")
    print(f"  top {top} kernels (ms per call, launches per call):")
    for name, (ms, cnt) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {ms:8.2f} ms {cnt // n:5d}x  {kind_of(name):<12} {name[:110]}")
    print(f"  GPU idle between kernels: {idle_ms:.1f} ms per call; largest shares (ms per call, gaps per call):")
    for pair, ms, cnt in idle_top:
        print(f"    {ms:8.2f} ms {cnt:5d}x  {pair}")
    return {"label": label, "wall_ms": wall_ms, "kernel_ms": busy, "by_kind": dict(by_kind),
            "idle_ms": idle_ms, "idle_top": idle_top,
            "top": [(k, v[0], v[1] // n) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]]}


def explain(trace_file: str, top: int) -> None:
    """Which CPU op launched the most-launched kernels of a kept trace (``--traces``), read offline:
    a kernel and its runtime launch share a correlation id; the launch sits inside the CPU ops that
    were open on its thread at that moment (the innermost one named, with its parent)."""
    with gzip.open(trace_file, "rt") as f:
        events = json.load(f)["traceEvents"]
    by_thread = defaultdict(lambda: ([], []))  # (pid, tid) -> (CPU ops, runtime launches)
    for e in events:
        if e.get("cat") == "cpu_op" and "dur" in e:
            by_thread[(e["pid"], e["tid"])][0].append(e)
        elif e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {}):
            by_thread[(e["pid"], e["tid"])][1].append(e)
    where_of = {}  # correlation id -> "outer op > inner op", by one sweep per thread (CPU ops nest)
    for ops, launches in by_thread.values():
        ops.sort(key=lambda op: (op["ts"], -op["dur"]))
        stack, i = [], 0
        for launch in sorted(launches, key=lambda e: e["ts"]):
            t = launch["ts"]
            while i < len(ops) and ops[i]["ts"] <= t:
                while stack and stack[-1]["ts"] + stack[-1]["dur"] < ops[i]["ts"]:
                    stack.pop()
                stack.append(ops[i])
                i += 1
            while stack and stack[-1]["ts"] + stack[-1]["dur"] < t:
                stack.pop()
            where_of[launch["args"]["correlation"]] = " > ".join(op["name"] for op in stack[-2:]) or "(no CPU op)"
    counts, sources = defaultdict(int), defaultdict(lambda: defaultdict(int))
    for k in kernel_events_of(events):
        counts[k["name"]] += 1
        where = where_of.get(k.get("args", {}).get("correlation"))
        if where is not None:
            sources[k["name"]][where] += 1
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n:6d}x  {name[:100]}")
        for where, m in sorted(sources[name].items(), key=lambda kv: -kv[1])[:3]:
            print(f"          {m:6d}x from {where[:140]}")


def kernel_events_of(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("cat") == "kernel" and "dur" in e]


def trace_path(folder: str | None, name: str) -> Path | None:
    return Path(folder) / f"{name}.trace.json.gz" if folder else None


def native_gqa_attention(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION], set_priority=True):
        y = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                             is_causal=True, enable_gqa=True)
    return y.transpose(1, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/record.yaml")
    ap.add_argument("--set", nargs="*", default=[], help="params overrides, KEY=VALUE")
    ap.add_argument("--steps", type=int, default=2, help="profiled training steps per phase (0: skip training)")
    ap.add_argument("--phases", nargs="+", choices=("plain", "looping"), default=["plain", "looping"])
    ap.add_argument("--warm", type=int, default=2, help="untimed steps per phase first (the first compiles)")
    ap.add_argument("--scorer", action="store_true", help="also profile the compiled sliding-window scorer")
    ap.add_argument("--scorer-batches", type=int, default=8)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                    help="torch._inductor.config settings to try, e.g. combo_kernels=True (Python literals)")
    ap.add_argument("--native-gqa", action="store_true",
                    help="train with cuDNN's native GQA too (enable_gqa; golf expands the KV heads to train and "
                         "already scores with native GQA)")
    ap.add_argument("--traces", help="also keep each profiled block's Chrome trace in this folder (gzipped)")
    ap.add_argument("--explain", metavar="TRACE", help="no run: which CPU ops launched the kernels of a kept trace")
    ap.add_argument("--out", help="write the summaries as JSON here")
    args = ap.parse_args()
    if args.explain:
        return explain(args.explain, args.top)

    cfg = load_config(args.params, args.set)
    device = pick_device(cfg.device)
    set_fast_matmul(device)
    if use_compile(cfg, device):
        prepare_compile(cfg)
    for item in args.inductor:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")  # e.g. triton.mix_order_reduction
        target = inductor_config
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, ast.literal_eval(value))
    print(json.dumps({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      "torch": torch.__version__, "cpus": os.cpu_count(), "overrides": args.set,
                      "inductor": args.inductor}))
    out = []
    runner = Runner(cfg, device)
    if args.native_gqa:
        runner.model._attn = native_gqa_attention
    for phase, looping in (("plain", False), ("looping", True)):
        if args.steps == 0 or phase not in args.phases or (looping and cfg.num_loops == 0):
            continue
        runner.model.set_looping(looping)
        t0 = time.perf_counter()
        for _ in range(args.warm):
            runner.step("on-device tokens", None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"{phase}: {args.warm} warm-up steps in {time.perf_counter() - t0:.1f} s")
        losses = []
        out.append(profiled(lambda: losses.append(runner.step("on-device tokens", None)), args.steps, device,
                            f"train step, {phase}", args.top, trace_path(args.traces, f"train_{phase}")))
        out[-1]["losses"] = [loss.item() for loss in losses]  # same tokens and start in every variant
        print(f"  losses of the profiled steps: {out[-1]['losses']}")
    if args.scorer:
        from golf.compile_policy import compiled_nll

        model = runner.model
        model.set_looping(cfg.num_loops > 0)
        model.eval()
        fn = compiled_nll(model, cfg) if use_compile(cfg, device) else model.nll_at
        B, L, s = cfg.eval_batch_seqs, cfg.eval_seq_len, cfg.eval_seq_len - cfg.eval_stride
        ids = torch.randint(0, cfg.vocab_size, (B, L), device=device)
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(2):
                fn(ids, ids, s)
            if device.type == "cuda":
                torch.cuda.synchronize()
            print(f"scorer: warm-up in {time.perf_counter() - t0:.1f} s")
            out.append(profiled(lambda: fn(ids, ids, s), args.scorer_batches, device,
                                f"sliding scorer, batch {B} x {L}", args.top, trace_path(args.traces, "scorer")))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
