"""The challenge's budget, code bytes + compressed model bytes ≤ 16,000,000 (§5.5), and the record's
prune-to-fit fallback (§5.4, with its §9.14 bug switchable), predicted here so that it compresses at
most twice.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from golf.artifact import piece_bytes, serialize
from golf.compressors import entropy_bytes

log = logging.getLogger("golf")


def artifact_budget(model_bytes: int, code_bytes: int, limit: int = 16_000_000) -> dict[str, Any]:
    """The challenge's rule: compressed model bytes + code bytes ≤ limit (decimal 16 MB)."""
    total = int(model_bytes) + int(code_bytes)
    return {"model_bytes": int(model_bytes), "code_bytes": int(code_bytes), "total": total,
            "limit": int(limit), "headroom": int(limit) - total, "fits": total <= limit}


class _PrunePlan:
    """Which int6 ±1 entries go, in the record's order, and a prediction of the bytes that saves.

    Candidates are every ±1 entry of the int6 matrices, ordered by their row's scale (stable, so
    ties keep tensor and flat order). Zeroing the first ``m`` candidates zeroes, in tensor t,
    ``m_t`` entries: the candidates' own (``fix``) or, as the record does (spec §9.14), the first
    ``m_t`` ±1 entries of t in flat order. Predicted saving: per tensor, its coder's rate (its
    compressed bytes over its order-0 entropy) times the drop in order-0 entropy when ``m_t`` counts
    move from ±1 to 0.
    """

    def __init__(self, quantized: dict[str, Tensor], meta: dict[str, Any], fix: bool, sizes: dict[str, int]):
        self.names = [n for n, m in meta.items() if m.get("bits") == 6]
        tensor_of, scales, flats = [], [], []
        for t, name in enumerate(self.names):
            q = quantized[name + ".q"]
            flat = torch.nonzero(q.reshape(-1).abs() == 1).squeeze(1)  # ascending flat order
            flats.append(flat)
            tensor_of.append(torch.full_like(flat, t))
            scales.append(quantized[name + ".scale"].float()[flat // q.shape[1]])
        self.n = sum(f.numel() for f in flats)
        if self.n == 0:
            return
        order = torch.argsort(torch.cat(scales), stable=True)  # smallest row scale first
        self.tensor_order = torch.cat(tensor_of)[order].numpy()  # tensor of the k-th candidate
        if fix:  # each tensor's candidates in the global order
            by_tensor = torch.from_numpy(np.argsort(self.tensor_order, kind="stable"))
            counts = np.bincount(self.tensor_order, minlength=len(self.names)).tolist()
            flats = list(torch.split(torch.cat(flats)[order][by_tensor], counts))
        self.seq, self.plus, self.hist, self.h0, self.rate = [], [], [], [], []
        for t, name in enumerate(self.names):
            seq = flats[t]
            q = quantized[name + ".q"].reshape(-1)
            self.seq.append(seq)
            self.plus.append(np.concatenate(([0], np.cumsum((q[seq] > 0).numpy()))))
            hist = np.bincount(q.numpy().astype(np.int64) + 128, minlength=256)
            h0 = entropy_bytes(hist)
            self.hist.append(hist)
            self.h0.append(h0)
            self.rate.append(sizes.get(name + ".q", h0) / h0 if h0 > 0 else 1.0)

    def per_tensor(self, m: int) -> np.ndarray:
        return np.bincount(self.tensor_order[:m], minlength=len(self.names))

    def saving(self, m: int) -> float:
        total = 0.0
        for t, mt in enumerate(self.per_tensor(m)):
            if mt:
                h, p = self.hist[t].copy(), int(self.plus[t][mt])
                h[128] += mt
                h[129] -= p
                h[127] -= mt - p
                total += self.rate[t] * (self.h0[t] - entropy_bytes(h))
        return total

    def smallest(self, target: float) -> int:
        """The smallest count whose predicted saving reaches ``target`` bytes (all of them if none does)."""
        lo, hi = 1, self.n
        if self.saving(hi) < target:
            return hi
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.saving(mid) >= target else (mid + 1, hi)
        return lo

    def apply(self, quantized: dict[str, Tensor], m: int) -> dict[str, Tensor]:
        out = dict(quantized)
        for t, mt in enumerate(self.per_tensor(m)):
            if mt:
                key = self.names[t] + ".q"
                out[key] = quantized[key].clone()
                out[key].view(-1)[self.seq[t][:mt]] = 0
        return out


def prune_to_fit(quantized: dict[str, Tensor], meta: dict[str, Any], code_bytes: int, limit: int,
                 compressor: str = "brotli", fix: bool = False, blob: bytes | None = None,
                 cache: dict | None = None, threads: int | None = None,
                 progress: bool = False) -> tuple[dict[str, Tensor], int, bytes]:
    """Zero int6 ±1 entries, smallest row scale first, until code + artifact ≤ limit (spec §5.4).

    The record zeroes 5% of the candidates per round and compresses the whole artifact after each
    round (~90 s a round at its size). golf predicts the count instead (``_PrunePlan``), with a
    margin (5% of the excess + 16 bytes + 10 ppm of the artifact), and compresses once; if that is
    still over, it corrects the prediction by the saving it saw and compresses once more. Only if
    that is still over does it go on (a warning each time) until it fits or the candidates run out.
    So it zeroes about as many entries as needed, where the record rounds up to a whole 5% round.
    ``fix=False`` is the record (spec §9.14): each candidate zeroes the *first remaining* ±1 entry
    of its tensor in flat order, not its own entry; ``fix=True`` zeroes the candidate's own.
    ``blob``: the unpruned artifact, if already made; ``cache``: serialize's piece cache, so that
    each compression redoes only the tensors pruning changed. Returns (pruned dict, entries zeroed,
    artifact); the artifact may still not fit when the candidates run out (check with artifact_budget).
    """
    cache = {} if cache is None else cache
    if blob is None:
        blob = serialize(quantized, meta, compressor, threads, cache, progress)
    need = len(blob) + code_bytes - limit
    if need <= 0:
        return dict(quantized), 0, blob
    plan = _PrunePlan(quantized, meta, fix, piece_bytes(blob))
    if plan.n == 0:
        log.warning("prune: %d bytes over the limit and no int6 ±1 entries to zero", need)
        return dict(quantized), 0, blob
    correction, m, rounds = 1.0, 0, 0
    out = quantized
    while True:
        rounds += 1
        target = need * (1 + 0.05 * rounds) + (16 + 1e-5 * len(blob)) * rounds  # a margin for the coder's noise
        m = min(plan.n, max(plan.smallest(target / correction), m + 1))
        predicted = plan.saving(m)
        log.info("prune round %d: %d bytes over; zeroing %d of %d int6 ±1 entries (%.2f%%), "
                 "predicted to save %d bytes", rounds, need, m, plan.n, 100 * m / plan.n, predicted)
        t0 = time.perf_counter()
        out = plan.apply(quantized, m)
        pruned_blob = serialize(out, meta, compressor, threads, cache, progress)
        saved = len(blob) - len(pruned_blob)
        log.info("prune round %d: %d bytes (saved %d) in %.1f s", rounds, len(pruned_blob), saved,
                 time.perf_counter() - t0)
        if len(pruned_blob) + code_bytes <= limit:
            return out, m, pruned_blob
        if m == plan.n:
            log.warning("prune: every int6 ±1 entry zeroed and still %d bytes over",
                        len(pruned_blob) + code_bytes - limit)
            return out, m, pruned_blob
        if rounds >= 2:
            log.warning("prune: still %d bytes over after %d compressions; pruning more",
                        len(pruned_blob) + code_bytes - limit, rounds)
        correction = saved / predicted if saved > 0 and predicted > 0 else correction / 2
