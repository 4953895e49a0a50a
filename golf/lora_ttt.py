"""Per-document LoRA TTT (#1530; retuned in #1767/#1787/#1855) and phased global TTT (#1610/#1626), spec §8.

Each document is scored in chunks from its own tokens only, with fresh per-document LoRA adapters
that take one AdamW step after each chunk is scored (§8.6); phased TTT pauses after growing
prefixes of the length-sorted queue to train the base model on the documents already scored
(§8.7). The base model is reached only through ``GPT.hidden``'s ``weight_hook``. Legality goes
through the same ``TTTRecord`` as ``eval_ttt`` (§10.1): one step id per document chunk and per phase.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.config import Config
from golf.evaluate import (TTTRecord, _accumulator, _add_masked, _check_bytes, _device_of, _finish, _share,
                           cosine_lr, synced_step)
from golf.model import BOS_ID, virtual_layers
from golf.runtime import GolfError, dist_info, progress_bar

log = logging.getLogger("golf")


# --- documents and the queue -------------------------------------------------------------------

def document_spans(val_tokens: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends): document d owns target positions [starts[d], ends[d]); together they tile [0, T)."""
    T = val_tokens.numel() - 1
    if T < 1:
        raise GolfError("the val stream holds no target to score")
    bos = torch.nonzero(val_tokens[1:T].cpu() == BOS_ID).flatten().numpy() + 1  # a BOS at p starts a document
    starts = np.concatenate(([0], bos)).astype(np.int64)
    return starts, np.append(starts[1:], T).astype(np.int64)


def document_queue(starts: np.ndarray, ends: np.ndarray, batch_docs: int) -> list[np.ndarray]:
    """Document indices in batches of ``batch_docs``, longest first (ties: stream order)."""
    order = np.lexsort((starts, -(ends - starts)))
    return [order[i:i + batch_docs] for i in range(0, len(order), batch_docs)]


