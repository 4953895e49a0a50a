"""What every scoring mode shares (docs/record.md §6, §8.6, §10): the geometry of what is scored
(sliding windows, TTT chunks, documents and their queue), each rank's share, the float64 totals, and
``TTTRecord``, which checks score-first TTT's legality (Issue #1017's C1, C3, C4) rather than trusting it.

``val_tokens`` holds N = T + 1 tokens; target position p in [0, T) is token p + 1 predicted from 0..p.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from golf.config import Config
from golf.model import BOS_ID
from golf.runtime import GolfError, all_reduce_, dist_info

log = logging.getLogger("golf")


# --- windows and chunks (§6.2, §6.3) -----------------------------------------------------------

def count_windows(total_tokens: int, seq_len: int = 2048, stride: int = 64) -> int:
    """Number of sliding windows: starts k·stride kept while k·stride + (seq_len − stride) < T.

    At least one window when T ≥ 1, so that a stream shorter than the context is still scored
    (the record's filter would keep none there; at full scale the two agree: 633,409 windows).
    """
    if not 0 < stride <= seq_len:
        raise ValueError(f"eval_stride must be in [1, {seq_len}], got {stride}")
    if total_tokens <= 0:
        return 0
    context = seq_len - stride
    return max(1, -(-(total_tokens - context) // stride))


def sliding_windows(total_tokens: int, seq_len: int = 2048, stride: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(starts, first_scored_offsets): window k covers targets [k·stride, min(k·stride + seq_len, T)).

    Window 0 scores all its positions, later windows the positions from offset seq_len − stride on,
    so the scored ranges tile [0, T) exactly once.
    """
    n = count_windows(total_tokens, seq_len, stride)
    starts = np.arange(n, dtype=np.int64) * stride
    offsets = np.where(starts == 0, 0, seq_len - stride).astype(np.int64)
    return starts, offsets


def ttt_chunks(total_tokens: int, chunk_tokens: int) -> int:
    return -(-total_tokens // chunk_tokens)


def window_chunk(ws, s, chunk_tokens: int, n_chunks: int):
    """The TTT chunk a window belongs to: the one holding its first scored position (§6.3)."""
    return np.minimum((np.asarray(ws) + np.asarray(s)) // chunk_tokens, n_chunks - 1)


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    return n * rank // world, n * (rank + 1) // world


@dataclass
class TTTRecord:
    """Per target position: when it was scored, by which weights, and which chunk trained on it.

    ``scored_at_chunk``: chunk being processed when p was scored (-1 never); ``trained_through_chunk``:
    last chunk the weights had been trained on at that moment (-1 none); ``trained_in_chunk``: the
    first chunk whose TTT step used p as a target (-1 never); ``score_count``; ``scored_with_grad``: 1 if
    autograd was on while scoring; ``nll``: the scored NLL (nan if unscored). After ``eval_*`` under
    torchrun every rank holds the merged record. Chunk ids are one total order of training steps
    (§10.1): a position trained more than once keeps its first step, the one the checks need.
    """
    total_tokens: int
    scored_at_chunk: np.ndarray = field(init=False)
    trained_through_chunk: np.ndarray = field(init=False)
    trained_in_chunk: np.ndarray = field(init=False)
    score_count: np.ndarray = field(init=False)
    scored_with_grad: np.ndarray = field(init=False)
    nll: np.ndarray = field(init=False)

    def __post_init__(self):
        T = self.total_tokens
        self.scored_at_chunk = np.full(T, -1, np.int32)
        self.trained_through_chunk = np.full(T, -1, np.int32)
        self.trained_in_chunk = np.full(T, -1, np.int32)
        self.score_count = np.zeros(T, np.int32)
        self.scored_with_grad = np.zeros(T, np.int32)
        self.nll = np.full(T, np.nan, np.float64)

    def note_scored(self, pos: np.ndarray, nll: np.ndarray, chunk: int, trained_through: int) -> None:
        np.add.at(self.score_count, pos, 1)
        self.scored_at_chunk[pos] = chunk
        self.trained_through_chunk[pos] = trained_through
        self.scored_with_grad[pos] |= int(torch.is_grad_enabled())
        self.nll[pos] = nll

    def note_trained(self, lo: int, hi: int, chunk: int) -> None:
        self.note_trained_at(np.arange(lo, hi), chunk)

    def note_trained_at(self, pos: np.ndarray, chunk) -> None:
        """Step ``chunk`` (an int, or one per position) used targets ``pos``; the first step is kept."""
        cur = self.trained_in_chunk[pos]
        self.trained_in_chunk[pos] = np.where(cur >= 0, np.minimum(cur, chunk), chunk)

    def merge_ranks(self, device: torch.device) -> None:
        """Combine the ranks' partial records: counts add, chunk indices take the max (-1 = none), except
        ``trained_in_chunk``, the first step over all ranks that trained on the position."""
        if dist_info().world_size == 1:
            return
        for name, op in (("score_count", "sum"), ("scored_with_grad", "max"), ("scored_at_chunk", "max"),
                         ("trained_through_chunk", "max")):
            t = torch.from_numpy(getattr(self, name)).to(device)
            setattr(self, name, all_reduce_(t, op).cpu().numpy())
        never = np.iinfo(np.int32).max
        first = torch.from_numpy(np.where(self.trained_in_chunk >= 0, self.trained_in_chunk, never)).to(device)
        first = (-all_reduce_(-first, "max")).cpu().numpy()  # a min: all_reduce_ has sum, max and avg
        self.trained_in_chunk = np.where(first == never, -1, first).astype(np.int32)
        nll = torch.from_numpy(np.nan_to_num(self.nll, nan=0.0)).to(device)
        self.nll = all_reduce_(nll, "sum").cpu().numpy()
        self.nll[self.score_count == 0] = np.nan

    def check(self) -> None:
        """Raise AssertionError at the first position that breaks C4 (once) or C3/C1 (score first)."""
        bad = np.flatnonzero(self.score_count != 1)
        if bad.size:
            p = int(bad[0])
            raise AssertionError(f"C4: target position {p} scored {int(self.score_count[p])} times "
                                 f"({bad.size} positions not scored exactly once)")
        bad = np.flatnonzero(self.scored_with_grad)
        if bad.size:
            raise AssertionError(f"C3: target position {int(bad[0])} scored with autograd on")
        trained = self.trained_in_chunk >= 0
        bad = np.flatnonzero(trained & (self.trained_through_chunk >= self.trained_in_chunk))
        if bad.size:
            p = int(bad[0])
            raise AssertionError(
                f"C3: target position {p} was scored (at chunk {int(self.scored_at_chunk[p])}) by weights trained "
                f"through chunk {int(self.trained_through_chunk[p])}, which includes chunk "
                f"{int(self.trained_in_chunk[p])} whose training targets contain it")
        bad = np.flatnonzero(trained & (self.scored_at_chunk > self.trained_in_chunk))
        if bad.size:
            p = int(bad[0])
            raise AssertionError(f"C3: target position {p} trained on in chunk {int(self.trained_in_chunk[p])} "
                                 f"before being scored in chunk {int(self.scored_at_chunk[p])}")


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def accumulator(device: torch.device):
    from golf.bpb import BPBAccumulator

    return BPBAccumulator(device)


def check_bytes(luts, cfg: Config, val_tokens: Tensor) -> None:
    """The byte counts fit the data: CaseOps data needs its sidecar, as long as the val stream."""
    from golf.bpb import SidecarBytes
    from golf.val_stream import is_caseops

    if isinstance(luts, SidecarBytes):
        if luts.counts.numel() != val_tokens.numel():
            raise GolfError(f"the byte sidecar holds {luts.counts.numel()} entries for {val_tokens.numel()} val "
                            "tokens; build both from the same folder (golf.bpb.eval_byte_counts)")
    elif is_caseops(cfg.data_dir):
        raise GolfError(f"{cfg.data_dir!r} holds CaseOps data, whose BPB counts the original bytes of its byte "
                        "sidecar, not the tokenizer's byte tables; pass golf.bpb.eval_byte_counts(cfg, val_tokens)")


def finish(acc, t0: float, mode: str, **extra) -> dict:
    acc.all_reduce()
    seconds = time.perf_counter() - t0
    log.info("eval %s: %.1fs", mode, seconds)
    return {**acc.result(), "seconds": seconds, **extra}


def add_masked(acc, nll: Tensor, prev: Tensor, tgt: Tensor, mask: Tensor, luts, tgt_pos: Tensor) -> None:
    """``acc.add`` of the positions where ``mask`` holds, without boolean indexing.

    Indexing by a mask needs its count on the host, a device sync per batch; masked sums let the
    host queue batch after batch. Same float64 sums as ``BPBAccumulator.add`` (spec §1.7).
    """
    from golf.bpb import token_bytes

    m = mask.to(torch.float64)
    acc.sums += torch.stack((torch.where(mask, nll, 0).to(torch.float64).sum(), m.sum(),
                             (token_bytes(luts, prev, tgt, tgt_pos).to(torch.float64) * m).sum()))


def cosine_lr(base: float, i: int, n: int) -> float:
    """Learning rate of chunk i of n TTT chunks: cosine from ``base`` down to 0 at the last (§6.3)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * i / max(n - 1, 1)))


# --- documents and their queue (§8.6) ----------------------------------------------------------

def document_spans(val_tokens: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends): document d owns target positions [starts[d], ends[d]); together they tile [0, T)."""
    T = val_tokens.numel() - 1
    if T < 1:
        raise GolfError("the val stream holds no target to score")
    bos = torch.nonzero(val_tokens[1:T].cpu() == BOS_ID).flatten().numpy() + 1  # a BOS at p starts a document
    starts = np.concatenate(([0], bos)).astype(np.int64)
    return starts, np.append(starts[1:], T).astype(np.int64)


def document_queue(starts: np.ndarray, ends: np.ndarray, batch_docs: int) -> list[tuple[int, np.ndarray]]:
    """#1855's queue: documents sorted by length, shortest first (ties: stream order), cut into batches of
    ``batch_docs``; the batches then run longest first (by their longest document, ties: cut order), so
    the one partial batch, of the longest documents, runs first. Each entry: (its index in the cut, its
    documents)."""
    lens = ends - starts
    order = np.argsort(lens, kind="stable")
    cut = [order[i:i + batch_docs] for i in range(0, len(order), batch_docs)]
    run = sorted(range(len(cut)), key=lambda i: -int(lens[cut[i]].max()))
    return [(i, cut[i]) for i in run]


def phase_points(queue: list[tuple[int, np.ndarray]], phase_docs: int, n_phases: int,
                 world: int = 1) -> list[tuple[int, int]]:
    """(after batch b, the phase's document count n) for each global phase; empty without phases.

    #1855 pauses for phase g once its ranks together have scored ``min(phase_docs, documents)·g /
    n_phases`` documents, checking after each batch; golf's ranks take the queue in rounds of ``world``
    batches and check after each round, which is #1855's order exactly on one rank (§8.7)."""
    n_docs = sum(len(d) for _, d in queue)
    limit = min(phase_docs, n_docs)
    if n_phases == 0 or limit == 0:
        return []
    bounds = [limit * (g + 1) // n_phases for g in range(n_phases)]
    out, done = [], 0
    for t in range(0, len(queue), world):
        done += sum(len(d) for _, d in queue[t:t + world])
        if len(out) < len(bounds) and done >= bounds[len(out)]:
            out.append((min(t + world, len(queue)) - 1, bounds[len(out)]))
    if out and out[-1][0] >= len(queue) - 1:
        log.warning("phased TTT: the last global phase comes after the last document batch, so it changes "
                    "no score (%d document%s in batches of up to %d): lower ttt_phase_docs and ttt_lora_batch_docs, "
                    "or score more documents (max_val_tokens)", n_docs, "s" * (n_docs != 1),
                    max(len(d) for _, d in queue))
    return out


def phase_documents(queue: list[tuple[int, np.ndarray]], after: int, n: int) -> np.ndarray:
    """The documents a phase after batch ``after`` trains on: of those scored so far, ordered by (index in
    the cut, place in the batch) as #1855 gathers them, the first ``n``."""
    done = sorted((i, pos, int(d)) for i, docs in queue[:after + 1] for pos, d in enumerate(docs))
    return np.array([d for _, _, d in done[:n]], np.int64)
