"""Token shards: the file format, and reading, writing, checking and listing shard files (§1.1, §1.2).

Every malformed file raises ``ShardError`` naming the file, what was expected and what was found.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from golf.runtime import GolfError, umask_file_mode


SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4  # 1,024
MAX_SHARD_TOKENS = 2**31 - 1  # writer limit, spec §1.1
SPLITS = ("train", "val")


class ShardError(GolfError):
    """A shard file is malformed: the message names the file, what was expected and what was found."""


def shard_name(split: str, index: int) -> str:
    return f"fineweb_{split}_{index:06d}.bin"


def byte_shard_name(index: int) -> str:
    """The CaseOps byte sidecar of val shard ``index`` (spec §8)."""
    return f"fineweb_val_bytes_{index:06d}.bin"


def shard_glob(split: str) -> str:
    return f"fineweb_{split}_[0-9]*.bin"  # not fineweb_val_bytes_*: the sidecars are no token shards


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


def read_checked_shard(path: str | Path, vocab_size: int) -> np.ndarray:
    """``read_shard`` plus every id < vocab_size: one vectorised max over the memmap."""
    tokens = read_shard(path)
    if tokens.size and int(tokens.max()) >= vocab_size:
        pos = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"shard {path}: token id out of range: expected ids < vocab_size {vocab_size}, "
                         f"found {int(tokens[pos])} at position {pos}")
    return tokens


def check_shard(path: str | Path, vocab_size: int) -> int:
    """Full validation: header, size and every id < vocab_size. Returns the token count."""
    return int(read_checked_shard(path, vocab_size).size)


def list_shards(data_dir: str | Path, split: str) -> list[Path]:
    """Sorted ``fineweb_{split}_*.bin`` files of a folder; an error if there are none."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise GolfError(f"data folder {str(data_dir)!r} does not exist; make one with `golf data prepare` "
                        "or `golf data download`")
    files = sorted(data_dir.glob(shard_glob(split)))
    if not files:
        raise GolfError(f"no {split} shards (fineweb_{split}_*.bin) in data folder {str(data_dir)!r}")
    return files
