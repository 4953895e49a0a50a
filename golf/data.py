"""Token shards: format, validation, the validation stream and the training loader (spec §1).

A shard (spec §1.1) is a 1,024-byte header of 256 little-endian int32 (magic 20240520, version 1,
token count N, zeros) followed by N little-endian uint16 token ids. Files are named
``fineweb_{train,val}_%06d.bin`` (spec §1.2). Every malformed file raises ``ShardError`` naming the
file, what was expected and what was found.

A CaseOps folder (``golf data prepare --caseops``, prepare.json ``"caseops": true``) also holds a
byte sidecar ``fineweb_val_bytes_%06d.bin`` per val shard, in the same format: the original UTF-8
bytes of each val token, read by ``load_val_bytes``.

Also here: ``download_shards`` (the challenge's official SP8192 data from the Hugging Face Hub) and
``check_data_dir`` (behind ``golf data check``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from golf.runtime import GolfError, atomic_write_json, read_json_object, umask_file_mode

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4  # 1,024
MAX_SHARD_TOKENS = 2**31 - 1  # writer limit, spec §1.1
SPLITS = ("train", "val")

log = logging.getLogger("golf")


class ShardError(GolfError):
    """A shard file is malformed: the message names the file, what was expected and what was found."""


def shard_name(split: str, index: int) -> str:
    return f"fineweb_{split}_{index:06d}.bin"


def byte_shard_name(index: int) -> str:
    """The CaseOps byte sidecar of val shard ``index`` (spec §8)."""
    return f"fineweb_val_bytes_{index:06d}.bin"


def _shard_glob(split: str) -> str:
    return f"fineweb_{split}_[0-9]*.bin"  # not fineweb_val_bytes_*: the sidecars are no token shards


# --- reading and writing one shard ------------------------------------------------------------

def write_shard(path: str | Path, tokens: Any) -> Path:
    """Write ``tokens`` (ids in [0, 2^16)) as one shard; temp file + rename, so never half a file."""
    path = Path(path)
    arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise ShardError(f"shard {path}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size > MAX_SHARD_TOKENS:
        raise ShardError(f"shard {path}: at most {MAX_SHARD_TOKENS} tokens per file, got {arr.size}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**16):
        raise ShardError(f"shard {path}: token ids must lie in [0, 65536) for uint16 storage, "
                         f"found range [{int(arr.min())}, {int(arr.max())}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, arr.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(header.tobytes())
            arr.astype("<u2", copy=False).tofile(fh)  # tofile: no second 200 MB copy in memory
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_shard_header(path: str | Path) -> int:
    """Validate magic, version and exact file size (spec §1.1); return the token count N."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard {path}: no such file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"shard {path}: truncated: expected a {HEADER_BYTES}-byte header, found a {size}-byte file")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, n = (int(v) for v in header[:3])
    if magic != SHARD_MAGIC:
        raise ShardError(f"shard {path}: wrong magic: expected {SHARD_MAGIC}, found {magic}")
    if version != SHARD_VERSION:
        raise ShardError(f"shard {path}: wrong version: expected {SHARD_VERSION}, found {version}")
    if n < 0:
        raise ShardError(f"shard {path}: header token count is negative ({n})")
    expected = HEADER_BYTES + 2 * n
    if size != expected:
        what = "truncated" if size < expected else "trailing bytes"
        raise ShardError(f"shard {path}: {what}: header says {n} tokens, so expected "
                         f"{HEADER_BYTES} + 2*{n} = {expected} bytes, found {size} bytes")
    return n


