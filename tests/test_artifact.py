"""The artifact's bytes (spec §5.4, golf/artifact.py and golf/compressors.py): every format version
round-trips, files of the old format still load, each kind of damage is one line naming the piece, and
compression reuses unchanged pieces."""
from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest
import torch

import golf.artifact as art
from golf.artifact import ArtifactError, deserialize, piece_bytes, serialize, serialize_v1
from golf.compressors import _RANS_HEAD, compress_bytes, rans_decode, rans_encode
from golf.runtime import GolfError

# An artifact written by golf's format-1 writer as it was before format 2 (commit 31cdd1b), base85:
# the tensors of old_tensors().
V1_FILE = (
    "M^8*f0RhPa00000003$al8hUr2mp>#ESZh6Drfde<_i$$0uB&tK<AKxE}gt*sSNV0)^}lgBff~fdF6-n%PTKLvs)2%r<J+=?1#`4"
    "p=v_$|L^DOH%WCREon(B?c3cviB**-`u<GF5En^5lFULQa!5o%5>JtXZ8FLMH7LLr{&LHm?vjb~rcc#O9WnIt8#TF(Co(FTo7!N>"
    "@iZIP!2)QVW&ufZd?#7<g0v{-(;|?yiI5RR;M*dsq&vx;=i7oTK%P~JxQcVmw<ltZb~$;W{9tZIW;{ieq#BR~B%M6DhU@rF!md#="
    "n`q21pov7N3K8Pln!A;xT9O4IeXe~cS8X}p){fDxdZ`YS>NLMU+{Inj)dE(DZXtMzEWitTL@MBTX|E9U9Di-lpx>HY3$O#%&r(n}"
    "qg!vE$9Y6RXxZ?Lq+d|A(ko8H_0j=6_I?Wh@DRKKkZx_ik1yF?QK%cOjxf}Wjw21)a6;p8`D*27WY^u^Ag}UfblckqB3^_BV-KHE"
    "{icpQjsN}6^ncJyV`g;!>;CBPm}$l|s=?huHG}Ymv%N>^p&m1w8H{Mg0hrN;v2PF>j)7q76we?J^RqD&It;8$+IApqPw!InrY7Z4"
    "`VR(?j_^jH(;{%9=OP9Sm<)&k;6t!chdcm?>8&>m3@yn&K$H;IVA;BNfSRKb1aP*;w9c#&QjDZ5NeB%DTd0N?5XusOn1vE!5VOma"
    "7>3YL$Y%rdx14r|3`-7vC%pV><)<?|0suO2E8rBsqfZDx?yn)7D_Pqv<yX2^BZHxiS(ttw(v@`6DxZ+mUPcxD^guE!K*=l>2EmnB"
    "q^W;Yhf|LAFAfh7BhI&1IDX#oiU}#iWG7KCRi9D~qo@mP(I{lpBXN3Os~dPzvKiJQ--;pI8hKk|hJkHFrz+^gx3w=g|8GYsGZZ?L"
    "!N>?fmB<2$L%SDLE8-TAF9lhfrd19yd+UsD6{SGQvRheB^4Rg63@ifeHPTLtz@J)ih0G|Y201OZ8TJ8{%%=0%LUHP#q(~0tF~%W="
    "Q#p0;siT&tlBWcZ@e#dTtMo5Qh=QV;yYblPt&Z6NwM&K%&oS2<j$J&(4n(!s=-Y7M$UY$l8ylflxf34jA6qcUeSOn7X7~s)y3*9D"
    "p+Y^)(2gY%q?N)4L>>S{*;GJg7*QZ?g>gi+*;@sI08ZH$LTD`5BiK}6B+JiRgZc^s!t&xNI>ZdHw@)wwZ690EKYyjZhR{Lq)L^mB"
    "nUOvKg6JEF|Kii|AGezkU>pDjGYrJz)BXV"
)


def old_tensors():
    q = {"w.q": (torch.arange(48).reshape(6, 8) % 7 - 3).to(torch.int8),
         "w.scale": torch.linspace(0.5, 1.0, 6).half(),
         "g": torch.tensor([1.0, -2.0, 0.25]).half()}
    meta = {"w": {"type": "int6", "bits": 6, "clip_sigmas": 12.85}, "g": {"type": "passthrough"}}
    return q, meta


