"""Evaluation: plain, sliding window and score-first TTT (spec §6), in one process or under torchrun.

Conventions. ``val_tokens`` holds N = T + 1 tokens (spec §1.4); *target position* p in [0, T) is
token p + 1 predicted from tokens 0..p. Every mode splits its work contiguously over the ranks of
``golf.runtime.dist_info()`` and sums float64 NLL/token/byte totals with ``BPBAccumulator`` (§1.7).

Score-first TTT (§6.3, credited to PR #461 / #549) is checked, not asserted: ``TTTRecord`` logs when
each target was scored and trained, and ``check()`` raises on a breach of Issue #1017's C1, C3 or C4
(§10.1). Sliding windows score only their new positions through ``GPT.nll_at`` (§10.2).

``luts`` is ``golf.bpb.ByteLUTs`` or, on CaseOps data, ``golf.bpb.SidecarBytes`` (``eval_byte_counts``
builds the one that fits the data folder). LoRA and phased TTT live in ``golf.lora_ttt`` (§8.6-8.7).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from golf.config import Config
from golf.runtime import all_reduce_, dist_info, progress_bar
from golf.scoring import (TTTRecord, accumulator, add_masked, check_bytes, cosine_lr, device_of, finish, share,
                          sliding_windows, ttt_chunks, window_chunk)

log = logging.getLogger("golf")


# --- the sliding scorer ----------------------------------------------------------------------


def _score_windows(fwd: Callable, tokens: Tensor, starts: np.ndarray, offsets: np.ndarray, T: int, L: int,
                   acc, luts, record: TTTRecord | None = None, chunk: int = -1, trained_through: int = -1) -> None:
    """The old path: score one batch of windows from fp32 logits of all L positions, padded to L
    (zeros after the window end, as the record does).

    The model is causal, so padding after position wlen−1 cannot change positions before it.
    """
    dev = tokens.device
    ws = torch.as_tensor(starts, device=dev)[:, None]
    j = torch.arange(L, device=dev)[None, :]
    pos = ws + j  # (B, L) target positions
    valid = pos < T
    scored = valid & (j >= torch.as_tensor(offsets, device=dev)[:, None])
    idx = pos.clamp(max=T - 1)
    x = torch.where(valid, tokens[idx], 0)
    y = torch.where(valid, tokens[idx + 1], 0)
    logits = fwd(x)  # (B, L, V) fp32
    nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(y)
    acc.add(nll[scored], x[scored], y[scored], luts, (idx + 1)[scored])
    if record is not None:
        record.note_scored(pos[scored].cpu().numpy(), nll[scored].double().cpu().numpy(), chunk, trained_through)


class WindowScorer:
    """Scores ranges of one val stream's sliding windows (§6.2) into a BPB accumulator.

    New path (default): ``nll_fn(ids, targets, start)`` returns the NLL (B, L − start) of positions
    start..L−1 (``GPT.nll_at``, or a compiled copy from ``compiled_nll``). Every window but the first
    scores [L − stride, L), so a compiled ``nll_fn`` sees one static shape; the first window (start 0)
    goes alone through the eager ``model.nll_at``, which is not worth a second compile. Short last
    windows are padded to L with zeros, as before.
    Old path (``forward_logits`` given): fp32 logits (B, L, V) of every position, cross-entropy, then
    the scored positions (``_score_windows``): the reference the new path is tested against and
    the baseline ``bench/eval_full.py`` times.
    """

    def __init__(self, model, tokens: Tensor, luts, cfg: Config, acc, forward_logits: Callable | None = None,
                 nll_fn: Callable | None = None):
        self.model, self.tokens, self.luts, self.acc = model, tokens, luts, acc
        self.L, self.T = cfg.eval_seq_len, tokens.numel() - 1
        self.stride, self.batch = cfg.eval_stride, cfg.eval_batch_seqs
        self.starts, self.offsets = sliding_windows(self.T, self.L, self.stride)
        self.forward_logits, self.nll_fn = forward_logits, nll_fn or model.nll_at
        # on the device once: a per-batch copy from pageable host memory would sync the stream
        self.starts_dev = torch.as_tensor(self.starts, device=tokens.device)
        self.cols = torch.arange(self.L, device=tokens.device)

    def batches(self, lo: int, hi: int):
        """[b, e) ranges of at most ``batch`` windows; on the new path each of one first scored offset
        (window 0 alone when it scores from 0 and the others from L − stride)."""
        if self.forward_logits is None and lo == 0 and hi > 1 and self.offsets[0] != self.offsets[1]:
            yield 0, 1
            lo = 1
        for b in range(lo, hi, self.batch):
            yield b, min(b + self.batch, hi)

    def score(self, lo: int, hi: int, record: TTTRecord | None = None, chunk: int = -1,
              trained_through: int = -1, bar=None) -> None:
        """Score windows [lo, hi); call under no_grad."""
        for b, e in self.batches(lo, hi):
            if self.forward_logits is not None:
                _score_windows(self.forward_logits, self.tokens, self.starts[b:e], self.offsets[b:e], self.T, self.L,
                               self.acc, self.luts, record, chunk, trained_through)
            else:
                self._score_nll(b, e, record, chunk, trained_through)
            if bar is not None:
                bar.update(e - b)

    def _score_nll(self, b: int, e: int, record, chunk: int, trained_through: int) -> None:
        s, T = int(self.offsets[b]), self.T
        fn = self.nll_fn if s == self.L - self.stride else self.model.nll_at
        pos = self.starts_dev[b:e, None] + self.cols  # (B, L) target positions
        valid = pos < T
        idx = pos.clamp(max=T - 1)
        x = torch.where(valid, self.tokens[idx], 0)
        y = torch.where(valid, self.tokens[idx + 1], 0)
        nll = fn(x, y, s)  # (B, L - s) fp32
        prev, tgt, m = x[:, s:], y[:, s:], valid[:, s:]
        add_masked(self.acc, nll, prev, tgt, m, self.luts, idx[:, s:] + 1)
        if record is not None:
            record.note_scored(pos[:, s:][m].cpu().numpy(), nll[m].double().cpu().numpy(), chunk, trained_through)


# --- plain (§6.1) ----------------------------------------------------------------------------

def eval_plain(model, val_tokens: Tensor, luts, cfg: Config, progress: bool = True) -> dict:
    """Non-overlapping eval_seq_len sequences; rank r scores sequences [n·r/W, n·(r+1)/W).

    Each target sees only its in-sequence prefix; under ``pack_documents`` a batch of
    val_batch_tokens / grad_accum_total tokens is one row, each target seeing its document
    (docs/record.md §8.3).
    The caller sets ``model.looping``.
    """
    t0, info, device = time.perf_counter(), dist_info(), device_of(model)
    L, T = cfg.eval_seq_len, val_tokens.numel() - 1
    check_bytes(luts, cfg, val_tokens)
    luts = luts.to(device)
    n_seqs = T // L
    lo, hi = share(n_seqs, info.rank, info.world_size)
    acc = accumulator(device)
    # packed: #1855's batch, val_batch_tokens over grad_accum_total (32 sequences of 2048 at its settings)
    batch = max(1, cfg.val_batch_tokens // (cfg.grad_accum_total * L)) if cfg.pack_documents else cfg.eval_batch_seqs
    log.info("eval plain: %d sequences of %d, %d on this rank", n_seqs, L, hi - lo)
    bar = progress_bar(hi - lo, "eval plain", progress, "seq")
    with torch.no_grad():
        for b in range(lo, hi, batch):
            e = min(b + batch, hi)
            chunk = val_tokens[b * L: e * L + 1].to(device=device, dtype=torch.int64)
            rows = 1 if cfg.pack_documents else e - b  # #1855 scores a batch as one row of documents
            x, y = chunk[:-1].view(rows, -1), chunk[1:].view(rows, -1)
            pos = torch.arange(b * L + 1, e * L + 1, device=device).view(rows, -1)  # y's indices in val_tokens
            acc.add(model(x, y, reduction="none"), x, y, luts, pos)
            bar.update(e - b)
    bar.close()
    return finish(acc, t0, "plain", n_seqs=n_seqs)


# --- sliding window (§6.2) -------------------------------------------------------------------

def eval_sliding(model, val_tokens: Tensor, luts, cfg: Config, forward_logits: Callable | None = None,
                 record: TTTRecord | None = None, progress: bool = True, nll_fn: Callable | None = None) -> dict:
    """Stride-``eval_stride`` windows of eval_seq_len, split contiguously over ranks, batches of
    ``eval_batch_seqs``; each target is scored once with ≥ L − stride tokens of context (§6.2).

    Scored through ``nll_fn`` (default ``model.nll_at``), or the old full-logits path when
    ``forward_logits`` is given (``WindowScorer``).
    """
    t0, info, device = time.perf_counter(), dist_info(), device_of(model)
    check_bytes(luts, cfg, val_tokens)
    luts, tokens = luts.to(device), val_tokens.to(device=device, dtype=torch.int64)
    acc = accumulator(device)
    scorer = WindowScorer(model, tokens, luts, cfg, acc, forward_logits, nll_fn)
    n = len(scorer.starts)
    lo, hi = share(n, info.rank, info.world_size)
    log.info("eval sliding: %d windows of %d, stride %d, %d on this rank; %s", n, cfg.eval_seq_len,
             cfg.eval_stride, hi - lo, "full logits" if forward_logits is not None else "scored positions only")
    bar = progress_bar(hi - lo, "eval sliding", progress, "win")
    with torch.no_grad():
        scorer.score(lo, hi, record, bar=bar)
    bar.close()
    if record is not None:
        record.merge_ranks(device)
    return finish(acc, t0, "sliding", n_windows=n, stride=cfg.eval_stride)


# --- score-first TTT (§6.3) ------------------------------------------------------------------


def synced_step(opt: torch.optim.Optimizer, params: list, clip: float,
                bank_mask: dict[int, list] | None = None) -> None:
    """One TTT step after a backward: every gradient summed over ranks (a zero one where this rank had
    none, so the collectives stay matched), frozen bank slices zeroed, the global norm clipped."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        all_reduce_(p.grad, "sum")
        if bank_mask and id(p) in bank_mask:
            p.grad[bank_mask[id(p)]] = 0
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def _frozen_bank_mask(model, n_frozen: int) -> dict[int, list]:
    """For ``ttt_freeze_blocks``: bank slices of the frozen layers, by id of the bank parameter.

    The record froze parameters named ``blocks.{i}.*`` only; its matrices live in banks, so the
    bank slices of a frozen layer kept training there. Here they are masked too (moot at 0).
    """
    L = len(model.blocks)
    layers = list(range(min(n_frozen, L)))
    if not layers or not hasattr(model, "qo_bank"):
        return {}
    two = layers + [L + i for i in layers]
    return {id(model.qo_bank): two, id(model.kv_bank): two,
            id(model.mlp_up_bank): layers, id(model.mlp_down_bank): layers}


