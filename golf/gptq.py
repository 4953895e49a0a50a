"""Hessians and GPTQ with the record's SDClip row scales (§5.2, §5.3), and the round-to-nearest
quantizers beside it (RTN, GPTQ's baseline; absmax int8, the gates').

GPTQ: Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", arXiv 2210.17323, with act-order.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from golf.runtime import all_reduce_, progress_bar


def _weight_names(capture_name: str) -> list[str]:
    """Capture name -> the unbanked weights that share that input (c_q's input feeds c_q, c_k, c_v)."""
    if capture_name.endswith(".attn.c_q"):
        base = capture_name[: -len("c_q")]
        return [base + m + ".weight" for m in ("c_q", "c_k", "c_v")]
    return [capture_name + ".weight"]


def _next_inputs(batches: Any, device: torch.device) -> Tensor:
    """One calibration batch of ids: from a loader with ``next_batch`` or any iterator of (x, y) / x."""
    item = batches.next_batch(device) if hasattr(batches, "next_batch") else next(batches)
    x = item[0] if isinstance(item, (tuple, list)) else item
    return x.to(device)


@torch.no_grad()
def collect_hessians(model, batches_iter: Any, n_batches: int, device: torch.device | str,
                     all_reduce: bool = False, progress: bool = False) -> dict[str, Tensor]:
    """H = Σ XᵀX (fp32) per unbanked weight name, averaged over ``n_batches`` (spec §5.2).

    Eval mode, no grad, looping on (the looped layers add one XᵀX per pass), plain
    ``forward_logits`` with causal attention (also under ``attention_mask: document``, as #1855). ``all_reduce=True`` also averages over ranks: the fix for spec §9.9
    (the record quantizes with each rank's own Hessians). Returns {weight name: H [in, in]};
    c_q, c_k and c_v share one tensor. ``progress`` shows a bar over the batches.
    """
    device = torch.device(device)
    sums: dict[str, Tensor] = {}

    def capture(name: str, x: Tensor) -> None:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x2 = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, in)
            if name not in sums:
                sums[name] = torch.zeros(x2.shape[1], x2.shape[1], dtype=torch.float32, device=x2.device)
            sums[name].addmm_(x2.T, x2)

    if not hasattr(batches_iter, "next_batch"):
        batches_iter = iter(batches_iter)
    was_training, was_looping, was_masked = model.training, model.looping, model.document_mask
    model.eval()
    model.set_looping(True)
    model.document_mask = False  # #1855 calibrates with causal attention over whole rows
    model.capture = capture
    try:
        with progress_bar(n_batches, "Hessians", progress, "batch") as bar:
            for _ in range(n_batches):
                model.forward_logits(_next_inputs(batches_iter, device))
                bar.update()
    finally:
        model.capture = None
        model.document_mask = was_masked
        model.set_looping(was_looping)
        model.train(was_training)
    hessians: dict[str, Tensor] = {}
    for name in sorted(sums):  # same order on every rank for the collective
        h = sums[name].div_(n_batches)
        if all_reduce:
            all_reduce_(h, "avg")
        for w in _weight_names(name):
            hessians[w] = h
    return hessians


def sdclip_scales(W: Tensor, bits: int, clip_sigmas: float) -> Tensor:
    """Per-row scale s_r = k·std(W_r)/R (unbiased std), clamped ≥ 1e-10, rounded to fp16. W: (rows, cols)."""
    R = 2 ** (bits - 1) - 1
    return (clip_sigmas * W.float().std(dim=1) / R).clamp_min(1e-10).to(torch.float16)  # (rows,)


def safe_scale(s: Tensor) -> tuple[Tensor, Tensor]:
    # A constant row has s = fp16(1e-10) = 0: its values quantize to 0 instead of x/0 = NaN or inf.
    live = s > 0
    return torch.where(live, s, torch.ones_like(s)), live.to(s.dtype)


def _round_clamp(w: Tensor, s_div: Tensor, live: Tensor, R: int) -> Tensor:
    return torch.round(w / s_div).clamp_(-R, R).mul_(live)


def rtn_quantize(W: Tensor, bits: int, clip_sigmas: float) -> tuple[Tensor, Tensor]:
    """Round-to-nearest with the same SDClip scales: the baseline GPTQ must beat."""
    R = 2 ** (bits - 1) - 1
    scale = sdclip_scales(W, bits, clip_sigmas)
    q = _round_clamp(W.float(), *safe_scale(scale.float()[:, None]), R)
    return q.to(torch.int8), scale


@torch.no_grad()
def gptq_quantize(W: Tensor, H: Tensor, bits: int, clip_sigmas: float, block_size: int = 128,
                  damp: float = 0.01) -> tuple[Tensor, Tensor]:
    """GPTQ of one matrix W (rows = out, cols = in) with input Hessian H (cols, cols), spec §5.3.

    Runs in fp32 on W's device. Returns q int8 (rows, cols) in [-R, R] and scale fp16 (rows,).
    """
    R = 2 ** (bits - 1) - 1
    device = W.device
    scale = sdclip_scales(W, bits, clip_sigmas)  # from the original rows
    s = scale.to(device).float()[:, None]  # (rows, 1), the fp16-rounded value is what quantizes
    s_div, live = safe_scale(s)
    W = W.detach().float().clone()
    H = H.detach().to(device).float().clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * torch.diag(H).mean())
    perm = torch.argsort(torch.diag(H), descending=True)  # act-order
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(Hinv)
    Hinv = torch.linalg.cholesky(Hinv, upper=True)  # (cols, cols) upper factor of H⁻¹
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)  # (rows, block)
        for j in range(i2 - i1):
            w = W1[:, j:j + 1]  # (rows, 1)
            q = _round_clamp(w, s_div, live, R)
            Q[:, i1 + j:i1 + j + 1] = q
            err = (w - q * s) / Hinv1[j, j]
            W1[:, j:] -= err * Hinv1[j:j + 1, j:]  # within the block
            Err1[:, j:j + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the later columns
    Q = Q[:, torch.argsort(perm)]
    return Q.to(torch.int8), scale


def absmax_int8(W: Tensor) -> tuple[Tensor, Tensor]:
    """Round-to-nearest int8 with a per-row scale s_r = max|W_r|/127 (fp16): the gates' "int8 per
    row" (#1736, #1787), small matrices that need no Hessian. Returns q int8 (rows, cols), s fp16 (rows,)."""
    scale = (W.float().abs().amax(dim=1) / 127).to(torch.float16)
    q = _round_clamp(W.float(), *safe_scale(scale.float()[:, None]), 127)
    return q.to(torch.int8), scale