def phase_points(queue: list[np.ndarray], phase_docs: int, n_phases: int) -> list[tuple[int, int]]:
    """(after batch b, first n documents of the queue) for each global phase; empty without phases."""
    n_docs = sum(len(b) for b in queue)
    docs = min(phase_docs, n_docs)
    if n_phases == 0 or docs == 0:
        return []
    size = len(queue[0])
    out = []
    for g in range(1, n_phases + 1):
        n = docs * g // n_phases  # #1626: 666, 1333, 2000
        if n > 0 and (not out or n > out[-1][1]):
            out.append(((n - 1) // size, n))
    if out and out[-1][0] >= len(queue) - 1:
        log.warning("phased TTT: the last global phase comes after the last document batch, so it changes "
                    "no score (%d document%s in batches of up to %d): lower ttt_phase_docs and ttt_lora_batch_docs, "
                    "or score more documents (max_val_tokens)", n_docs, "s" * (n_docs != 1), size)
    return out


@dataclass
class StepIds:
    """One total order of training steps for ``TTTRecord``: every chunk of every document, in queue
    order, and each global phase right after the batch it follows."""
    first: np.ndarray  # [n_docs] id of the document's chunk 0; chunk ci has first + ci
    phase: list[int]  # id of each global phase
    before_batch: np.ndarray  # [n_batches] last phase id before the batch (-1 none)

    @classmethod
    def build(cls, queue: list[np.ndarray], n_chunks: np.ndarray, phases: list[tuple[int, int]]) -> "StepIds":
        first = np.full(n_chunks.size, -1, np.int64)
        phase, before, nxt, last = [], np.full(len(queue), -1, np.int64), 0, -1
        for b, docs in enumerate(queue):
            before[b] = last
            for d in docs:
                first[d] = nxt
                nxt += int(n_chunks[d])
            for _ in (p for p in phases if p[0] == b):
                phase.append(nxt)
                last, nxt = nxt, nxt + 1
        if nxt >= np.iinfo(np.int32).max:
            raise GolfError(f"{nxt} TTT steps do not fit the int32 legality record")
        return cls(first, phase, before)


# --- adapters ----------------------------------------------------------------------------------

class BatchedLoRA(nn.Module):
    """n independent rank-r adapters, one per document row: x (n, T, in) ↦ scale·(x Aᵀ) Bᵀ (n, T, out)."""

    def __init__(self, n: int, d_in: int, d_out: int, rank: int, scale: float, gen: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.A = nn.Parameter(torch.empty(n, rank, d_in).uniform_(-bound, bound, generator=gen))
        self.B = nn.Parameter(torch.zeros(n, d_out, rank))  # zero: the adapter starts as the identity
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.A.transpose(1, 2).to(x.dtype)) @ self.B.transpose(1, 2).to(x.dtype) * self.scale


class DocAdapters(nn.Module):
    """All adapters of one document batch: per virtual-layer slot Q, K, V, attention-out and MLP-out,
    plus the LM head (#1530's set)."""

    def __init__(self, cfg: Config, n_docs: int, n_slots: int, seed: int):
        super().__init__()
        D, KV, r = cfg.model_dim, cfg.kv_dim, cfg.ttt_lora_rank
        gen = torch.Generator().manual_seed(seed)
        scale = (cfg.ttt_lora_alpha or r) / r

        def make(d_out: int) -> nn.ModuleList:
            return nn.ModuleList(BatchedLoRA(n_docs, D, d_out, r, scale, gen) for _ in range(n_slots))

        self.n_slots = n_slots
        self.q, self.k, self.v, self.o, self.mlp = make(D), make(KV), make(KV), make(D), make(D)
        self.head = BatchedLoRA(n_docs, D, cfg.vocab_size, r, scale, gen)

    def wrap(self, slot: int, w: tuple) -> tuple:
        """The six bank slices of one virtual layer (``GPT.layer_weights``), wrapped with this slot's adapters."""
        wq, wk, wv, wo, up, down = w
        seen: dict[str, Tensor] = {}  # the normalised sub-block inputs, for the parallel adapters

        def reads(key: str, lora: nn.Module | None) -> Callable:
            def extra(x: Tensor, y: Tensor) -> Tensor:
                seen[key] = x
                return y if lora is None else y + lora(x)
            return extra

        def parallel(key: str, lora: nn.Module) -> Callable:
            def extra(x: Tensor, y: Tensor) -> Tensor:
                h = seen[key]
                return y + lora(h[:, h.size(1) - y.size(1):])  # the rows the output keeps (``q_start``)
            return extra

        return (_AdaptedWeight(wq, reads("attn", self.q[slot])), _AdaptedWeight(wk, reads("attn", self.k[slot])),
                _AdaptedWeight(wv, reads("attn", self.v[slot])), _AdaptedWeight(wo, parallel("attn", self.o[slot])),
                _AdaptedWeight(up, reads("mlp", None)), _AdaptedWeight(down, parallel("mlp", self.mlp[slot])))


class _AdaptedWeight:
    """Stands in for a bank slice W in the model's ``F.linear(x, W)``: returns ``extra(x, x Wᵀ)``.

    A tensor-like (``__torch_function__``), so golf/model.py runs unchanged; anything else done with
    it raises instead of silently skipping the adapter.
    """

    def __init__(self, weight: Tensor, extra: Callable):
        self.weight, self.extra = weight, extra

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is not F.linear or kwargs or len(args) != 2 or not isinstance(args[1], cls):
            raise TypeError(f"LoRA TTT wraps the bank slices for F.linear(x, W) only; the model called {func}")
        x, w = args
        return w.extra(x, F.linear(x, w.weight))


def adapted_hidden(model, adapters: DocAdapters, ids: Tensor) -> Tensor:
    """``model.hidden(ids)`` (n, T, D) with ``adapters`` added; row i of ``ids`` uses document i's adapters."""
    slots: list[int] = []

    def hook(slot: int, w: tuple) -> tuple:
        slots.append(slot)
        return adapters.wrap(slot, w)

    model.weight_hook = hook  # this call only
    try:
        h = model.hidden(ids)
    finally:
        model.weight_hook = None
    if len(slots) != adapters.n_slots:
        raise GolfError(f"the model ran {len(slots)} virtual layers, the adapters have {adapters.n_slots} slots")
    return h


def chunk_nll(model, adapters: DocAdapters, x: Tensor, y: Tensor, offsets: Tensor, width: int) -> Tensor:
    """NLL (n, width) fp32 of targets ``y[i, offsets[i] + k]``, k < width (clamped to the row), through the
    adapted model and head: softcap(h Wᵀ + head(h)), cross-entropy over the full vocabulary (C2)."""
    h = adapted_hidden(model, adapters, x)  # (n, T, D)
    cols = (offsets[:, None] + torch.arange(width, device=x.device)).clamp(max=x.size(1) - 1)  # (n, width)
    hs = h.gather(1, cols[..., None].expand(-1, -1, h.size(-1)))  # (n, width, D)
    z = F.linear(hs, model.tok_emb.weight.to(hs.dtype)).float() + adapters.head(hs).float()
    cap = model.cfg.logit_softcap
    z = cap * torch.tanh(z / cap)
    return torch.logsumexp(z, -1) - z.gather(-1, y.gather(1, cols)[..., None]).squeeze(-1)


class CompiledChunkNll:
    """``chunk_nll`` compiled with dynamic shapes (``ttt_lora_compile``): a chunk's window length and width
    change from chunk to chunk, and its batch's document count at the last batch, without recompiling;
    a new batch's adapters are inputs, not constants. Grad and no-grad calls compile once each.

    Where inductor cannot compile a graph (torch 2.11 on an H100 fails an assertion in its fusion pass,
    bench/RESULTS.md), the evaluation goes on eager, with one warning: the scores are the same function's.
    ``fallback`` then holds the reason, for the result file."""

    def __init__(self, backend: str = "inductor"):
        self.compiled = torch.compile(chunk_nll, dynamic=True, backend=backend)
        self.fallback: str | None = None

    def __call__(self, *args):
        if self.fallback is None:
            try:
                return self.compiled(*args)
            except compile_errors() as err:  # while compiling, before any of this call's work: nothing to undo
                self.give_up(err, "forward")
        return chunk_nll(*args)

    def give_up(self, err: Exception, where: str) -> None:
        """Eager from now on; ``where``: the pass (forward or backward) whose graph failed to compile."""
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        self.fallback = f"{type(err).__name__} in the {where}: {first_line}"[:300]
        log.warning("ttt_lora_compile: torch.compile failed on the adapted %s (%s); the rest of the evaluation "
                    "runs eager", where, self.fallback)


def compile_errors() -> tuple[type[Exception], ...]:
    """What torch raises when a graph fails to compile (inductor's own, or any backend's)."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    return InductorError, BackendCompilerFailed


def compiled_chunk_nll(backend: str = "inductor") -> CompiledChunkNll:
    """The adapted forward for ``ttt_lora_compile``: compiled, eager where compiling fails."""
    return CompiledChunkNll(backend)


# --- one document batch ------------------------------------------------------------------------

def _warm_start(adapters: DocAdapters, warm_a: list[Tensor] | None) -> None:
    """``ttt_lora_keep_a`` (#1787): each adapter's A (row i: the batch's i-th document) from the previous
    batch's trained A; B stays zero, so every document still starts at the base model."""
    if warm_a is None:
        return
    with torch.no_grad():
        for lora, prev in zip((m for m in adapters.modules() if isinstance(m, BatchedLoRA)), warm_a):
            k = min(lora.A.size(0), prev.size(0))
            lora.A[:k] = prev[:k]


def _run_batch(model, tokens: Tensor, docs: np.ndarray, starts: np.ndarray, ends: np.ndarray, cfg: Config,
               n_slots: int, seed: int, acc, luts, record: TTTRecord | None, ids: StepIds, b: int,
               warm_a: list[Tensor] | None, bar, nll_fn: Callable) -> tuple[int, list[Tensor] | None]:
    """Score and adapt one batch of documents, chunk by chunk; returns the AdamW steps taken and the
    adapters' trained A (for the next batch, with ``ttt_lora_keep_a``). ``bar`` advances a chunk at a time;
    ``nll_fn``: ``chunk_nll`` or a compiled copy (``compiled_chunk_nll``)."""
    dev, T = tokens.device, tokens.numel() - 1
    C, L = cfg.ttt_lora_chunk, cfg.eval_seq_len
    s, n = starts[docs], ends[docs] - starts[docs]  # (k,) first target position and target count
    n_chunks = -(-n // C)
    adapters = DocAdapters(cfg, len(docs), n_slots, seed).to(dev)
    _warm_start(adapters, warm_a)
    opt = torch.optim.AdamW(adapters.parameters(), lr=cfg.ttt_lora_lr, betas=(0.0, cfg.ttt_lora_beta2), eps=1e-10,
                            weight_decay=cfg.ttt_lora_wd)
    first = ids.first[docs]
    steps = 0
    for ci in range(int(n_chunks.max())):
        active = ci < n_chunks
        c0 = np.where(active, ci * C, 0)
        c1 = np.where(active, np.minimum(c0 + C, n), 0)
        w0 = np.maximum(0, c1 - L)  # context: the document's own tokens, at most L
        width = int((c1 - c0).max())
        Tw = int((c1 - w0).max())
        j = torch.arange(Tw, device=dev)
        pos = torch.as_tensor(s + w0, device=dev)[:, None] + j  # (k, Tw) target positions
        valid = j < torch.as_tensor(c1 - w0, device=dev)[:, None]
        idx = pos.clamp(max=T - 1)
        x = torch.where(valid, tokens[idx], 0)
        y = torch.where(valid, tokens[idx + 1], 0)
        off = torch.as_tensor(c0 - w0, device=dev)
        k = torch.arange(width, device=dev)
        scored = k < torch.as_tensor(c1 - c0, device=dev)[:, None]  # (k, width)
        cols = (off[:, None] + k).clamp(max=Tw - 1)
        tgt_pos = idx.gather(1, cols)  # (k, width) target positions of the chunk (clamped where masked)
        train = active & (ci < n_chunks - 1)  # a step on the chunk follows, unless it was the document's last
        # One forward, with the adapters trained on chunks < ci, serves (1) the scores and (2) the step's
        # loss: the same numbers a separate scoring pass would give, at 3/4 of the work.
        with torch.set_grad_enabled(bool(train.any())):
            nll = nll_fn(model, adapters, x, y, off, width)
        with torch.no_grad():  # (1) score, before the step below changes the adapters
            _add_masked(acc, nll.detach(), x.gather(1, cols), y.gather(1, cols), scored, luts, tgt_pos + 1)
            if record is not None:
                m = scored.cpu().numpy()
                through = np.where(ci > 0, first + ci - 1, ids.before_batch[b])
                rows = np.nonzero(m)[0]
                record.note_scored(tgt_pos.cpu().numpy()[m], nll.detach().double().cpu().numpy()[m],
                                   (first + ci)[rows], through[rows])
        if bar is not None:
            bar.update(1)
        if not train.any():  # (2) one step on the chunk
            continue
        mask = scored & torch.as_tensor(train, device=dev)[:, None]

        def step_loss(nll: Tensor) -> Tensor:  # the mean NLL of each document's chunk, summed
            return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).sum()

        opt.zero_grad(set_to_none=True)
        try:
            step_loss(nll).backward()
        except compile_errors() as err:  # the compiled backward's graph compiles lazily, here
            if not isinstance(nll_fn, CompiledChunkNll):
                raise
            nll_fn.give_up(err, "backward")
            # the adapters are as they were for the forward: the eager loss is the same function's
            opt.zero_grad(set_to_none=True)
            step_loss(chunk_nll(model, adapters, x, y, off, width)).backward()
        opt.step()
        steps += 1
        if record is not None:
            m = mask.cpu().numpy()
            record.note_trained_at(tgt_pos.cpu().numpy()[m], (first + ci)[np.nonzero(m)[0]])
    keep = cfg.ttt_lora_keep_a  # the A of every slot is large (documents x rank x width): only when asked
    return steps, [m.A.detach() for m in adapters.modules() if isinstance(m, BatchedLoRA)] if keep else None


# --- the global phase of phased TTT --------------------------------------------------------------

def global_phase(model, tokens: Tensor, spans: list[tuple[int, int]], cfg: Config, record: TTTRecord | None,
                 step_id: int) -> int:
    """Global SGD on the base model over target spans [lo, hi) (whole, already scored documents).

    Rows of at most eval_seq_len targets, cut inside each span (attention never crosses a document);
    chunks of ``ttt_global_chunk_tokens`` targets with cosine lr; each chunk's rows shared over ranks,
    ``ttt_batch_seqs`` per step, gradients all-reduced then clipped (as ``eval_ttt``). Returns the steps.
    """
    info, dev, L = dist_info(), tokens.device, cfg.eval_seq_len
    W, r = info.world_size, info.rank
    rows = np.array([(a, min(a + L, hi)) for lo, hi in sorted(spans) for a in range(lo, hi, L)], np.int64)
    if rows.size == 0 or cfg.ttt_global_epochs == 0:
        return 0
    chunk_of = (np.cumsum(rows[:, 1] - rows[:, 0]) - (rows[:, 1] - rows[:, 0])) // cfg.ttt_global_chunk_tokens
    n_chunks = int(chunk_of[-1]) + 1
    params = [p for p in model.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=cfg.ttt_global_lr, momentum=cfg.ttt_global_momentum)
    B, steps, j = cfg.ttt_batch_seqs, 0, torch.arange(L, device=dev)
    t0 = time.perf_counter()
    try:
        for gi in range(n_chunks):
            chunk = rows[chunk_of == gi]
            for g in opt.param_groups:
                g["lr"] = cosine_lr(cfg.ttt_global_lr, gi, n_chunks)
            shares = [_share(len(chunk), q, W) for q in range(W)]
            lo, hi = shares[r]
            n_steps = max(-(-(q1 - q0) // B) for q0, q1 in shares)  # same on every rank
            if record is not None and hi > lo:
                record.note_trained_at(np.concatenate([np.arange(a, e) for a, e in chunk[lo:hi]]), step_id)
            for _ in range(cfg.ttt_global_epochs):
                for st in range(n_steps):
                    part = [chunk[min(q0 + st * B, q1):min(q0 + (st + 1) * B, q1)] for q0, q1 in shares]
                    mine, n_global = part[r], sum(int((c[:, 1] - c[:, 0]).sum()) for c in part)
                    opt.zero_grad(set_to_none=True)
                    if len(mine):
                        pos = torch.as_tensor(mine[:, 0], device=dev)[:, None] + j  # (b, L) target positions
                        valid = j < torch.as_tensor(mine[:, 1] - mine[:, 0], device=dev)[:, None]
                        idx = pos.clamp(max=tokens.numel() - 2)
                        x, y = torch.where(valid, tokens[idx], 0), torch.where(valid, tokens[idx + 1], 0)
                        nll = model(x, y, reduction="none")
                        (torch.where(valid, nll, 0).sum() / n_global).backward()
                    synced_step(opt, params, cfg.ttt_grad_clip)
                    steps += 1
    finally:
        for p, flag in zip(params, was):
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
    if dev.type == "cuda":  # the steps' kernels finished, not only queued
        torch.cuda.synchronize(dev)
    log.info("global SGD on %d scored document%s (%d rows): %d steps in %.1f s", len(spans), "s" * (len(spans) != 1),
             len(rows), steps, time.perf_counter() - t0)
    return steps


# --- the modes -----------------------------------------------------------------------------------

def check_config(cfg: Config) -> None:
    """The LoRA TTT keys against the model they adapt; golf evaluate runs it before loading anything."""
    if cfg.ttt_lora_chunk > cfg.eval_seq_len:
        raise GolfError(f"params key 'ttt_lora_chunk' ({cfg.ttt_lora_chunk}) must be at most eval_seq_len "
                        f"({cfg.eval_seq_len}): a chunk is scored inside one window")
    if cfg.ttt_lora_rank > cfg.model_dim:
        raise GolfError(f"params key 'ttt_lora_rank' ({cfg.ttt_lora_rank}) must be at most model_dim "
                        f"({cfg.model_dim}): a rank above the adapters' input width adds nothing")


def _doc_ttt(model, val_tokens: Tensor, luts, cfg: Config, n_phases: int, record: TTTRecord | None,
             progress: bool, mode: str, nll_fn: Callable | None) -> dict:
    t0, info, dev = time.perf_counter(), dist_info(), _device_of(model)
    W, r = info.world_size, info.rank
    check_config(cfg)
    _check_bytes(luts, cfg, val_tokens)
    luts, tokens = luts.to(dev), val_tokens.to(device=dev, dtype=torch.int64)
    acc = _accumulator(dev)
    starts, ends = document_spans(val_tokens)
    queue = document_queue(starts, ends, cfg.ttt_lora_batch_docs)
    phases = phase_points(queue, cfg.ttt_phase_docs, n_phases)
    ids = StepIds.build(queue, -(-(ends - starts) // cfg.ttt_lora_chunk), phases)
    n_slots = len(virtual_layers(cfg, model.looping))
    mine = [b for b in range(len(queue)) if b % W == r]
    log.info("eval %s: %d document%s in %d batch%s of up to %d (%d on this rank), chunks of %d tokens, LoRA rank %d "
             "on each of %d virtual layers (a looped layer once a pass)%s", mode, len(starts), "s" * (len(starts) != 1),
             len(queue), "es" * (len(queue) != 1), cfg.ttt_lora_batch_docs, len(mine), cfg.ttt_lora_chunk,
             cfg.ttt_lora_rank, n_slots, f"; global SGD after documents {[n for _, n in phases]}" if phases else "")
    queue_order = np.concatenate(queue)
    was_trainable = [p.requires_grad for p in model.parameters()]
    lora_steps = global_steps = 0
    warm_a = None  # ttt_lora_keep_a: this rank's last trained A (earlier, already scored documents only)
    # a chunk of every document in a batch at a time: the longest document's chunk count a batch
    chunks = [int(-(-(ends[queue[b]] - starts[queue[b]]).max() // cfg.ttt_lora_chunk)) for b in mine]
    bar = progress_bar(sum(chunks), f"eval {mode}", progress, "chunk")
    try:
        for b, docs in enumerate(queue):
            if b % W == r:
                for p in model.parameters():
                    p.requires_grad_(False)  # only the adapters train
                steps, trained_a = _run_batch(model, tokens, docs, starts, ends, cfg, n_slots,
                                              hash((cfg.seed, b)) & (2**63 - 1), acc, luts, record, ids, b,
                                              warm_a, bar, nll_fn or chunk_nll)
                lora_steps += steps
                warm_a = trained_a  # None unless ttt_lora_keep_a
            for (after, n_docs), step_id in zip(phases, ids.phase):
                if after == b:
                    done = queue_order[:n_docs]  # scored: in batches ≤ b, on every rank
                    bar.set_postfix_str(f"global SGD on {n_docs} documents")  # the chunk count stands still
                    global_steps += global_phase(model, tokens, [(starts[d], ends[d]) for d in done], cfg, record,
                                                 step_id)
                    bar.set_postfix_str("")
    finally:
        bar.close()
        for p, flag in zip(model.parameters(), was_trainable):
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
    if record is not None:
        record.merge_ranks(dev)
    return _finish(acc, t0, mode, n_docs=len(starts), n_batches=len(queue), lora_steps=lora_steps,
                   phase_docs=[n for _, n in phases], global_steps=global_steps)


def eval_lora_ttt(model, val_tokens: Tensor, luts, cfg: Config, record: TTTRecord | None = None,
                  progress: bool = True, nll_fn: Callable | None = None) -> dict:
    """Per-document LoRA TTT (#1530): every document scored chunk by chunk with its own adapters,
    each chunk scored before the step that trains on it; ``model`` is left unchanged. ``nll_fn``: the
    adapted forward, ``chunk_nll`` (eager, the default) or ``compiled_chunk_nll()``."""
    return _doc_ttt(model, val_tokens, luts, cfg, 0, record, progress, "lora_ttt", nll_fn)


def eval_phased_ttt(model, val_tokens: Tensor, luts, cfg: Config, record: TTTRecord | None = None,
                    progress: bool = True, nll_fn: Callable | None = None) -> dict:
    """Phased TTT (#1610, #1626): LoRA TTT, with ``ttt_phases`` pauses for global SGD of ``model`` itself
    (the caller passes a fresh copy) on the first ``ttt_phase_docs`` documents once they are scored."""
    return _doc_ttt(model, val_tokens, luts, cfg, cfg.ttt_phases, record, progress, "phased_ttt", nll_fn)