def eval_ttt(model, val_tokens: Tensor, luts, cfg: Config, record: TTTRecord | None = None,
             forward_logits: Callable | None = None, progress: bool = True, nll_fn: Callable | None = None,
             train_loss: Callable | None = None, _train_before_score: bool = False) -> dict:
    """Score-first TTT on ``model`` itself (the caller passes a fresh copy; §6.3, §9.16).

    For each chunk ci of ``ttt_chunk_tokens``: (1) score its windows under no_grad with the current
    weights; (2) unless it is the last chunk, ``ttt_epochs`` SGD steps (lr cosine over chunks,
    momentum ``ttt_momentum``, all-reduce then ``clip_grad_norm_``) on its k = chunk_len // L
    sequences, rank r taking sequences [k·r/W, k·(r+1)/W). ``_train_before_score`` swaps (1) and
    (2); it exists only so a test can show ``TTTRecord.check`` catches the violation.

    Scoring goes through ``WindowScorer`` (``nll_fn``, or the old full-logits path when
    ``forward_logits`` is given). ``train_loss(x, y)`` returns Σ NLL of a (B, L) batch: by default
    the eager model (the record's TTT steps were eager), ``compiled_ttt_loss`` where golf compiles.
    Only the loss's forward and backward are compiled; all-reduce, clip and SGD step stay as they are.
    """
    t0, info, device = time.perf_counter(), dist_info(), device_of(model)
    W, r = info.world_size, info.rank
    L, T, C = cfg.eval_seq_len, val_tokens.numel() - 1, cfg.ttt_chunk_tokens
    check_bytes(luts, cfg, val_tokens)
    luts, tokens = luts.to(device), val_tokens.to(device=device, dtype=torch.int64)
    acc = accumulator(device)
    scorer = WindowScorer(model, tokens, luts, cfg, acc, forward_logits, nll_fn)
    starts, offsets = scorer.starts, scorer.offsets
    loss_sum = train_loss or (lambda x, y: model(x, y, reduction="none").sum())
    n_chunks = ttt_chunks(T, C)
    bounds = np.searchsorted(window_chunk(starts, offsets, C, n_chunks), np.arange(n_chunks + 1))

    frozen = [f"blocks.{i}." for i in range(cfg.ttt_freeze_blocks)]
    was_trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(f) for f in frozen))
        if p.requires_grad:
            params.append(p)
    bank_mask = _frozen_bank_mask(model, cfg.ttt_freeze_blocks)
    opt = torch.optim.SGD(params, lr=cfg.ttt_lr, momentum=cfg.ttt_momentum, nesterov=False, weight_decay=0.0)
    trained_through, steps = -1, 0

    def score(ci: int) -> None:
        w_lo, w_hi = bounds[ci], bounds[ci + 1]
        lo, hi = (int(w_lo + v) for v in share(int(w_hi - w_lo), r, W))
        with torch.no_grad():
            scorer.score(lo, hi, record, ci, trained_through)

    def train(ci: int) -> int:
        c0 = ci * C
        k = (min(c0 + C, T) - c0) // L  # sequences; their targets are positions [c0, c0 + k·L)
        if k == 0 or cfg.ttt_epochs == 0:
            return 0
        lr = cosine_lr(cfg.ttt_lr, ci, n_chunks)
        if cfg.fix_ttt_reset_momentum:
            opt.state.clear()
        for g in opt.param_groups:
            g["lr"] = lr
        shares = [share(k, q, W) for q in range(W)]
        lo, hi = shares[r]
        B = cfg.ttt_batch_seqs
        n_steps = max(-(-(b - a) // B) for a, b in shares)  # same on every rank: collectives stay matched
        if record is not None and hi > lo:
            record.note_trained(c0 + lo * L, c0 + hi * L, ci)
        for _ in range(cfg.ttt_epochs):
            for s in range(n_steps):
                a, b = min(lo + s * B, hi), min(lo + (s + 1) * B, hi)
                n_global = sum(min(max(q1 - q0 - s * B, 0), B) for q0, q1 in shares) * L
                opt.zero_grad(set_to_none=True)
                if b > a:
                    seg = tokens[c0 + a * L: c0 + b * L + 1]
                    x, y = seg[:-1].view(-1, L), seg[1:].view(-1, L)
                    # sum / global count, summed over ranks == the record's AVG of per-rank means
                    (loss_sum(x, y) / n_global).backward()
                synced_step(opt, params, cfg.ttt_grad_clip, bank_mask)
        return cfg.ttt_epochs * n_steps

    log.info("eval ttt: %d chunks of %d tokens, %d windows, %d epochs per chunk; %s; %s training", n_chunks, C,
             len(starts), cfg.ttt_epochs, "full logits" if forward_logits is not None else "scored positions only",
             "eager" if train_loss is None else "given")
    bar = progress_bar(n_chunks, "eval ttt", progress, "chunk")
    try:
        for ci in range(n_chunks):
            last = ci == n_chunks - 1
            if _train_before_score and not last:
                steps += train(ci)
                trained_through = ci
            score(ci)
            if not _train_before_score and not last:
                steps += train(ci)
                trained_through = ci
            bar.update(1)
    finally:
        bar.close()
        for name, p in model.named_parameters():
            p.requires_grad_(was_trainable[name])
        model.zero_grad(set_to_none=True)
    if record is not None:
        record.merge_ranks(device)
    return finish(acc, t0, "ttt", n_windows=len(starts), n_chunks=n_chunks, stride=cfg.eval_stride,
                   ttt_steps=steps, last_chunk_tokens=T - (n_chunks - 1) * C)
