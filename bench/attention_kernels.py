"""Causal GQA attention kernels at the record's training shape, forward + backward, side by side.

    python bench/attention_kernels.py [--batch 48 --seq 2048 --iters 20]

Each candidate computes golf's attention function (q (B, T, 8, 64), k/v (B, T, 4, 64), causal, bf16)
and is checked against golf's ``sdpa_cuda`` output and gradients before it is timed: max |difference|
is printed next to its time. A candidate the machine cannot run says why in its row. The fwd column
is timed without grad (as scoring runs), where golf's ``sdpa_cuda`` passes the KV heads unexpanded.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from golf.attention import attention_fn


def sdpa_only(backend: SDPBackend, gqa: bool):
    def attn(q, k, v):
        if not gqa:
            rep = q.size(2) // k.size(2)
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        with sdpa_kernel([backend]):
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, enable_gqa=gqa)
        return y.transpose(1, 2)
    return attn


def flex(q_len: int):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, q_len, q_len)
    fn = torch.compile(flex_attention, dynamic=False)

    def attn(q, k, v):
        y = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=mask, enable_gqa=True)
        return y.transpose(1, 2)
    return attn


def run(attn, q, k, v, dy):
    for t in (q, k, v):
        t.grad = None
    y = attn(q, k, v)
    y.backward(dy)
    return y, q.grad, k.grad, v.grad


def timed(attn, q, k, v, dy, iters: int) -> tuple[float, float]:
    for _ in range(3):
        run(attn, q, k, v, dy)
        with torch.no_grad():  # inference may plan its own kernels: warm those too
            attn(q, k, v)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        with torch.no_grad():
            attn(q, k, v)
    torch.cuda.synchronize()
    fwd = (time.perf_counter() - t0) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        run(attn, q, k, v, dy)
    torch.cuda.synchronize()
    return fwd * 1000, (time.perf_counter() - t0) / iters * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    B, T = args.batch, args.seq
    q = torch.randn(B, T, 8, 64, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
    k = torch.randn(B, T, 4, 64, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
    v = torch.randn(B, T, 4, 64, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
    dy = torch.randn(B, T, 8, 64, device=dev, dtype=torch.bfloat16, generator=g)
    ref = [t.float() for t in run(attention_fn("sdpa_cuda"), q, k, v, dy)]
    flops_fwd = 4 * B * 8 * T * T * 64 / 2
    candidates = {
        "sdpa_cuda (golf: cuDNN; fwd native GQA)": attention_fn("sdpa_cuda"),  # no grad: native; with: expanded
        "sdpa_cuda_expanded (KV always expanded)": attention_fn("sdpa_cuda_expanded"),
        "cuDNN, native GQA": sdpa_only(SDPBackend.CUDNN_ATTENTION, True),
        "flash (FA2), native GQA": sdpa_only(SDPBackend.FLASH_ATTENTION, True),
        "flash (FA2), KV expanded": sdpa_only(SDPBackend.FLASH_ATTENTION, False),
        "efficient, native GQA": sdpa_only(SDPBackend.EFFICIENT_ATTENTION, True),
        "flex attention (compiled Triton)": flex(T),
    }
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, B={B} T={T} H=8 KV=4 hd=64 causal bf16")
    print(f"{'kernel':<40} {'fwd ms':>8} {'fwd+bwd ms':>11} {'fwd TFLOP/s':>12} {'max|dy|':>9} {'max|dq|':>9}")
    for name, attn in candidates.items():
        try:
            got = [t.float() for t in run(attn, q, k, v, dy)]
            err_y, err_dq = ((a - b).abs().max().item() for a, b in zip(got[:2], ref[:2]))
            fwd, both = timed(attn, q, k, v, dy, args.iters)
        except Exception as exc:  # a kernel this machine or shape does not support
            print(f"{name:<40} not run: {str(exc).splitlines()[0][:80]}")
            continue
        print(f"{name:<40} {fwd:>8.2f} {both:>11.2f} {flops_fwd / fwd / 1e9:>12.0f} {err_y:>9.4f} {err_dq:>9.4f}")


if __name__ == "__main__":
    main()
