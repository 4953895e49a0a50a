"""The training loaders: #1533's shuffled windows (§1.5) and #1855's packed documents (§8.3)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from golf.runtime import GolfError
from golf.shards import list_shards, read_checked_shard, read_shard, read_shard_header


class ShuffledSequenceLoader:
    """Shard-local shuffled sampling of ``seq_len + 1`` windows, as in the record (spec §1.5).

    Rank r reads ``files[r::world_size]``. Per shard and epoch: a random phase p in
    ``[0, min(seq_len-1, N-seq_len-1)]``, the starts ``p + seq_len*k`` for k < floor((N-1-p)/seq_len),
    shuffled. Each sequence picks a shard with probability proportional to its remaining starts
    and pops that shard's last start; when all are used up, every shard starts a new epoch.

    ``vocab_size``, if given, checks every id of the rank's shards against it (``ShardError``).
    ``seed=None`` seeds numpy's PCG64 with the rank alone, like the record, so SEED does not
    change the data order (spec §9.8); an int seeds it with ``(seed, rank)`` (the fix).
    The draws happen in the record's order, so the same rank sees the record's sequences.
    """

    def __init__(self, files: Sequence[str | Path] | str | Path, rank: int, world_size: int,
                 seq_len: int, seqs_per_batch: int, seed: int | None = None, vocab_size: int | None = None):
        if isinstance(files, (str, Path)):
            files = list_shards(files, "train")
        all_files = [Path(f) for f in files]
        if not all_files:
            raise GolfError("ShuffledSequenceLoader got no shard files")
        self.files = all_files[rank::world_size]
        if not self.files:
            raise GolfError(f"rank {rank} of {world_size} gets no training shard: there are only "
                            f"{len(all_files)} (prepare more, smaller shards, or use fewer ranks)")
        self.seq_len, self.seqs_per_batch = seq_len, seqs_per_batch
        entropy = rank if seed is None else [seed, rank]
        self.rng = np.random.Generator(np.random.PCG64(entropy))
        # memmaps: nothing is read yet, unless vocab_size asks for the ids to be checked
        self.tokens = [read_shard(f) if vocab_size is None else read_checked_shard(f, vocab_size) for f in self.files]
        if all(len(t) < seq_len + 1 for t in self.tokens):
            raise GolfError(f"rank {rank}'s training shards ({', '.join(f.name for f in self.files)}) hold "
                            f"fewer than seq_len + 1 = {seq_len + 1} tokens each")
        self.starts: list[list[int]] = [[] for _ in self.files]
        for si in range(len(self.files)):
            self._new_epoch(si)

    def _new_epoch(self, si: int) -> None:
        n, t = len(self.tokens[si]), self.seq_len
        max_phase = min(t - 1, max(0, n - t - 1))
        phase = int(self.rng.integers(max_phase + 1)) if max_phase > 0 else 0
        count = max(0, (n - 1 - phase) // t)
        self.starts[si] = (phase + self.rng.permutation(count) * t).tolist()

    def remaining(self) -> list[int]:
        """Starts left in the current epoch, per shard of this rank."""
        return [len(s) for s in self.starts]

    def next_batch(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        b, t = self.seqs_per_batch, self.seq_len
        window = np.empty((b, t + 1), dtype=np.int64)
        left = np.array(self.remaining(), dtype=np.float64)
        for bi in range(b):
            if left.sum() <= 0:
                for si in range(len(self.files)):
                    self._new_epoch(si)
                left = np.array(self.remaining(), dtype=np.float64)
            si = int(self.rng.choice(len(self.files), p=left / left.sum()))
            start = self.starts[si].pop()
            left[si] -= 1
            window[bi] = self.tokens[si][start:start + t + 1]
        w = torch.from_numpy(window)
        x, y = w[:, :-1], w[:, 1:]  # [B, T] each: y is x shifted by one token
        non_blocking = torch.device(device).type == "cuda"
        return (x.contiguous().to(device, non_blocking=non_blocking),
                y.contiguous().to(device, non_blocking=non_blocking))


class PackedDocumentLoader:
    """#1855's document packing (docs/record.md §8.3): the stream in order, a micro-batch one row.

    All ranks read every shard, in name order, starting at each shard's first BOS. A step of the
    ``world_size`` ranks takes the next ``world_size·(n+1)`` tokens; rank r's row is its slice of
    n + 1 (x its first n, y its last n), so the rows overlap by nothing and skip one token each.
    A shard too short for the next step is left for the next one (after the last: the first again).
    Attention segments come from the ids (``golf.attention.document_ids``).
    """

    def __init__(self, files: Sequence[str | Path], rank: int, world_size: int, tokens_per_row: int,
                 bos_id: int = 1, vocab_size: int | None = None):
        self.files = [Path(f) for f in files]
        self.rank, self.world, self.span, self.bos_id = rank, world_size, tokens_per_row + 1, bos_id
        self.vocab_size = vocab_size
        if not self.files:
            raise GolfError("PackedDocumentLoader got no shard files")
        if all(read_shard_header(f) < self.span * world_size for f in self.files):
            raise GolfError(f"every training shard holds fewer than {self.span * world_size} tokens, one packed step "
                            f"of {world_size} rank(s) x {tokens_per_row} tokens")
        self._open(0)

    def _open(self, index: int) -> None:
        self.index = index % len(self.files)
        path = self.files[self.index]
        self.tokens = read_shard(path) if self.vocab_size is None else read_checked_shard(path, self.vocab_size)
        bos = np.flatnonzero(self.tokens == self.bos_id)
        if not len(bos):
            raise GolfError(f"training shard {path} holds no BOS ({self.bos_id}): packed documents start at one")
        self.cursor = int(bos[0])

    def next_batch(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        while self.cursor + self.span * self.world > len(self.tokens):
            self._open(self.index + 1)
        start = self.cursor + self.rank * self.span
        row = torch.from_numpy(self.tokens[start:start + self.span].astype(np.int64))
        self.cursor += self.span * self.world
        non_blocking = torch.device(device).type == "cuda"
        return (row[None, :-1].contiguous().to(device, non_blocking=non_blocking),
                row[None, 1:].contiguous().to(device, non_blocking=non_blocking))