def tensors(seed=0, rows=96, cols=160):
    """int6 and int8 matrices, their fp16 scales, and passthrough tensors of odd dtypes and shapes."""
    g = torch.Generator().manual_seed(seed)
    q = {"a.q": (torch.randn(rows, cols, generator=g) * 2.4).round().clamp(-31, 31).to(torch.int8),
         "a.scale": torch.rand(rows, generator=g).half(),
         "emb.q": (torch.randn(2 * rows, 32, generator=g) * 6.3).round().clamp(-127, 127).to(torch.int8),
         "emb.scale": torch.rand(2 * rows, generator=g).half(),
         "gain": torch.randn(7, generator=g).half(), "scalar": torch.tensor(0.5).half(),
         "bf": torch.randn(3, 5, generator=g).bfloat16(), "flags": torch.tensor([True, False, True]),
         "ids": torch.arange(5, dtype=torch.int64), "empty.q": torch.zeros(0, 4, dtype=torch.int8),
         "row.q": torch.tensor([[3, -1, 0, 2]], dtype=torch.int8)}
    meta = {"a": {"type": "int6", "bits": 6, "clip_sigmas": 12.85},
            "emb": {"type": "int8", "bits": 8, "clip_sigmas": 20.0}, "gain": {"type": "passthrough"}}
    return q, meta


def assert_same(got, want):
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k


@pytest.mark.parametrize("version,compressor", [(1, "brotli"), (1, "lzma"), (2, "brotli"), (2, "lzma"), (2, "rans"),
                                                (2, "best")])
def test_every_format_round_trips_bit_identical(version, compressor):
    q, meta = tensors()
    blob = serialize_v1(q, meta, compressor) if version == 1 else serialize(q, meta, compressor, threads=2)
    assert blob[:4] == b"GOLF" and blob[4] == version
    got, got_meta = deserialize(blob)
    assert got_meta == meta
    assert_same(got, q)


def test_a_file_of_the_old_format_still_loads():
    blob = base64.b85decode("".join(V1_FILE))
    assert blob[4] == 1
    q, meta = old_tensors()
    got, got_meta = deserialize(blob)
    assert got_meta == meta
    assert_same(got, q)
    assert serialize_v1(q, meta) == blob  # the kept writer still writes what golf wrote then


def test_format_2_is_no_bigger_than_the_single_stream():
    """Pieces lose nothing against the record's one Brotli stream (issue 14: within 0.1%, or smaller)."""
    q, meta = tensors(rows=256, cols=512)
    v1, v2 = len(serialize_v1(q, meta)), len(serialize(q, meta, "brotli"))
    assert v2 <= 1.001 * v1, (v1, v2)
    assert len(serialize(q, meta, "rans")) < v2


def test_best_keeps_the_smaller_coding_of_each_matrix():
    """rANS wins on near-Gaussian integers; Brotli on repeated rows (which ANS's order-0 tables miss)."""
    q, meta = tensors(rows=128, cols=256)
    g = torch.Generator().manual_seed(1)
    row = (torch.randn(1, 64, generator=g) * 6).round().to(torch.int8)
    q["rep.q"] = row.repeat(200, 1)  # like the embedding rows of tokens training never saw
    q["rep.q"][::7, 3] += 1
    sizes = {c: piece_bytes(serialize(q, meta, c)) for c in ("brotli", "rans", "best")}
    assert sizes["rans"]["a.q"] < sizes["brotli"]["a.q"] and sizes["brotli"]["rep.q"] < sizes["rans"]["rep.q"]
    assert all(sizes["best"][k] == min(sizes["brotli"][k], sizes["rans"][k]) for k in sizes["best"])
    blob = serialize(q, meta, "best")
    _, pieces = art._read_table(blob)
    assert {p[0] for p in pieces if p[1] == 0} == {art.VALUES_RANS}  # a.q
    assert {p[0] for p in pieces if p[1] == len(q) - 1} == {art.VALUES}  # rep.q
    assert_same(deserialize(blob)[0], q)