def read_shard(path: str | Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memmap (validated header and size)."""
    n = read_shard_header(path)
    if n == 0:  # numpy cannot memory-map zero bytes
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))


def _checked_tokens(path: str | Path, vocab_size: int) -> np.ndarray:
    """``read_shard`` plus every id < vocab_size: one vectorised max over the memmap."""
    tokens = read_shard(path)
    if tokens.size and int(tokens.max()) >= vocab_size:
        pos = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"shard {path}: token id out of range: expected ids < vocab_size {vocab_size}, "
                         f"found {int(tokens[pos])} at position {pos}")
    return tokens


def check_shard(path: str | Path, vocab_size: int) -> int:
    """Full validation: header, size and every id < vocab_size. Returns the token count."""
    return int(_checked_tokens(path, vocab_size).size)


def list_shards(data_dir: str | Path, split: str) -> list[Path]:
    """Sorted ``fineweb_{split}_*.bin`` files of a folder; an error if there are none."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise GolfError(f"data folder {str(data_dir)!r} does not exist; make one with `golf data prepare` "
                        "or `golf data download`")
    files = sorted(data_dir.glob(_shard_glob(split)))
    if not files:
        raise GolfError(f"no {split} shards (fineweb_{split}_*.bin) in data folder {str(data_dir)!r}")
    return files


# --- validation stream (spec §1.4) -------------------------------------------------------------

def load_val_tokens(data_dir: str | Path, seq_len: int, max_tokens: int = 0,
                    vocab_size: int | None = None) -> torch.Tensor:
    """All val shards in sorted order, concatenated, cut to ``1 + seq_len*floor((N-1)/seq_len)`` tokens.

    ``max_tokens > 0`` first caps N (demo runs); the record uses the whole stream (spec §1.4).
    ``vocab_size``: check every id of each shard read against it (``ShardError`` naming the file).
    """
    parts, total = [], 0
    for f in list_shards(data_dir, "val"):
        tokens = read_shard(f) if vocab_size is None else _checked_tokens(f, vocab_size)
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


# --- training loader (spec §1.5) ---------------------------------------------------------------

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
        self.tokens = [read_shard(f) if vocab_size is None else _checked_tokens(f, vocab_size) for f in self.files]
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
        self.tokens = read_shard(path) if self.vocab_size is None else _checked_tokens(path, self.vocab_size)
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


# --- golf data check ---------------------------------------------------------------------------

def infer_vocab_size(data_dir: str | Path) -> int | None:
    """The vocab a data folder was made with: prepare.json, a tokenizer.model beside it, or the
    official folder name ``fineweb10B_sp8192``. None if nothing says."""
    data_dir = Path(data_dir)
    meta = read_prepare_meta(data_dir)
    if meta is not None and "vocab_size" in meta:
        return int(meta["vocab_size"])
    tok = find_tokenizer(data_dir)
    if tok is not None:
        import sentencepiece as spm
        return int(spm.SentencePieceProcessor(model_file=str(tok)).get_piece_size())
    m = re.search(r"_sp(\d+)$", data_dir.name)
    return int(m.group(1)) if m else None


def find_tokenizer(data_dir: str | Path) -> Path | None:
    """``DIR/tokenizer.model`` (golf data prepare) or ``../../tokenizers/fineweb_V_bpe.model``
    (the official layout of golf data download)."""
    data_dir = Path(data_dir)
    if (data_dir / "tokenizer.model").is_file():
        return data_dir / "tokenizer.model"
    m = re.search(r"_sp(\d+)$", data_dir.name)
    if m:
        cand = data_dir.parent.parent / "tokenizers" / f"fineweb_{m.group(1)}_bpe.model"
        if cand.is_file():
            return cand
    return None


