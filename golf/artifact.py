"""The artifact's bytes (spec §5.4): golf's header, independent pieces, and their codecs.

Format 1 is the record's one Brotli stream behind an 18-byte header (still read; ``serialize_v1``).
Format 2 cuts the tensors into pieces that compress in parallel on threads and carry their own crc32,
so a damaged file names the damage; compressors ``brotli``, ``lzma``, ``rans`` (ANS per matrix) and
``best`` (the smaller of brotli and rans, per matrix). The layouts and why: §10.3. The codecs and the
thread pool they run on: golf.compressors.
"""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import struct
import zlib
from typing import Any

import brotli
import numpy as np
import torch
from torch import Tensor

from golf.compressors import COMPRESSORS, compress_bytes, decompress_bytes, default_threads, pool_map
from golf.runtime import GolfError

ARTIFACT_MAGIC = b"GOLF"
ARTIFACT_VERSION = 2  # what serialize writes; deserialize reads 1 and 2
_VALUE_CODECS = {"brotli": ("brotli",), "lzma": ("lzma",), "rans": ("rans",), "best": ("rans", "brotli")}
SHUFFLE_MAGIC = b"BSHF"
CHUNK = 1 << 20  # bytes of one VALUES piece (Brotli/lzma)
_HEADER_V1 = struct.Struct("<4sBBQI")  # magic, version, compressor id, payload length, crc32(payload)
_HEADER_V2 = struct.Struct("<4sBBHI")  # magic, version, compressor id, piece count, crc32(table)
_PIECE = struct.Struct("<BHIII")  # kind, tensor index, compressed length, raw length, crc32(compressed)
LAYOUT, VALUES, REST, VALUES_RANS = 0, 1, 2, 3  # VALUES: coded like LAYOUT and REST
_NO_TENSOR = 0xFFFF
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.int8,
                                                       torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool)}


class ArtifactError(GolfError):
    """The artifact file is not a golf artifact, is truncated or corrupt, or does not fit the model."""


# --- byte shuffle (spec §5.4, §9.15) -----------------------------------------------------------

def byte_shuffle(data: bytes, stride: int = 2) -> bytes:
    """b"BSHF" + stride byte + the bytes at offsets ≡ 0 (mod stride), then ≡ 1, ...

    Groups the low and high bytes of fp16 / int8 streams so the entropy coder sees similar bytes together.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    return SHUFFLE_MAGIC + bytes([stride]) + b"".join(arr[i::stride].tobytes() for i in range(stride))


def byte_unshuffle(data: bytes) -> bytes:
    """Inverse of byte_shuffle: lane i holds n//stride bytes, +1 for the first n % stride lanes."""
    if data[:4] != SHUFFLE_MAGIC or len(data) < 5:
        raise ArtifactError("artifact is corrupt: the decompressed payload lacks the BSHF shuffle magic")
    stride = data[4]
    payload = np.frombuffer(data, dtype=np.uint8, offset=5)
    n = payload.size
    out = np.empty(n, dtype=np.uint8)
    pos = 0
    for i in range(stride):
        lane = n // stride + (1 if i < n % stride else 0)
        out[i::stride] = payload[pos:pos + lane]
        pos += lane
    return out.tobytes()


# --- low-bit packing (the LQER factors of golf/lqer.py) ----------------------------------------

def pack_bits(q: Tensor, bits: int) -> Tensor:
    """Signed integers in [-2^(bits-1), 2^(bits-1)) -> uint8, 8/bits of them per byte (bits 1, 2, 4, 8).

    Each value is offset to unsigned (v + 2^(bits-1)); the k-th value of a byte sits in its bits
    k·bits .. (k+1)·bits - 1, the first value lowest. The last byte is padded with zero bits.
    """
    if bits not in (1, 2, 4, 8):
        raise GolfError(f"pack_bits packs 1, 2, 4 or 8 bits, got {bits}")
    per, lo = 8 // bits, -(1 << (bits - 1))
    u = q.detach().cpu().reshape(-1).to(torch.int16) - lo
    if u.numel() and (int(u.min()) < 0 or int(u.max()) >= 1 << bits):
        raise GolfError(f"pack_bits: values outside [{lo}, {-lo - 1}] do not fit {bits} bits")
    u = torch.cat((u, u.new_zeros(-u.numel() % per))).view(-1, per)  # (bytes, per)
    return (u << (torch.arange(per, dtype=torch.int16) * bits)).sum(1).to(torch.uint8)


