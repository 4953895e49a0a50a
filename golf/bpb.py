"""Bits per byte: the byte-count tables and the accumulator (spec §1.6-1.7).

BPB charges each target token the UTF-8 bytes it adds to the decoded text:
- control, unknown and unused ids (pad, BOS, EOS, UNK) add 0 bytes and are *boundaries*;
- a byte-fallback piece ``<0xNN>`` adds 1 byte;
- a normal piece adds the UTF-8 length of its text without a leading "▁", plus 1 byte for
  that "▁" (a space) unless the previous token is a boundary: after BOS the space is not
  printed, since SentencePiece (add_dummy_prefix=False, extra whitespace removed) never starts
  a document with one.
``tests/test_bpb.py`` proves the identity: bytes charged == UTF-8 bytes of the decoded documents.

``BPB = Σ NLL / (ln 2 · N_bytes)``, summed in float64 and all-reduced across ranks. BOS targets
cost 0 bytes but their NLL still counts (the challenge's definition).

CaseOps data (spec §8) is tokenized from transformed text, so the tables would count the wrong
bytes: there ``SidecarBytes`` stands in for ``ByteLUTs`` and charges each target token the
original UTF-8 bytes the val byte sidecar records for its position in the val stream.
``eval_byte_counts`` picks the one that fits the data folder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from golf.runtime import GolfError, all_reduce_

SPACE_PIECE = "\u2581"  # "▁", SentencePiece's visible space


@dataclass(frozen=True)
class ByteLUTs:
    base_bytes: torch.Tensor  # [V] int16: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: torch.Tensor  # [V] bool: the piece starts with "▁"
    is_boundary: torch.Tensor  # [V] bool: control / unknown / unused ids

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.numel())

    def to(self, device: torch.device | str) -> "ByteLUTs":
        return ByteLUTs(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))


def build_byte_luts(sp_or_path: spm.SentencePieceProcessor | str | Path, vocab_size: int) -> ByteLUTs:
    """The three tables of spec §1.6, sized ``vocab_size`` (ids beyond the model count as unused).

    Keeps #1493's check, dropped by #1533 (spec §9.17): "▁" must have its own id, otherwise a
    lone space would be spelled in byte pieces and the leading-space rule would not hold.
    """
    name = str(sp_or_path) if isinstance(sp_or_path, (str, Path)) else "the given SentencePiece model"
    sp = spm.SentencePieceProcessor(model_file=str(sp_or_path)) if isinstance(sp_or_path, (str, Path)) else sp_or_path
    n = sp.get_piece_size()
    if n > vocab_size:
        raise GolfError(f"tokenizer {name} has {n} pieces, more than vocab_size {vocab_size}")
    space_id = sp.piece_to_id(SPACE_PIECE)
    if space_id == sp.unk_id() or sp.id_to_piece(space_id) != SPACE_PIECE:
        raise GolfError(f"tokenizer {name} has no piece of its own for '▁' (U+2581); "
                        "BPB byte counting needs one (spec §1.6, Issue #897)")
    base = [0] * vocab_size
    space = [False] * vocab_size
    boundary = [True] * vocab_size
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_PIECE):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUTs(torch.tensor(base, dtype=torch.int16), torch.tensor(space, dtype=torch.bool),
                    torch.tensor(boundary, dtype=torch.bool))


@dataclass(frozen=True)
class SidecarBytes:
    """CaseOps: the original UTF-8 bytes of each val token (``golf.val_stream.load_val_bytes``)."""
    counts: torch.Tensor  # [N] int32, aligned with the val stream: token i accounts for counts[i] bytes

    def to(self, device: torch.device | str) -> "SidecarBytes":
        return SidecarBytes(self.counts.to(device))


def eval_byte_counts(cfg, val_tokens: torch.Tensor) -> ByteLUTs | SidecarBytes:
    """What BPB charges on ``cfg.data_dir``'s val stream ``val_tokens`` (from ``load_val_tokens``):
    its byte sidecar for CaseOps data (prepare.json says so, nothing to configure), else the tables."""
    from golf.val_stream import load_val_bytes

    counts = load_val_bytes(cfg.data_dir, val_tokens.numel())
    return build_byte_luts(cfg.tokenizer_path, cfg.vocab_size) if counts is None else SidecarBytes(counts)


def token_bytes(luts: ByteLUTs | SidecarBytes, prev_ids: torch.Tensor, tgt_ids: torch.Tensor,
                tgt_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Bytes charged for each target given the token before it (same shapes; int64).

    With ``SidecarBytes`` the charge goes by ``tgt_pos``, the targets' indices in the val stream.
    """
    if isinstance(luts, SidecarBytes):
        if tgt_pos is None:
            raise ValueError("SidecarBytes charge by position in the val stream: pass tgt_pos")
        return luts.counts[tgt_pos].to(torch.int64)
    extra = luts.has_leading_space[tgt_ids] & ~luts.is_boundary[prev_ids]
    return luts.base_bytes[tgt_ids].to(torch.int64) + extra.to(torch.int64)


class BPBAccumulator:
    """Float64 sums of NLL, tokens and bytes; ``all_reduce`` adds them up over ranks (spec §1.7)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # [Σ nll, n_tokens, n_bytes]

    @torch.no_grad()
    def add(self, nll: torch.Tensor, prev_ids: torch.Tensor, tgt_ids: torch.Tensor, luts: ByteLUTs | SidecarBytes,
            tgt_pos: torch.Tensor | None = None) -> None:
        """``nll``: per-token NLL in nats, any shape matching ``prev_ids`` / ``tgt_ids`` (and ``tgt_pos``,
        the targets' indices in the val stream, which ``SidecarBytes`` needs)."""
        if nll.shape != tgt_ids.shape or prev_ids.shape != tgt_ids.shape:
            raise ValueError(f"shapes differ: nll {tuple(nll.shape)}, prev {tuple(prev_ids.shape)}, "
                             f"tgt {tuple(tgt_ids.shape)}")
        self.sums[0] += nll.detach().to(torch.float64).sum()
        self.sums[1] += nll.numel()
        self.sums[2] += token_bytes(luts, prev_ids, tgt_ids, tgt_pos).sum().to(torch.float64)

    def all_reduce(self) -> "BPBAccumulator":
        all_reduce_(self.sums, "sum")
        return self

    def result(self) -> dict[str, float | int]:
        loss_sum, n_tokens, n_bytes = (float(v) for v in self.sums.cpu())
        if n_tokens == 0 or n_bytes == 0:
            raise GolfError(f"BPB over nothing: {int(n_tokens)} tokens, {int(n_bytes)} bytes")
        return {"val_loss": loss_sum / n_tokens, "val_bpb": loss_sum / (math.log(2) * n_bytes),
                "n_tokens": int(n_tokens), "n_bytes": int(n_bytes)}
