"""The validation stream every evaluation reads (§1.4), and CaseOps' val byte sidecars (§8.4).

A CaseOps folder holds ``fineweb_val_bytes_%06d.bin`` beside each val shard, in the shard format:
the original UTF-8 bytes of each val token, which BPB charges instead of the token's own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from golf.data_binding import read_prepare_meta
from golf.runtime import GolfError
from golf.shards import list_shards, read_checked_shard, read_shard, read_shard_header


def load_val_tokens(data_dir: str | Path, seq_len: int, max_tokens: int = 0,
                    vocab_size: int | None = None) -> torch.Tensor:
    """All val shards in sorted order, concatenated, cut to ``1 + seq_len*floor((N-1)/seq_len)`` tokens.

    ``max_tokens > 0`` first caps N (demo runs); the record uses the whole stream (spec §1.4).
    ``vocab_size``: check every id of each shard read against it (``ShardError`` naming the file).
    """
    parts, total = [], 0
    for f in list_shards(data_dir, "val"):
        tokens = read_shard(f) if vocab_size is None else read_checked_shard(f, vocab_size)
        if max_tokens > 0:
            tokens = tokens[: max_tokens - total]
        parts.append(np.asarray(tokens, dtype=np.int64))
        total += len(tokens)
        if max_tokens > 0 and total >= max_tokens:
            break
    stream = parts[0] if len(parts) == 1 else np.concatenate(parts)
    usable = (len(stream) - 1) // seq_len * seq_len
    _check_val_length(data_dir, seq_len, max_tokens, len(stream))
    return torch.from_numpy(stream[: usable + 1])


def _check_val_length(data_dir: str | Path, seq_len: int, max_tokens: int, kept: int) -> None:
    if (kept - 1) // seq_len <= 0:
        held = (f"params key 'max_val_tokens' ({max_tokens}) keeps {kept} tokens of the val split of "
                f"{str(data_dir)!r}" if 0 < max_tokens <= kept else
                f"val split of {str(data_dir)!r} holds {kept} tokens")
        raise GolfError(f"{held}; eval_seq_len {seq_len} needs at least {seq_len + 1}")


def check_val_length(cfg) -> None:
    """``load_val_tokens``'s length rule from the shard headers alone: before a run folder is claimed."""
    total = sum(read_shard_header(f) for f in list_shards(cfg.data_dir, "val"))
    kept = min(total, cfg.max_val_tokens) if cfg.max_val_tokens > 0 else total
    _check_val_length(cfg.data_dir, cfg.eval_seq_len, cfg.max_val_tokens, kept)


def is_caseops(data_dir: str | Path) -> bool:
    """Whether ``golf data prepare --caseops`` made the folder (its prepare.json says so)."""
    meta = read_prepare_meta(data_dir)
    return bool(meta and meta.get("caseops"))


def load_val_bytes(data_dir: str | Path, n_tokens: int) -> torch.Tensor | None:
    """CaseOps: the original UTF-8 bytes of the first ``n_tokens`` val tokens, [n_tokens] int32, from
    the byte sidecars; None for a folder without CaseOps. Aligned with ``load_val_tokens``, which
    returns a prefix of the same val stream.

    Each sidecar read must hold one entry per token of its val shard, else a GolfError naming it.
    """
    if not is_caseops(data_dir):
        return None
    parts, total = [], 0
    for f in list_shards(data_dir, "val"):
        n, side = read_shard_header(f), f.with_name(f.name.replace("fineweb_val_", "fineweb_val_bytes_", 1))
        if not side.is_file():
            raise GolfError(f"byte sidecar {str(side)!r} of CaseOps data is missing: expected {n} entries, one per "
                            f"token of {f.name}; prepare the data again")
        counts = read_shard(side)
        if len(counts) != n:
            raise GolfError(f"byte sidecar {str(side)!r} holds {len(counts)} entries; expected {n}, one per token "
                            f"of {f.name}; prepare the data again")
        parts.append(np.asarray(counts[: n_tokens - total], dtype=np.int32))
        total += len(parts[-1])
        if total >= n_tokens:
            break
    if total < n_tokens:
        raise GolfError(f"the byte sidecars of {str(data_dir)!r} cover {total} val tokens; expected {n_tokens}")
    return torch.from_numpy(np.concatenate(parts))