def test_big_matrices_are_cut_into_chunks(monkeypatch):
    monkeypatch.setattr(art, "CHUNK", 4096)
    q, meta = tensors()
    blob = serialize(q, meta)
    _, pieces = art._read_table(blob)
    a = [p for p in pieces if p[0] == art.VALUES and p[1] == 0]
    assert len(a) == -(-96 * 160 // 4096) == 4
    assert_same(deserialize(blob)[0], q)
    assert set(piece_bytes(blob)) == {"a.q", "emb.q", "empty.q", "row.q"}
    assert piece_bytes(blob)["a.q"] == sum(p[3] for p in a)
    assert piece_bytes(serialize_v1(q, meta)) == {}


def flip_in_piece(blob: bytes, k: int) -> bytes:
    _, pieces = art._read_table(blob)
    _, _, pos, length, _, _ = pieces[k]
    out = bytearray(blob)
    out[pos + length // 2] ^= 0x55
    return bytes(out)


def one_line_error(blob: bytes) -> str:
    with pytest.raises(ArtifactError) as info:
        deserialize(blob)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, GolfError)
    return msg


@pytest.mark.parametrize("compressor", ["brotli", "rans", "best"])
def test_a_corrupt_piece_is_named(monkeypatch, compressor):
    monkeypatch.setattr(art, "CHUNK", 4096)
    q, meta = tensors()
    blob = serialize(q, meta, compressor)
    _, pieces = art._read_table(blob)
    n = len(pieces)
    if compressor == "brotli":  # piece 3 is a.q's second chunk (after the layout and its first chunk)
        want = f"piece 3 of {n} (a.q, chunk 2 of 4)"
    elif compressor == "rans":  # one piece per matrix under rANS
        want = f"piece 3 of {n} (emb.q)"
    else:  # a.q took rANS (one piece), emb.q Brotli (chunks)
        want = f"piece 3 of {n} (emb.q, chunk 1 of 2)"
    assert one_line_error(flip_in_piece(blob, 2)) == f"artifact is corrupt: {want} fails its crc32 check"
    msg = one_line_error(flip_in_piece(flip_in_piece(blob, 1), n - 1))
    assert msg.startswith("artifact is corrupt: piece 2 of") and msg.endswith("(and 1 more)")
    assert "(row scales and small tensors)" in one_line_error(flip_in_piece(blob, n - 1))
    assert f"piece 1 of {n} (the layout" in one_line_error(flip_in_piece(blob, 0))


def test_damage_to_the_header_and_table():
    q, meta = tensors()
    blob = serialize(q, meta)
    assert "truncated: 5 bytes" in one_line_error(blob[:5])
    assert "truncated: header declares" in one_line_error(blob[:-10])
    assert "wrong magic" in one_line_error(b"XXXX" + blob[4:])
    assert "version 9 is not supported" in one_line_error(blob[:4] + b"\x09" + blob[5:])
    table = bytearray(blob)
    table[art._HEADER_V2.size + 3] ^= 1  # a length in the piece table
    assert "piece table fails its crc32" in one_line_error(bytes(table))
    # a valid table around a piece that is not brotli: named, with the codec
    bad = bytearray(blob)
    _, pieces = art._read_table(blob)
    kind, idx, pos, length, raw_len, _ = pieces[1]
    bad[pos:pos + length] = b"\xff" * length
    entry = art._HEADER_V2.size + art._PIECE.size
    bad[entry:entry + art._PIECE.size] = art._PIECE.pack(kind, idx, length, raw_len, zlib.crc32(b"\xff" * length))
    bad[8:12] = struct.pack("<I", zlib.crc32(bytes(bad[art._HEADER_V2.size:pieces[0][2]])))
    assert "(a.q) does not decompress with brotli" in one_line_error(bytes(bad))


def test_old_format_damage_is_still_reported():
    q, meta = tensors()
    blob = serialize_v1(q, meta)
    assert "truncated: header declares" in one_line_error(blob[:-10])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    assert "corrupt: crc32" in one_line_error(bytes(flipped))
    garbage = b"\x00not brotli at all\xff" * 3
    header = struct.pack("<4sBBQI", b"GOLF", 1, 1, len(garbage), zlib.crc32(garbage))
    assert "corrupt: the brotli stream" in one_line_error(header + garbage)


def test_rans_fits_tables_to_column_groups():
    g = torch.Generator().manual_seed(3)
    spread = torch.where(torch.arange(64) % 2 == 0, 0.5, 6.0)  # two kinds of columns
    W = (torch.randn(64, 400, generator=g) * spread[:, None]).round().clamp(-31, 31).to(torch.int8)  # (columns, rows)
    data = rans_encode(W.numpy())
    lo, n, K = _RANS_HEAD.unpack_from(data)
    assert K > 1 and lo == int(W.min()) and n == int(W.max()) - lo + 1
    assert rans_decode(data, 400, W.numel()) == W.numpy().tobytes()
    iid = (torch.randn(64, 400, generator=g) * 2.4).round().to(torch.int8)
    assert _RANS_HEAD.unpack_from(rans_encode(iid.numpy()))[2] == 1  # one table when the columns are alike
    assert len(rans_encode(W.numpy())) < len(compress_bytes(W.numpy().tobytes(), "brotli", 400))


def test_serializing_again_compresses_only_what_changed(monkeypatch):
    q, meta = tensors()
    calls = []
    monkeypatch.setattr(art, "compress_bytes",
                        lambda raw, codec, rows: calls.append(codec) or compress_bytes(raw, codec, rows))
    cache: dict = {}
    first = serialize(q, meta, cache=cache)
    n_first = len(calls)
    assert serialize(q, meta, cache=cache) == first and len(calls) == n_first  # nothing changed, nothing compressed
    q2 = dict(q, **{"a.q": q["a.q"].clone()})
    q2["a.q"][0, 0] = 0 if q["a.q"][0, 0] != 0 else 1
    again = serialize(q2, meta, cache=cache)
    assert len(calls) == n_first + 1 and again != first  # a.q's one piece
    assert_same(deserialize(again)[0], q2)


def test_unknown_compressor_is_a_golf_error():
    q, meta = tensors()
    with pytest.raises(GolfError, match="unknown compressor 'zstd'"):
        serialize(q, meta, "zstd")