def check_listed_shards(data_dir: Path, meta: dict | None, present: dict[str, list[str]],
                        meta_name: str = "prepare.json") -> None:
    """Where prepare.json (or download.json) lists a split's shards, the folder holds exactly those."""
    listed = (meta or {}).get("shards") or {}
    for split, names in present.items():
        if split not in listed:
            continue
        missing = sorted(set(listed[split]) - set(names))
        extra = sorted(set(names) - set(listed[split]))
        if missing:
            raise ShardError(f"{data_dir / missing[0]}: listed in {meta_name} but missing"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        if extra:
            raise ShardError(f"{data_dir / extra[0]}: not listed in {meta_name}, so not made with this folder's "
                             "tokenizer run; move it out of the folder")


def check_data_dir(data_dir: str | Path, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """Validate every shard of a folder (magic, version, size, ids < vocab); one row per file.
    A CaseOps folder's byte sidecars are checked too (``load_val_bytes``) and listed as ``val_bytes``.

    ``vocab_size=None`` takes it from the folder (``infer_vocab_size``), else checks ids < 2^16.
    Raises ``ShardError`` naming the first bad file (val files first, then train, sorted).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise GolfError(f"data folder {str(data_dir)!r} does not exist")
    if vocab_size is not None and not 0 < vocab_size <= 2**16:
        raise GolfError(f"vocab_size must be in 1..65536 (uint16 shards), got {vocab_size}")
    vocab = vocab_size or infer_vocab_size(data_dir) or 2**16
    files = [(s, f) for s in ("val", "train") for f in sorted(data_dir.glob(_shard_glob(s)))]
    if not files:
        raise GolfError(f"no shards (fineweb_train_*.bin / fineweb_val_*.bin) in {str(data_dir)!r}")
    present = {split: [f.name for s, f in files if s == split] for split in ("val", "train")}
    for split, names in present.items():
        if not names:
            raise GolfError(f"no {split} shards (fineweb_{split}_*.bin) in {str(data_dir)!r}: training and "
                            "evaluation need both splits")
    meta_path, meta = read_data_meta(data_dir)
    check_listed_shards(data_dir, meta, present, meta_path.name)
    rows = [{"file": f.name, "split": s, "tokens": check_shard(f, vocab), "bytes": f.stat().st_size,
             "vocab_size": vocab} for s, f in files]
    check_shard_contents([f for _, f in files] + sorted(data_dir.glob("fineweb_val_bytes_*.bin")), meta, meta_path,
                         full=True)
    n_val = sum(r["tokens"] for r in rows if r["split"] == "val")
    if n_val and load_val_bytes(data_dir, n_val) is not None:  # CaseOps: one sidecar entry per val token
        rows += [{"file": f.name, "split": "val_bytes", "tokens": read_shard_header(f), "bytes": f.stat().st_size,
                  "vocab_size": "-"} for f in sorted(data_dir.glob("fineweb_val_bytes_*.bin"))]  # bytes, not ids
    return rows


# --- the tokenizer and the data belong together ------------------------------------------------

PREPARE_META = "prepare.json"  # written last by golf data prepare: the folder holds a finished dataset
DOWNLOAD_META = "download.json"  # written by golf data download: binds the official shards to their tokenizer
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 1 << 16  # a shard's sampled hash reads at most 4 MiB


def sample_sha256(path: str | Path) -> str:
    """sha256 of a shard's size, header and 64 blocks of 64 KiB spread evenly over it: cheap enough to
    check at every start (a 200 MB shard is read for 4 MiB), and it changes when the text does."""
    size = Path(path).stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(HEADER_BYTES))
        span = max(size - SAMPLE_BLOCK_BYTES, 0)
        for i in range(SAMPLE_BLOCKS):
            fh.seek(span * i // (SAMPLE_BLOCKS - 1))
            h.update(fh.read(SAMPLE_BLOCK_BYTES))
    return h.hexdigest()


def shard_digests(files: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Per shard (by name): its token count, the sha256 of the whole file and the sampled one."""
    from golf.runtime import file_sha256

    return {Path(f).name: {"tokens": read_shard_header(f), "sha256": file_sha256(f), "sample_sha256": sample_sha256(f)}
            for f in files}


def read_data_meta(data_dir: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The file binding a data folder's shards to their tokenizer (prepare.json, else download.json)
    and its contents; None where the folder has neither."""
    data_dir = Path(data_dir)
    for name in (PREPARE_META, DOWNLOAD_META):
        if (data_dir / name).is_file():
            return data_dir / name, read_json_object(data_dir / name, "prepare or download the data again")
    return data_dir / PREPARE_META, None


def check_shard_contents(files: Sequence[Path], meta: dict[str, Any] | None, meta_path: Path,
                         full: bool = False) -> None:
    """Each shard is the one ``meta`` records: its token count, and its sampled (or, ``full``, its whole)
    sha256. A ShardError naming the file otherwise."""
    from golf.runtime import file_sha256

    recorded = (meta or {}).get("shard_digests") or {}
    for f in files:
        want = recorded.get(Path(f).name)
        if not want:
            continue
        n = read_shard_header(f)
        if n != want["tokens"]:
            raise ShardError(f"{f}: holds {n} tokens but {str(meta_path)!r} records {want['tokens']}: it is not the "
                             "shard made for this folder (copied over?); put the original back or make the data again")
        key = "sha256" if full else "sample_sha256"
        found = (file_sha256 if full else sample_sha256)(f)
        if found != want[key]:
            raise ShardError(f"{f}: its content (sha256 {found[:12]}) is not the one {str(meta_path)!r} records "
                             f"({want[key][:12]}): it is not the shard made for this folder (copied over, or "
                             "damaged); put the original back or make the data again")


def tokenizer_fingerprint(path: str | Path) -> str:
    """sha256 of the tokenizer file's bytes: what binds shards to the tokenizer that made them."""
    path = Path(path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise GolfError(f"tokenizer file {str(path)!r} cannot be read: {exc.strerror}") from None


def read_prepare_meta(data_dir: str | Path) -> dict[str, Any] | None:
    """``DIR/prepare.json`` as a dict, or None for a folder golf data prepare did not make."""
    meta = Path(data_dir) / PREPARE_META
    return read_json_object(meta, "prepare the data again") if meta.is_file() else None


def load_tokenizer(path: str | Path, vocab_size: int | None = None) -> Any:  # a sentencepiece.SentencePieceProcessor
    """Load a SentencePiece model; an error naming the file if it is missing, unreadable, or has
    a different number of pieces than ``vocab_size``."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise GolfError(f"tokenizer file {str(path)!r} not found")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise GolfError(f"tokenizer file {str(path)!r} is not a SentencePiece model: {exc}") from exc
    found = sp.get_piece_size()
    if vocab_size is not None and found != vocab_size:
        raise GolfError(f"tokenizer {str(path)!r} has {found} pieces but vocab_size is {vocab_size}; "
                        f"use the matching tokenizer or set vocab_size={found}")
    return sp


def check_data_binding(cfg, splits: Sequence[str] = SPLITS, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Check, before any work, that ``cfg``'s tokenizer, vocab_size and data folder belong together.

    - ``tokenizer_path`` is a SentencePiece model with exactly ``vocab_size`` pieces;
    - the sha256 of ``tokenizer_path`` is the one ``DIR/prepare.json`` (or ``download.json``) records
      (an older prepare.json without it: the tokenizer file it names), and its vocab_size is ``vocab_size``.
      A folder with neither: the tokenizer beside it (``find_tokenizer``), if any, must be this one, and
      a warning is logged and returned;
    - every id of the ``splits`` shards is < vocab_size (for train, the shards of ``rank`` out of
      ``world_size``, the ones its loader opens), and there is a train shard for every rank; those
      shards hold the token counts and sampled sha256 the meta file records (``check_shard_contents``).

    Raises GolfError naming the files. Returns the binding (with its ``warnings``), for the run's record.
    """
    data_dir, tok = Path(cfg.data_dir), Path(cfg.tokenizer_path)
    files = {split: list_shards(data_dir, split) for split in splits}
    sp = load_tokenizer(tok)  # missing, or not a SentencePiece model: an error naming the file
    fingerprint = tokenizer_fingerprint(tok)
    meta_path, meta = read_data_meta(data_dir)
    warnings = []
    if meta is None:
        beside = find_tokenizer(data_dir)  # DIR/tokenizer.model, or the official layout's
        if beside is not None and tokenizer_fingerprint(beside) != fingerprint:
            raise GolfError(f"tokenizer {str(tok)!r} (sha256 {fingerprint[:12]}) is not the tokenizer beside the "
                            f"shards of {str(data_dir)!r}, {str(beside)!r} (sha256 "
                            f"{tokenizer_fingerprint(beside)[:12]}); set tokenizer_path to that file")
        warnings.append(f"data folder {data_dir} has no {PREPARE_META} or {DOWNLOAD_META} (made by neither golf data "
                        f"prepare nor golf data download): nothing shows that tokenizer {tok} made its shards; "
                        "golf data download (again: present files are kept) binds the official data")
    elif not meta.get("shard_digests"):
        warnings.append(f"{meta_path} records no shard digests (made by an older golf): the shards' content is not "
                        "checked; make the data again to bind it")
    for w in warnings:
        log.warning("%s", w)
    if meta is not None:
        made_with = meta.get("tokenizer_path")
        recorded = meta.get("tokenizer_sha256")
        if recorded is None and made_with and Path(made_with).is_file():  # prepared before golf recorded it
            recorded = tokenizer_fingerprint(made_with)
        if recorded is None:
            log.warning("%s records no tokenizer fingerprint: cannot check that tokenizer %s made its shards",
                        meta_path, tok)
        elif recorded != fingerprint:
            raise GolfError(f"tokenizer {str(tok)!r} (sha256 {fingerprint[:12]}) is not the one the shards of "
                            f"{str(data_dir)!r} were made with: {str(meta_path)!r} records {made_with!r} "
                            f"(sha256 {recorded[:12]}); set tokenizer_path to that file, or make shards for this "
                            "tokenizer with golf data prepare --tokenizer")
        if "vocab_size" in meta and int(meta["vocab_size"]) != cfg.vocab_size:
            raise GolfError(f"params key 'vocab_size' is {cfg.vocab_size} but the data in {str(data_dir)!r} was "
                            f"prepared with vocab_size {meta['vocab_size']} ({str(meta_path)!r})")
    check_listed_shards(data_dir, meta, {split: [f.name for f in names] for split, names in files.items()},
                        meta_path.name)
    pieces = sp.get_piece_size()
    if pieces != cfg.vocab_size:
        raise GolfError(f"params key 'vocab_size' is {cfg.vocab_size} but tokenizer {str(tok)!r} has {pieces} "
                        f"pieces; set vocab_size={pieces} or use the tokenizer the data was made with")
    train = files.get("train", [])
    if "train" in files and len(train) < world_size:
        raise GolfError(f"data folder {str(data_dir)!r} holds {len(train)} train shard(s) for {world_size} "
                        "processes; each reads its own: prepare smaller shards (--shard-tokens) or run fewer")
    read = [*files.get("val", []), *train[rank::world_size]]
    for f in read:
        _checked_tokens(f, cfg.vocab_size)
    check_shard_contents(read, meta, meta_path)  # sampled: a few MiB a shard
    return {"tokenizer_path": str(tok), "tokenizer_sha256": fingerprint, "vocab_size": cfg.vocab_size,
            "data_dir": str(data_dir), "prepare_json": str(meta_path) if meta is not None else None,
            "warnings": warnings}


# --- golf data download ------------------------------------------------------------------------

@dataclass(frozen=True)
class HubVariant:
    """Where one tokenizer variant lives in the Hugging Face dataset (paths relative to its root)."""
    dataset_dir: str
    tokenizer: str
    vocab_size: int
    val_shards: int
    train_shards: int  # how many the dataset holds


# The official layout (as fetched by the challenge's data/cached_challenge_fineweb.py); local copies
# keep the same relative paths under --out, so `--out data` gives golf's default data_dir.
HUB_VARIANTS: dict[str, HubVariant] = {
    "sp8192": HubVariant(dataset_dir="datasets/fineweb10B_sp8192",
                         tokenizer="tokenizers/fineweb_8192_bpe.model",
                         vocab_size=8192, val_shards=1, train_shards=80),
}
DEFAULT_HUB_REPO = "kevclark/parameter-golf"


def _hub_fetch(repo_id: str, rel: str, out_dir: Path) -> Path:
    """One file from the Hub into ``out_dir/rel``, with errors a user can act on."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    # the Hub's logger has its own handler: without this, each of its warnings shows twice (ours too)
    logging.getLogger("huggingface_hub").propagate = False
    try:
        got = huggingface_hub.hf_hub_download(repo_id=repo_id, filename=rel, repo_type="dataset",
                                              local_dir=str(out_dir))
    except hf_errors.LocalEntryNotFoundError as exc:  # offline, or the Hub did not answer
        raise GolfError(_unreachable(repo_id, rel, out_dir, exc)) from exc
    except hf_errors.EntryNotFoundError as exc:
        raise GolfError(f"{rel!r} is not in the Hugging Face dataset {repo_id!r} ({exc})") from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise GolfError(f"Hugging Face dataset {repo_id!r} not found or not accessible (gated "
                        f"datasets need `huggingface-cli login`): {exc}") from exc
    except _transport_errors() as exc:
        raise GolfError(_unreachable(repo_id, rel, out_dir, exc)) from exc
    return Path(got)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures: huggingface_hub < 1 uses requests (OSError subclasses), >= 1 uses httpx."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        import httpx
        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _unreachable(repo_id: str, rel: str, out_dir: Path, exc: BaseException) -> str:
    return (f"could not reach the Hugging Face Hub to fetch {rel!r} from dataset {repo_id!r} "
            f"({type(exc).__name__}: {exc}). To get data otherwise: copy the shards and tokenizer from a "
            f"machine that has them into {str(out_dir)!r} with the same layout (datasets/..., tokenizers/...), "
            f"or build a local dataset with `golf data prepare --corpus shakespeare --out DIR`")


def download_shards(variant: str, out_dir: str | Path, train_shards: int = 1,
                    repo_id: str = DEFAULT_HUB_REPO) -> dict[str, Any]:
    """Fetch the val shards, ``train_shards`` train shards and the tokenizer; validate them all.

    Files already present and valid are kept (the command is idempotent). Returns
    ``{data_dir, tokenizer_path, vocab_size, files: [...], downloaded: n}``.
    """
    if variant not in HUB_VARIANTS:
        raise GolfError(f"unknown data variant {variant!r}; known: {', '.join(HUB_VARIANTS)}")
    v = HUB_VARIANTS[variant]
    if not 0 <= train_shards <= v.train_shards:
        raise GolfError(f"--train-shards must be in [0, {v.train_shards}] for {variant}, got {train_shards}")
    out_dir = Path(out_dir)
    tail = Path(v.dataset_dir).parts
    if out_dir.parts[-len(tail):] == tail:  # the shard folder itself given: its root keeps the layout
        out_dir = out_dir.parents[len(tail) - 1]
        log.info("--out names the shard folder; downloading into its root %s", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    downloaded = 0
    tok_path = out_dir / v.tokenizer
    if not tok_path.is_file():
        _hub_fetch(repo_id, v.tokenizer, out_dir)
        downloaded += 1
    load_tokenizer(tok_path, v.vocab_size)

    names = [shard_name("val", i) for i in range(v.val_shards)]
    names += [shard_name("train", i) for i in range(train_shards)]
    files = []
    data_dir = out_dir / v.dataset_dir
    earlier = (read_data_meta(data_dir)[1] or {}).get("shard_digests") or {} if (data_dir / DOWNLOAD_META).is_file() else {}
    for name in names:
        rel, local = f"{v.dataset_dir}/{name}", out_dir / v.dataset_dir / name
        fresh = not local.is_file()
        if fresh:
            _hub_fetch(repo_id, rel, out_dir)
            downloaded += 1
        try:
            check_shard(local, v.vocab_size)
            if not fresh and name in earlier:  # changed since it was downloaded: fetch it again
                check_shard_contents([local], {"shard_digests": earlier}, data_dir / DOWNLOAD_META)
        except ShardError as exc:
            if fresh:
                raise ShardError(f"downloaded file is bad: {exc}") from None
            # a stale or partial earlier copy: fetch it again once
            local.unlink()
            _hub_fetch(repo_id, rel, out_dir)
            downloaded += 1
            check_shard(local, v.vocab_size)
        files.append(local)
    # every official shard in the folder (an earlier call may have fetched more), bound to the tokenizer
    present = {split: [f.name for f in sorted(data_dir.glob(_shard_glob(split)))] for split in SPLITS}
    atomic_write_json(data_dir / DOWNLOAD_META, {
        "source": f"huggingface dataset {repo_id}", "variant": variant, "tokenizer_path": str(tok_path),
        "tokenizer_sha256": tokenizer_fingerprint(tok_path), "vocab_size": v.vocab_size, "shards": present,
        "shard_digests": shard_digests([data_dir / n for split in SPLITS for n in present[split]])})
    return {"data_dir": str(out_dir / v.dataset_dir), "tokenizer_path": str(tok_path),
            "vocab_size": v.vocab_size, "files": [str(f) for f in files], "downloaded": downloaded}
