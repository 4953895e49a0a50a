"""LQER (opt-in, ``lqer_rank`` > 0; #1797, after Zhang et al. 2024, "LQER: Low-Rank Quantization Error
Reconstruction for LLMs", arXiv 2402.02446): rank-r corrections of the largest GPTQ errors, packed into
the artifact (§10.3), and the stored matrix they correct read back (``dequantize_matrix``).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from golf.artifact import ArtifactError, pack_bits, unpack_bits
from golf.gptq import safe_scale
from golf.runtime import cpu_threads

log = logging.getLogger("golf")


LQER_GROUP = 64  # entries of B per INT4 scale (#1797's LQER_ASYM_GROUP)
LQER_SUFFIXES = (".lqer_a", ".lqer_a_scale", ".lqer_b", ".lqer_b_scale")


def _scaled_round(x: Tensor, scale: Tensor, lo: int, hi: int) -> Tensor:
    s_div, live = safe_scale(scale.float())
    return torch.round(x / s_div).clamp_(lo, hi).mul_(live).to(torch.int8)


def lqer_quantize(A: Tensor, B: Tensor, group: int = LQER_GROUP) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """#1797's packing of the factors of E ≈ A·B, A (rows, r) and B (r, cols).

    ``group`` > 0, "asymmetric": A INT2, q_A = clamp(round(A/s_A), -2, 1), one scale s_A = max|A|/1.5;
    B INT4 in groups of ``group`` entries of its row-major flattening (r·cols a multiple of it),
    q_B = clamp(round(B/s_g), -8, 7), s_g = max_g|B|/7.5. ``group`` 0, #1855's fallback where r·cols is
    no multiple of the group: A and B symmetric INT4 per row, s = max|row|/7, q in [-7, 7].
    Scales fp16. Returns q_A int8 (rows, r), s_A, q_B int8 (r, cols), s_B.
    """
    A, B = A.float(), B.float()
    if not group:
        sA, sB = ((t.abs().amax(dim=1) / 7).to(torch.float16) for t in (A, B))
        return _scaled_round(A, sA[:, None], -7, 7), sA, _scaled_round(B, sB[:, None], -7, 7), sB
    sA = (A.abs().max() / 1.5).reshape(1).to(torch.float16)
    qA = _scaled_round(A, sA, -2, 1)
    groups = B.reshape(-1, group)  # (G, group)
    sB = (groups.abs().amax(dim=1) / 7.5).to(torch.float16)
    qB = _scaled_round(groups, sB[:, None], -8, 7).reshape(B.shape)
    return qA, sA, qB, sB


def lqer_group(r: int, cols: int, group: int = LQER_GROUP) -> int:
    """The B group size #1855 uses for a rank-r correction of a matrix with ``cols`` columns (0: symmetric)."""
    return group if (r * cols) % group == 0 else 0


def lqer_dequantize(qA: Tensor, sA: Tensor, qB: Tensor, sB: Tensor, group: int = LQER_GROUP) -> Tensor:
    """A_deq·B_deq (fp32, (rows, cols)) from lqer_quantize's integers and scales."""
    if not group:
        return (qA.float() * sA.float()[:, None]) @ (qB.float() * sB.float()[:, None])
    per_entry = sB.float().repeat_interleave(group)
    return (qA.float() * sA.float()) @ (qB.reshape(-1).float() * per_entry).reshape(qB.shape)


def lqer_pack(name: str, qA: Tensor, sA: Tensor, qB: Tensor, sB: Tensor, group: int) -> dict[str, Tensor]:
    """The artifact's tensors of one correction: A at 2 bits (4 symmetric), B at 4 bits (uint8), fp16 scales."""
    return dict(zip((name + s for s in LQER_SUFFIXES), (pack_bits(qA, 2 if group else 4), sA, pack_bits(qB, 4), sB)))


def lqer_unpack(quantized: dict[str, Tensor], name: str, m: dict[str, Any], rows: int, cols: int) -> Tensor:
    """The correction A·B (fp32, (rows, cols)) stored for ``name``; meta gives its rank and group."""
    r, group = int(m["lqer_rank"]), int(m["lqer_group"])
    a, sA, b, sB = (quantized[name + s] for s in LQER_SUFFIXES)
    want = (rows, r) if not group else (1, r * cols // group)
    if (sA.numel(), sB.numel()) != want:
        raise ArtifactError(f"artifact is corrupt: the LQER scales of {name!r} do not match rank {r}")
    qA = unpack_bits(a, 4 if not group else 2, rows * r).reshape(rows, r)
    qB = unpack_bits(b, 4, r * cols).reshape(r, cols)
    return lqer_dequantize(qA, sA, qB, sB, group)


def lqer_correct(sd: dict[str, Tensor], quantized: dict[str, Tensor], meta: dict[str, Any], rank: int,
                 top_k: int, group: int = LQER_GROUP) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, dict]]:
    """Add rank-``rank`` corrections of the ``top_k`` largest GPTQ errors, as #1797/#1855 do.

    E = W - Q(W) for every GPTQ matrix; the ``top_k`` largest by ‖E‖_F get E ≈ A·B from the SVD
    E = U S Vᵀ, A = U_r S_r, B = V_rᵀ, packed by ``lqer_quantize`` (the symmetric fallback where
    r·cols is no multiple of ``group``). Like the record, a correction is kept even when its rounding
    makes it no help (a warning says so). Returns new (quantized, meta), a corrected tensor's meta
    gaining ``lqer_rank`` and ``lqer_group``, and {name: {"err_before", "err_after"}} (‖E‖_F).
    """
    quantized, meta, records = dict(quantized), dict(meta), {}
    mats = [n for n, m in meta.items() if "clip_sigmas" in m]  # the GPTQ matrices, not the gates

    def error(name: str) -> Tensor:
        return sd[name].detach().float().cpu() - dequantize_matrix(quantized, name, meta[name])  # (rows, cols)

    norms = {n: float(error(n).norm()) for n in mats}
    for name in sorted(mats, key=lambda n: -norms[n])[:top_k]:  # stable: ties keep the model's order
        E = error(name)
        with cpu_threads(1):  # the same factors on every host; no contention between processes
            U, S, Vh = torch.linalg.svd(E, full_matrices=False)
        r = min(rank, S.numel())
        g = lqer_group(r, E.size(1), group)
        factors = lqer_quantize(U[:, :r] * S[:r], Vh[:r], g)
        after = float((E - lqer_dequantize(*factors, g)).norm())
        if not after < norms[name]:
            log.warning("LQER %s: the rounded correction does not help (‖E‖_F %.4g → %.4g); kept, as the record keeps it",
                        name, norms[name], after)
        quantized.update(lqer_pack(name, *factors, g))
        meta[name] = {**meta[name], "lqer_rank": r, "lqer_group": g}
        records[name] = {"err_before": norms[name], "err_after": after}
        log.info("LQER %s: ‖E‖_F %.4g → %.4g (rank %d)", name, norms[name], after, r)
    return quantized, meta, records


def dequantize_matrix(quantized: dict[str, Tensor], name: str, m: dict[str, Any]) -> Tensor:
    """W = q·s_row (fp32, (rows, cols)), plus A·B where the tensor has an LQER correction."""
    q = quantized[name + ".q"]
    w = q.float() * quantized[name + ".scale"].float()[:, None]
    if m.get("lqer_rank"):
        w = w + lqer_unpack(quantized, name, m, *q.shape)
    return w
