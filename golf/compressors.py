"""The compressors of the artifact's pieces (spec §5.4): Brotli, lzma and rANS (ANS over one int8 matrix,
a table per group of columns), and the thread pool the pieces are coded on. golf.artifact lays them out.
"""
from __future__ import annotations

import lzma
import os
import struct
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable

import brotli
import numpy as np

from golf.runtime import GolfError, dist_info, progress_bar

COMPRESSORS = {"brotli": 1, "lzma": 2, "rans": 3, "best": 4}  # what an artifact may name, and its header's id


# --- rANS over the integers of one matrix ------------------------------------------------------

_RANS_HEAD = struct.Struct("<hHB")  # lowest symbol, alphabet size, column groups


def entropy_bytes(counts: np.ndarray) -> float:
    """The order-0 entropy of a histogram, in bytes: what an ideal coder needs (rANS' cost model, pruning's)."""
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum() / 8) if c.size else 0.0


def _constriction():
    try:
        import constriction
    except ImportError:
        raise GolfError("compressor 'rans' needs the constriction package: pip install constriction") from None
    return constriction


def rans_encode(cols: np.ndarray) -> bytes:
    """ANS-code an int8 matrix stored column by column, ``cols`` (columns, rows).

    Columns are sorted by their mean square and cut into K equal groups (K = 1, 2, 4 or 8, the
    smallest estimate of tables + group map + coded bits); each group gets a categorical table of
    its own counts, stored as uint16 scaled to the largest count.
    Layout: <hHB> lowest symbol, alphabet size n, K; the group map as log2(K) bit-planes (K > 1);
    K tables of n uint16; the ANS words (uint32).
    """
    cs = _constriction()
    C = cols.shape[0]
    if cols.size == 0:
        return _RANS_HEAD.pack(0, 1, 1) + b"\x01\x00"
    lo = int(cols.min())
    sym = cols.astype(np.int32) - lo  # (C, rows), in [0, n)
    n = int(sym.max()) + 1
    by_spread = np.argsort((cols.astype(np.float64) ** 2).mean(axis=1), kind="stable")
    best = None
    for K in (1, 2, 4, 8):
        if K > C:
            break
        group = np.empty(C, dtype=np.int64)
        for g, part in enumerate(np.array_split(by_spread, K)):
            group[part] = g
        counts = [np.bincount(sym[group == g].ravel(), minlength=n) for g in range(K)]
        cost = sum(entropy_bytes(c) for c in counts) + 2 * n * K + (K > 1) * int(np.log2(K)) * (-(-C // 8))
        if best is None or cost < best[0]:
            best = (cost, K, group, counts)
    _, K, group, counts = best
    tables = [np.where(c > 0, np.maximum(1, np.round(c * 65535 / c.max())), 0).astype("<u2") for c in counts]
    coder = cs.stream.stack.AnsCoder()
    for g in reversed(range(K)):  # a stack: the last group encoded is the first decoded
        coder.encode_reverse(sym[group == g].ravel(), cs.stream.model.Categorical(tables[g].astype(np.float64),
                                                                                 perfect=False))
    bits = int(np.log2(K))
    gmap = b"".join(np.packbits(((group >> b) & 1).astype(np.uint8)).tobytes() for b in range(bits))
    return (_RANS_HEAD.pack(lo, n, K) + gmap + b"".join(t.tobytes() for t in tables)
            + coder.get_compressed().astype("<u4").tobytes())


def rans_decode(data: bytes, rows: int, n_values: int) -> bytes:
    """Inverse of rans_encode: the column-major bytes of the matrix (``n_values`` entries of ``rows`` each column)."""
    cs = _constriction()
    lo, n, K = _RANS_HEAD.unpack_from(data)
    if n_values == 0:
        return b""
    C = n_values // rows
    pos, bits = _RANS_HEAD.size, int(np.log2(K))
    group = np.zeros(C, dtype=np.int64)
    for b in range(bits):
        plane = np.unpackbits(np.frombuffer(data, np.uint8, -(-C // 8), pos))[:C]
        group |= plane.astype(np.int64) << b
        pos += -(-C // 8)
    tables = np.frombuffer(data, "<u2", K * n, pos).reshape(K, n).astype(np.float64)
    pos += 2 * K * n
    coder = cs.stream.stack.AnsCoder(np.frombuffer(data, "<u4", offset=pos).astype(np.uint32))
    out = np.empty((C, rows), dtype=np.int32)
    for g in range(K):
        mine = group == g
        out[mine] = coder.decode(cs.stream.model.Categorical(tables[g], perfect=False),
                                 int(mine.sum()) * rows).reshape(-1, rows)
    return (out + lo).astype(np.int8).tobytes()


# --- codecs and the thread pool ----------------------------------------------------------------

def compress_bytes(raw: bytes, codec: str, rows: int) -> bytes:
    """One piece compressed with ``codec`` (rANS reads it as a column-major int8 matrix of ``rows`` rows)."""
    if codec == "brotli":
        return brotli.compress(raw, quality=11)
    if codec == "lzma":
        return lzma.compress(raw, preset=6)
    if codec == "rans":
        return rans_encode(np.frombuffer(raw, np.int8).reshape(-1, rows) if raw else np.zeros((0, 0), np.int8))
    raise GolfError(f"unknown compressor {codec!r}; expected one of {sorted(COMPRESSORS)}")


def decompress_bytes(data: bytes, codec: str, rows: int, raw_len: int) -> bytes:
    """Inverse of compress_bytes (``raw_len``: the bytes the piece had)."""
    if codec == "brotli":
        return brotli.decompress(data)
    if codec == "lzma":
        return lzma.decompress(data)
    return rans_decode(data, rows, raw_len)


def default_threads() -> int:
    """Cores this process may use, shared among the ranks of a torchrun job."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // dist_info().world_size)


def pool_map(fn: Callable[[int], bytes], sizes: list[int], threads: int, desc: str, progress: bool) -> list[bytes]:
    """fn(k) for every piece k on ``threads`` threads, biggest first; a bar in bytes."""
    out: list[Any] = [None] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda k: -sizes[k])
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            progress_bar(sum(sizes), desc, progress, "B", unit_scale=True) as bar:
        futures = {pool.submit(fn, k): k for k in order}
        for fut in as_completed(futures):
            k = futures[fut]
            out[k] = fut.result()
            bar.update(sizes[k])
    return out
