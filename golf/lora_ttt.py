"""Per-document LoRA TTT (#1530; retuned in #1767/#1787/#1855) and phased global TTT (#1610/#1626), as
#1855 runs them (docs/record.md §8.6, §8.7).

Each document is scored in chunks from its own tokens only, through LoRA adapters that take one AdamW
step after each chunk is scored; phased TTT pauses to train the base model on documents already
scored. The base model is reached only through ``GPT.hidden``'s ``weight_hook``. Legality goes through
the same ``TTTRecord`` as ``eval_ttt`` (§10.1): one step id per document chunk and per phase.
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
from golf.compile_policy import compile_errors
from golf.scoring import (TTTRecord, accumulator, add_masked, check_bytes, cosine_lr, device_of, document_queue,
                          document_spans, finish, phase_documents, phase_points, share)
from golf.layer_plan import virtual_layers
from golf.runtime import GolfError, all_reduce_, dist_info, progress_bar

log = logging.getLogger("golf")


@dataclass
class StepIds:
    """One total order of training steps for ``TTTRecord``: every chunk of every document, in queue
    order, and each global phase right after the batch it follows."""
    first: np.ndarray  # [n_docs] id of the document's chunk 0; chunk ci has first + ci
    phase: list[int]  # id of each global phase
    before_batch: np.ndarray  # [n_batches] last phase id before the batch (-1 none)

    @classmethod
    def build(cls, queue: list[tuple[int, np.ndarray]], n_chunks: np.ndarray, phases: list[tuple[int, int]]) -> "StepIds":
        first = np.full(n_chunks.size, -1, np.int64)
        phase, before, nxt, last = [], np.full(len(queue), -1, np.int64), 0, -1
        for b, (_, docs) in enumerate(queue):
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
        self.bound = 1.0 / math.sqrt(d_in)
        self.A = nn.Parameter(torch.empty(n, rank, d_in).uniform_(-self.bound, self.bound, generator=gen))
        self.B = nn.Parameter(torch.zeros(n, d_out, rank))  # zero: the adapter starts as the identity
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.A.transpose(1, 2).to(x.dtype)) @ self.B.transpose(1, 2).to(x.dtype) * self.scale


class DocAdapters(nn.Module):
    """All adapters of one document batch: per virtual-layer slot Q, K, V, attention-out and MLP-out,
    plus the LM head (#1530's set). A is drawn from ``gen`` in #1855's order: head, then Q, V, K, MLP
    and attention-out, each over the slots."""

    def __init__(self, cfg: Config, n_docs: int, n_slots: int, gen: torch.Generator):
        super().__init__()
        D, KV, r = cfg.model_dim, cfg.kv_dim, cfg.ttt_lora_rank
        scale = (cfg.ttt_lora_alpha or r) / r

        def make(d_out: int) -> nn.ModuleList:
            return nn.ModuleList(BatchedLoRA(n_docs, D, d_out, r, scale, gen) for _ in range(n_slots))

        self.n_docs, self.n_slots = n_docs, n_slots
        self.head = BatchedLoRA(n_docs, D, cfg.vocab_size, r, scale, gen)
        self.q, self.v, self.k, self.mlp, self.o = make(D), make(KV), make(KV), make(D), make(D)

    def loras(self) -> list[BatchedLoRA]:
        return [self.head, *self.q, *self.v, *self.k, *self.mlp, *self.o]  # the draw order

    @torch.no_grad()
    def reset(self, gen: torch.Generator, keep_a: bool) -> None:
        """Ready for the next batch: B zero; A drawn anew unless ``keep_a`` (``ttt_lora_keep_a``, #1767), which
        keeps the A trained on the earlier batches."""
        for lora in self.loras():
            if not keep_a:  # drawn on the CPU, as at construction
                lora.A.copy_(torch.empty(lora.A.shape).uniform_(-lora.bound, lora.bound, generator=gen))
            lora.B.zero_()

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


def compiled_chunk_nll(backend: str = "inductor") -> CompiledChunkNll:
    """The adapted forward for ``ttt_lora_compile``: compiled, eager where compiling fails."""
    return CompiledChunkNll(backend)


# --- one document batch ------------------------------------------------------------------------

def _run_batch(model, tokens: Tensor, docs: np.ndarray, starts: np.ndarray, ends: np.ndarray, cfg: Config,
               adapters: DocAdapters, acc, luts, record: TTTRecord | None, ids: StepIds, b: int, through: int, bar,
               nll_fn: Callable) -> int:
    """Score and adapt one batch of documents, chunk by chunk, with ``adapters`` (B zero); returns the AdamW
    steps taken. ``through``: the last training step the adapters and base model hold before this batch
    (legality record). ``bar`` advances a chunk at a time; ``nll_fn``: ``chunk_nll`` or a compiled copy."""
    dev, T = tokens.device, tokens.numel() - 1
    C, L = cfg.ttt_lora_chunk, cfg.eval_seq_len
    s, n = starts[docs], ends[docs] - starts[docs]  # (k,) first target position and target count
    n_chunks = -(-n // C)
    # a fresh AdamW is #1855's reused one with its state zeroed
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
            add_masked(acc, nll.detach(), x.gather(1, cols), y.gather(1, cols), scored, luts, tgt_pos + 1)
            if record is not None:
                m = scored.cpu().numpy()
                through_now = np.where(ci > 0, first + ci - 1, through)
                rows = np.nonzero(m)[0]
                record.note_scored(tgt_pos.cpu().numpy()[m], nll.detach().double().cpu().numpy()[m],
                                   (first + ci)[rows], through_now[rows])
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
    return steps


# --- the global phase of phased TTT --------------------------------------------------------------

def global_phase(model, tokens: Tensor, spans: list[tuple[int, int]], cfg: Config, record: TTTRecord | None,
                 step_id: int) -> int:
    """Global SGD of the base model on whole scored documents, as #1855's (§8.7). Returns the steps.

    ``spans``: (first, end) target positions of each document, in #1855's order; its tokens, BOS to the
    next document's BOS, are laid end to end. That stream is cut into chunks of ``ttt_global_chunk_tokens``
    with a cosine lr, the last chunk never trained; each chunk's whole eval_seq_len sequences are shared
    over ranks, ``ttt_batch_seqs`` a step, as one packed row under ``attention_mask: document`` (segments
    at BOS and every eval_seq_len tokens), else as rows; gradients averaged over ranks, then clipped.
    """
    if not spans:
        return 0
    info, dev, L = dist_info(), tokens.device, cfg.eval_seq_len
    W, r = info.world_size, info.rank
    stream = torch.cat([tokens[a:e + 1] for a, e in spans])
    where = np.concatenate([np.arange(a, e + 1) for a, e in spans])  # the stream's positions in the val stream
    C, B = cfg.ttt_global_chunk_tokens, cfg.ttt_batch_seqs
    n_chunks, seqs = -(-(stream.numel() - 1) // C), cfg.ttt_global_chunk_tokens // L
    params = list(model.parameters())
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=cfg.ttt_global_lr, momentum=cfg.ttt_global_momentum)
    segment_len, model.segment_len = model.segment_len, L
    steps, t0 = 0, time.perf_counter()
    lo, hi = share(seqs, r, W)
    n_steps = max(-(-(q1 - q0) // B) for q0, q1 in (share(seqs, q, W) for q in range(W)))  # same on every rank
    try:
        for ci in range(n_chunks - 1 if seqs else 0):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(cfg.ttt_global_lr, ci, n_chunks)
            for _ in range(cfg.ttt_global_epochs):
                for st in range(n_steps):
                    a, e = min(lo + st * B, hi), min(lo + (st + 1) * B, hi)
                    opt.zero_grad(set_to_none=True)
                    if e > a:
                        t0_, t1_ = ci * C + a * L, ci * C + e * L  # inputs [t0_, t1_), targets one on
                        x, y = stream[t0_:t1_], stream[t0_ + 1:t1_ + 1]
                        rows = (x[None], y[None]) if model.document_mask else (x.view(-1, L), y.view(-1, L))
                        model(*rows).backward()
                        if record is not None:  # the targets that are the val stream's (not a BOS laid after one)
                            p = where[t0_:t1_]
                            record.note_trained_at(p[where[t0_ + 1:t1_ + 1] == p + 1], step_id)
                    for p in params:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                        all_reduce_(p.grad, "avg")  # a zero gradient leaves SGD's momentum and weights as None would
                    if cfg.ttt_grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.ttt_grad_clip)
                    opt.step()
                    steps += 1
    finally:
        model.segment_len = segment_len
        for p, flag in zip(params, was):
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
    if dev.type == "cuda":  # the steps' kernels finished, not only queued
        torch.cuda.synchronize(dev)
    log.info("global SGD on %d scored document%s (%d tokens): %d steps in %.1f s", len(spans),
             "s" * (len(spans) != 1), stream.numel(), steps, time.perf_counter() - t0)
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
    t0, info, dev = time.perf_counter(), dist_info(), device_of(model)
    W, r = info.world_size, info.rank
    check_config(cfg)
    check_bytes(luts, cfg, val_tokens)
    luts, tokens = luts.to(dev), val_tokens.to(device=dev, dtype=torch.int64)
    acc = accumulator(dev)
    starts, ends = document_spans(val_tokens)
    queue = document_queue(starts, ends, cfg.ttt_lora_batch_docs)
    phases = phase_points(queue, cfg.ttt_phase_docs, n_phases, W)
    ids = StepIds.build(queue, -(-(ends - starts) // cfg.ttt_lora_chunk), phases)
    n_slots = len(virtual_layers(cfg, model.looping))
    mine = [b for b in range(len(queue)) if b % W == r]  # rounds of W batches, one each
    log.info("eval %s: %d document%s in %d batch%s of up to %d (%d on this rank), chunks of %d tokens, LoRA rank %d "
             "on each of %d virtual layers (a looped layer once a pass)%s", mode, len(starts), "s" * (len(starts) != 1),
             len(queue), "es" * (len(queue) != 1), cfg.ttt_lora_batch_docs, len(mine), cfg.ttt_lora_chunk,
             cfg.ttt_lora_rank, n_slots, f"; global SGD after documents {[n for _, n in phases]}" if phases else "")
    was_trainable = [p.requires_grad for p in model.parameters()]
    lora_steps = global_steps = 0
    # #1855's adapters: A from one generator seeded alike on every rank; one full-size set reused batch after
    # batch (with ttt_lora_keep_a its A stays trained), a fresh set for a partial batch, a new full-size set
    # after each global phase
    gen = torch.Generator().manual_seed(cfg.seed)
    full = DocAdapters(cfg, cfg.ttt_lora_batch_docs, n_slots, gen).to(dev)
    full_through = -1  # the last step whose training the full-size set's A holds
    last_phase = -1
    chunks = [int(-(-(ends[queue[b][1]] - starts[queue[b][1]]).max() // cfg.ttt_lora_chunk)) for b in mine]
    bar = progress_bar(sum(chunks), f"eval {mode}", progress, "chunk")
    try:
        for b, (_, docs) in enumerate(queue):
            if b % W == r:
                for p in model.parameters():
                    p.requires_grad_(False)  # only the adapters train
                if len(docs) == full.n_docs:
                    full.reset(gen, cfg.ttt_lora_keep_a)
                    adapters = full
                    through = max(last_phase, full_through) if cfg.ttt_lora_keep_a else last_phase
                else:
                    adapters, through = DocAdapters(cfg, len(docs), n_slots, gen).to(dev), last_phase
                lora_steps += _run_batch(model, tokens, docs, starts, ends, cfg, adapters, acc, luts, record, ids, b,
                                         through, bar, nll_fn or chunk_nll)
                if adapters is full:
                    full_through = int((ids.first[docs] - (-(ends[docs] - starts[docs]) // cfg.ttt_lora_chunk) - 1).max())
            for (after, n_docs), step_id in zip(phases, ids.phase):
                if after == b:
                    done = phase_documents(queue, after, n_docs)  # scored: in batches ≤ b, on every rank
                    bar.set_postfix_str(f"global SGD on {n_docs} documents")  # the chunk count stands still
                    global_steps += global_phase(model, tokens, [(starts[d], ends[d]) for d in done], cfg, record,
                                                 step_id)
                    bar.set_postfix_str("")
                    full = DocAdapters(cfg, cfg.ttt_lora_batch_docs, n_slots, gen).to(dev)
                    last_phase, full_through = step_id, -1
    finally:
        bar.close()
        for p, flag in zip(model.parameters(), was_trainable):
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
    if record is not None:
        record.merge_ranks(dev)
    return finish(acc, t0, mode, n_docs=len(starts), n_batches=len(queue), lora_steps=lora_steps,
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