def unpack_bits(data: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of pack_bits: the first ``n`` values, int8."""
    per, lo = 8 // bits, -(1 << (bits - 1))
    if data.dtype != torch.uint8 or data.numel() != -(-n // per):
        raise ArtifactError(f"artifact is corrupt: {data.numel()} {data.dtype} bytes cannot hold {n} "
                            f"{bits}-bit values")
    u = (data.to(torch.int16)[:, None] >> (torch.arange(per, dtype=torch.int16) * bits)) & ((1 << bits) - 1)
    return (u.reshape(-1)[:n] + lo).to(torch.int8)


# --- format 2 ----------------------------------------------------------------------------------

def _is_values(t: Tensor) -> bool:
    return t.dtype == torch.int8 and t.ndim == 2


def _raw(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _side_codec(compressor: str) -> str:
    return "lzma" if compressor == "lzma" else "brotli"


def serialize(quantized: dict[str, Tensor], meta: dict[str, Any], compressor: str = "brotli",
              threads: int | None = None, cache: dict | None = None, progress: bool = False) -> bytes:
    """The tensors and their meta as a format-2 artifact (module docstring).

    ``cache`` (a dict kept between calls) maps a piece's codec and raw bytes to its compressed
    bytes, so that serializing again after a few tensors changed compresses only those.
    """
    if compressor not in COMPRESSORS:
        raise GolfError(f"unknown compressor {compressor!r}; expected one of {sorted(COMPRESSORS)}")
    side = _side_codec(compressor)
    tensors = [(n, t.detach().cpu()) for n, t in quantized.items()]
    if len(tensors) >= _NO_TENSOR:
        raise GolfError(f"an artifact holds at most {_NO_TENSOR - 1} tensors, got {len(tensors)}")
    layout = {"tensors": [[n, str(t.dtype).removeprefix("torch."), list(t.shape)] for n, t in tensors], "meta": meta}
    jobs = [(LAYOUT, _NO_TENSOR, json.dumps(layout).encode(), side, 0)]  # kind, tensor, raw, codec, rows
    for i, (_, t) in enumerate(tensors):
        if _is_values(t):
            raw = t.T.contiguous().numpy().tobytes()  # column-major
            for codec in _VALUE_CODECS[compressor]:  # rANS codes a whole matrix, Brotli/lzma chunks of it
                step = max(len(raw), 1) if codec == "rans" else CHUNK
                kind = VALUES_RANS if codec == "rans" else VALUES
                jobs += [(kind, i, raw[o:o + step], codec, t.shape[0]) for o in range(0, max(len(raw), 1), step)]
    rest = b"".join(_raw(t) for _, t in tensors if not _is_values(t))
    jobs.append((REST, _NO_TENSOR, byte_shuffle(rest, 2), side, 0))

    cache = {} if cache is None else cache
    keys = [(codec, hashlib.blake2b(raw, digest_size=16).digest()) for _, _, raw, codec, _ in jobs]
    todo = [k for k, key in enumerate(keys) if key not in cache]
    done = pool_map(lambda j: compress_bytes(jobs[todo[j]][2], jobs[todo[j]][3], jobs[todo[j]][4]),
                     [len(jobs[k][2]) for k in todo], threads or default_threads(), "compress", progress)
    cache.update({keys[k]: c for k, c in zip(todo, done)})
    pieces = [cache[key] for key in keys]
    if len(_VALUE_CODECS[compressor]) > 1:  # "best": each matrix keeps whichever codec made it smaller
        size: dict[tuple[int, str], int] = {}
        for (kind, i, _, codec, _), c in zip(jobs, pieces):
            size[i, codec] = size.get((i, codec), 0) + len(c)
        best = {i: min(_VALUE_CODECS[compressor], key=lambda x: size[i, x])
                for kind, i, *_ in jobs if kind not in (LAYOUT, REST)}
        keep = [kind in (LAYOUT, REST) or best[i] == codec for kind, i, _, codec, _ in jobs]
        jobs, pieces = [j for j, k in zip(jobs, keep) if k], [c for c, k in zip(pieces, keep) if k]
    table = b"".join(_PIECE.pack(kind, idx, len(c), len(raw), zlib.crc32(c))
                     for (kind, idx, raw, _, _), c in zip(jobs, pieces))
    header = _HEADER_V2.pack(ARTIFACT_MAGIC, 2, COMPRESSORS[compressor], len(jobs), zlib.crc32(table))
    return header + table + b"".join(pieces)


def _read_table(blob: bytes) -> tuple[str, list[tuple[int, int, int, int, int, int]]]:
    """(compressor, [(kind, tensor, offset, length, raw length, crc32)]) of a format-2 blob, checked."""
    if len(blob) < _HEADER_V2.size:
        raise ArtifactError(f"artifact is truncated: {len(blob)} bytes, shorter than the "
                            f"{_HEADER_V2.size}-byte golf header")
    _, _, comp_id, n, table_crc = _HEADER_V2.unpack_from(blob)
    names = {v: k for k, v in COMPRESSORS.items()}
    end = _HEADER_V2.size + n * _PIECE.size
    if len(blob) < end:
        raise ArtifactError(f"artifact is truncated: {len(blob)} bytes, shorter than its header and "
                            f"{n}-piece table ({end} bytes)")
    if zlib.crc32(blob[_HEADER_V2.size:end]) != table_crc:
        raise ArtifactError("artifact is corrupt: its piece table fails its crc32 check")
    if comp_id not in names:
        raise ArtifactError(f"artifact is corrupt: unknown compressor id {comp_id}")
    pieces, pos = [], end
    for k in range(n):
        kind, idx, length, raw_len, crc = _PIECE.unpack_from(blob, _HEADER_V2.size + k * _PIECE.size)
        if kind > VALUES_RANS:
            raise ArtifactError(f"artifact is corrupt: piece {k + 1} of {n} has unknown kind {kind}")
        pieces.append((kind, idx, pos, length, raw_len, crc))
        pos += length
    if pos != len(blob):
        what = "truncated" if pos > len(blob) else "corrupt"
        raise ArtifactError(f"artifact is {what}: header declares {pos - end} bytes of pieces, found {len(blob) - end}")
    if not pieces or pieces[0][0] != LAYOUT:
        raise ArtifactError("artifact is corrupt: its first piece is not the layout")
    return names[comp_id], pieces


def _read_layout(blob: bytes, compressor: str, pieces) -> dict[str, Any]:
    _, _, pos, length, _, crc = pieces[0]
    data = blob[pos:pos + length]
    if zlib.crc32(data) != crc:
        raise ArtifactError(f"artifact is corrupt: piece 1 of {len(pieces)} (the layout: tensor names, shapes "
                            f"and meta) fails its crc32 check")
    try:
        layout = json.loads(decompress_bytes(data, _side_codec(compressor), 0, 0))
        if not (isinstance(layout["meta"], dict) and all(len(e) == 3 for e in layout["tensors"])):
            raise ValueError("unexpected structure")
        return layout
    except Exception as exc:  # noqa: BLE001 - any fault here is a damaged file
        raise ArtifactError(f"artifact is corrupt: piece 1 of {len(pieces)} (the layout) does not decode "
                            f"({exc})") from None


def _piece_names(layout: dict[str, Any], pieces) -> list[str]:
    """A reader's name for every piece: 'piece 7 of 80 (blocks.1.mlp.fc.weight.q, chunk 2 of 4)'."""
    names, n = [], len(pieces)
    per_tensor: dict[int, int] = {}
    for kind, idx, *_ in pieces:
        per_tensor[idx] = per_tensor.get(idx, 0) + 1
    seen: dict[int, int] = {}
    for k, (kind, idx, *_) in enumerate(pieces):
        if kind == LAYOUT:
            what = "the layout"
        elif kind == REST:
            what = "row scales and small tensors"
        else:
            seen[idx] = seen.get(idx, 0) + 1
            tname = layout["tensors"][idx][0] if idx < len(layout["tensors"]) else f"tensor #{idx}"
            what = tname + (f", chunk {seen[idx]} of {per_tensor[idx]}" if per_tensor[idx] > 1 else "")
        names.append(f"piece {k + 1} of {n} ({what})")
    return names


def piece_bytes(blob: bytes) -> dict[str, int]:
    """Compressed bytes of each int8 matrix's values in a format-2 artifact, by tensor name ({} for format 1)."""
    if len(blob) < _HEADER_V2.size or _HEADER_V2.unpack_from(blob)[1] != 2:
        return {}
    compressor, pieces = _read_table(blob)
    layout = _read_layout(blob, compressor, pieces)
    out: dict[str, int] = {}
    for kind, idx, _, length, _, _ in pieces:
        if kind in (VALUES, VALUES_RANS):
            name = layout["tensors"][idx][0]
            out[name] = out.get(name, 0) + length
    return out


def _deserialize_v2(blob: bytes, threads: int | None, progress: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    compressor, pieces = _read_table(blob)
    layout = _read_layout(blob, compressor, pieces)
    names = _piece_names(layout, pieces)
    bad = [k for k, (_, _, pos, length, _, crc) in enumerate(pieces) if zlib.crc32(blob[pos:pos + length]) != crc]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ArtifactError(f"artifact is corrupt: {names[bad[0]]} fails its crc32 check{more}")
    entries = layout["tensors"]
    for kind, idx, *_ in pieces:
        if kind in (VALUES, VALUES_RANS) and idx >= len(entries):
            raise ArtifactError(f"artifact is corrupt: a piece names tensor #{idx}, the layout has {len(entries)}")

    def codec(k: int) -> str:
        return "rans" if pieces[k][0] == VALUES_RANS else _side_codec(compressor)

    def one(k: int) -> bytes:
        kind, idx, pos, length, raw_len, _ = pieces[k]
        rows = int(entries[idx][2][0]) if kind == VALUES_RANS and entries[idx][2] else 0
        try:
            raw = decompress_bytes(blob[pos:pos + length], codec(k), max(rows, 1), raw_len)
        except Exception as exc:  # noqa: BLE001 - any fault here is a damaged file
            raise ArtifactError(f"artifact is corrupt: {names[k]} does not decompress with {codec(k)} "
                                f"({exc})") from None
        if len(raw) != raw_len:
            raise ArtifactError(f"artifact is corrupt: {names[k]} decompresses to {len(raw)} bytes, "
                                f"its table entry says {raw_len}")
        return raw

    raws = pool_map(one, [p[4] for p in pieces], threads or default_threads(), "decompress", progress)
    values: dict[int, list[bytes]] = {}
    for (kind, idx, *_), raw in zip(pieces, raws):
        if kind in (VALUES, VALUES_RANS):
            values.setdefault(idx, []).append(raw)
    rest_pieces = [raw for (kind, *_), raw in zip(pieces, raws) if kind == REST]
    if len(rest_pieces) != 1:
        raise ArtifactError(f"artifact is corrupt: {len(rest_pieces)} pieces of small tensors, expected 1")
    rest, pos = byte_unshuffle(rest_pieces[0]), 0
    out: dict[str, Tensor] = {}
    for i, (name, dtype_name, shape) in enumerate(entries):
        if dtype_name not in _DTYPES:
            raise ArtifactError(f"artifact is corrupt: tensor {name!r} has unknown dtype {dtype_name!r}")
        dtype, numel = _DTYPES[dtype_name], int(np.prod(shape, dtype=np.int64))
        nbytes = numel * dtype.itemsize
        if i in values:
            data = b"".join(values[i])
            if len(shape) != 2 or dtype != torch.int8 or len(data) != nbytes:
                raise ArtifactError(f"artifact is corrupt: the values of {name!r} do not fill its shape {shape}")
            t = torch.frombuffer(bytearray(data), dtype=torch.int8).reshape(shape[1], shape[0]).T.contiguous() \
                if nbytes else torch.empty(shape, dtype=dtype)
        else:
            data, pos = rest[pos:pos + nbytes], pos + nbytes
            if len(data) != nbytes:
                raise ArtifactError(f"artifact is corrupt: the small-tensor piece ends inside {name!r}")
            t = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape) \
                if nbytes else torch.empty(shape, dtype=dtype)
        out[name] = t
    if pos != len(rest):
        raise ArtifactError(f"artifact is corrupt: {len(rest) - pos} bytes left over in the small-tensor piece")
    return out, layout["meta"]


# --- format 1, and the reader of both ----------------------------------------------------------

def serialize_v1(quantized: dict[str, Tensor], meta: dict[str, Any], compressor: str = "brotli") -> bytes:
    """The format-1 writer: torch.save({'w', 'm'}) → byte shuffle (stride 2) → one Brotli-11 (or lzma) stream."""
    if compressor not in ("brotli", "lzma"):
        raise GolfError(f"format 1 has no compressor {compressor!r}")
    buf = io.BytesIO()
    torch.save({"w": quantized, "m": meta}, buf)
    payload = compress_bytes(byte_shuffle(buf.getvalue(), 2), compressor, 0)
    return _HEADER_V1.pack(ARTIFACT_MAGIC, 1, COMPRESSORS[compressor], len(payload), zlib.crc32(payload)) + payload


def _deserialize_v1(blob: bytes) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if len(blob) < _HEADER_V1.size:
        raise ArtifactError(f"artifact is truncated: {len(blob)} bytes, shorter than the "
                            f"{_HEADER_V1.size}-byte golf header")
    _, _, comp_id, length, crc = _HEADER_V1.unpack_from(blob)
    payload = blob[_HEADER_V1.size:]
    if len(payload) != length:
        raise ArtifactError(f"artifact is truncated: header declares {length} payload bytes, found {len(payload)}")
    if zlib.crc32(payload) != crc:
        raise ArtifactError(f"artifact is corrupt: crc32 of the payload is {zlib.crc32(payload):#010x}, "
                            f"header says {crc:#010x}")
    names = {1: "brotli", 2: "lzma"}
    if comp_id not in names:
        raise ArtifactError(f"artifact is corrupt: unknown compressor id {comp_id}")
    try:
        raw = decompress_bytes(payload, names[comp_id], 0, 0)
    except (brotli.error, lzma.LZMAError) as exc:
        raise ArtifactError(f"artifact is corrupt: the {names[comp_id]} stream does not decompress ({exc})") from None
    try:
        obj = torch.load(io.BytesIO(byte_unshuffle(raw)), map_location="cpu", weights_only=True)
        return obj["w"], obj["m"]
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"artifact is corrupt: the payload is not a golf state dict ({exc})") from None


def deserialize(blob: bytes, threads: int | None = None,
                progress: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of serialize (format 2) and of serialize_v1; each kind of damage raises ArtifactError naming it."""
    if len(blob) < 6:
        raise ArtifactError(f"artifact is truncated: {len(blob)} bytes, shorter than the golf header")
    if blob[:4] != ARTIFACT_MAGIC:
        raise ArtifactError(f"not a golf artifact: wrong magic {blob[:4]!r}, expected {ARTIFACT_MAGIC!r}")
    version = blob[4]
    if version == 1:
        return _deserialize_v1(blob)
    if version == 2:
        return _deserialize_v2(blob, threads, progress)
    raise ArtifactError(f"golf artifact version {version} is not supported (this golf reads 1 and 2)")
