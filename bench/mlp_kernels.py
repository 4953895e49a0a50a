"""golf.kernels at the record's shapes: unfused (compiled, as training runs it) against the fused kernels.

    python bench/mlp_kernels.py [--rows 98304] [--eval-rows 65536] [--out F]

MLP (``fused_mlp``): forward + backward of rows x 512 -> 2048 -> 512 in bf16 (one micro-batch of
48 x 2048), and the forward alone on eval_batch_seqs x 2048 rows (scoring). Head (``fused_ce``):
the softcapped cross-entropy's mean over the rows, forward + backward, with the head GEMMs. Each
candidate is checked against the unfused outputs and gradients (relative max difference). CUDA only.
"""
from __future__ import annotations

import argparse
import json

import torch

from golf import kernels as fm


def time_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def rel(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=48 * 2048)
    ap.add_argument("--eval-rows", type=int, default=32 * 2048)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--out")
    args = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    w_up = (torch.randn(args.hidden, args.dim, device=dev, generator=g) / args.dim**0.5).to(dt).requires_grad_()
    w_down = (torch.randn(args.dim, args.hidden, device=dev, generator=g) / args.hidden**0.5).to(dt).requires_grad_()
    h = torch.randn(args.rows, args.dim, device=dev, generator=g, dtype=dt).requires_grad_()
    d_out = torch.randn(args.rows, args.dim, device=dev, generator=g, dtype=dt)
    candidates = {"unfused (compiled)": torch.compile(fm.reference_mlp, fullgraph=True),
                  "fused_mlp": fm.fused_mlp,
                  "fused_mlp (compiled)": torch.compile(fm.fused_mlp, fullgraph=True)}
    rows, ref = [], None
    for name, fn in candidates.items():
        def step():
            out = fn(h, w_up, w_down)
            return [out] + list(torch.autograd.grad(out, (h, w_up, w_down), d_out))
        res = step()
        ref = ref or res
        diff = max(rel(a, b) for a, b in zip(res, ref))
        rows.append({"what": "train fwd+bwd", "kernel": name, "ms": time_ms(step), "max_rel_diff": diff})
    he = torch.randn(args.eval_rows, args.dim, device=dev, generator=g, dtype=dt)
    ref = None
    for name, fn in candidates.items():
        with torch.no_grad():
            out = fn(he, w_up, w_down)
            ref = out if ref is None else ref
            rows.append({"what": "scoring fwd", "kernel": name, "ms": time_ms(lambda: fn(he, w_up, w_down)),
                         "max_rel_diff": rel(out, ref)})
    emb = (torch.randn(args.vocab, args.dim, device=dev, generator=g) * 0.005).to(dt).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.rows,), device=dev, generator=g)
    hh = (torch.randn(args.rows, args.dim, device=dev, generator=g, dtype=dt) * 30).requires_grad_()
    ref = None
    for name, fn in {"unfused (compiled)": torch.compile(fm.reference_softcap_nll, fullgraph=True),
                     "fused_ce (compiled)": torch.compile(fm.fused_softcap_nll, fullgraph=True)}.items():
        def ce_step():
            loss = fn(hh, emb, targets, 30.0).mean()
            return [loss] + list(torch.autograd.grad(loss, (hh, emb)))
        res = ce_step()
        ref = ref or res
        rows.append({"what": "head fwd+bwd", "kernel": name, "ms": time_ms(ce_step),
                     "max_rel_diff": max(rel(a, b) for a, b in zip(res, ref))})
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, rows {args.rows} / {args.eval_rows}, "
          f"{args.dim} -> {args.hidden} -> {args.dim}, bf16")
    for r in rows:
        print(f"{r['what']:<15} {r['kernel']:<22} {r['ms']:8.3f} ms   max rel diff {r['max_rel_diff']:.2e}")
    # the tile shapes the autotuner chose for the last shape it tuned (scoring for the up-projection)
    chosen = {name: str(getattr(getattr(fm, name), "best_config", "not autotuned"))
              for name in ("_up_act_kernel", "_act_grad_kernel")}
    print("autotuned:", chosen)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows, "autotuned": chosen}, f, indent=1)


if __name__ == "__main__":
    main()
