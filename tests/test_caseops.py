"""CaseOps (spec §8, PR #1729): the transform round-trips every string, ``prepare_data(caseops=True)``
writes shards the tokenizer decodes back to the documents plus byte sidecars that sum to their
original UTF-8 length, and BPB is charged on those original bytes in every evaluation mode."""
from __future__ import annotations

import json
import math
import random
import shutil

import numpy as np
import pytest
import torch

from golf import caseops
from golf.bpb import BPBAccumulator, SidecarBytes, eval_byte_counts, token_bytes
from golf.caseops import ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE
from golf.cli import main as golf_main
from golf.data_binding import load_tokenizer
from golf.data_check import check_data_dir
from golf.shards import byte_shard_name, list_shards, read_shard, write_shard
from golf.val_stream import load_val_bytes, load_val_tokens
from golf.evaluate import eval_plain, eval_sliding, eval_ttt
from golf.runtime import GolfError
from golf.tokenizer import prepare_data
from conftest import tiny_cfg_32x3, tiny_luts, tiny_model, tiny_tokens

TRICKY = [
    "", "a", "A", "hello", "Hello", "HELLO", "Hello World", "McDonald", "iPhone", "NASA's", "I", "I am OK.",
    "abcDEF", "ABCdef", "x1Y2Z", "A1B2", "R2-D2", "e.g. U.S.A.", "123", "hello 😀 World", "😀A😀", "ÉCOLE", "École",
    "éCOLE", "Straße", "STRASSE", "GROß", "ß", "ẞ", "İstanbul", "İ", "ıI", "ǅungla", "ǄUNGLA", "\u212a", "Ⱥⱥ", "ȺȾ",
    "ΟΔΟΣ", "Οδός", "σοφός", "ΣΟΦΟΣ", "ς", "Σ", "ΐ", "ﬁne", "Ⅻ", "Ⓐⓑ", "日本語 Text", "\u0301A\u0301",
    "line one\nLine Two\r\nLINE THREE\n", "\t Tabs\tAND\tSpaces  ", "\x00Nul\x00",
    *OPERATORS, "".join(OPERATORS), TITLE + "hello", ESC + ESC, CAPNEXT + "A", "A" + ALLCAPS + "B", "\ue004\uf8ff",
]


def _random_strings(n: int, seed: int = 0) -> list[str]:
    """Random strings over letters of every case class, operators, digits, spaces, emoji, any code point."""
    rng = random.Random(seed)
    cased = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and chr(c).lower() != chr(c).upper()]
    pools = [cased, list("aAbBzZ ßİıΣσς"), list(OPERATORS), list("0123 \n\t.,'-😀日")]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(0, 30)):
            if rng.random() < 0.1:
                c = rng.randrange(0x110000 - 0x800)
                chars.append(chr(c + 0x800 if c >= 0xD800 else c))  # any code point but the surrogates
            else:
                chars.append(rng.choice(rng.choice(pools)))
        out.append("".join(chars))
    return out


# --- the transform ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky(text):
    enc = caseops.encode(text)
    assert caseops.decode(enc) == text
    assert sum(caseops.original_bytes(enc)) == len(text.encode("utf-8"))


def test_round_trip_fuzz_and_every_cased_character():
    for text in _random_strings(3000):
        enc = caseops.encode(text)
        assert caseops.decode(enc) == text, repr(text)
        assert sum(caseops.original_bytes(enc)) == len(text.encode("utf-8")), repr(text)
    for cp in range(0x110000):
        c = chr(cp)
        if 0xD800 <= cp < 0xE000 or c.lower() == c.upper():
            continue
        for text in (c, c + c, c + "a", "A" + c, "x" + c + "Y", c + "BC", "Ab" + c):
            assert caseops.decode(caseops.encode(text)) == text, (hex(cp), text)


def test_encodings():
    """The record's rules (tests/test_oracle.py holds them against #1855's own outputs)."""
    assert caseops.encode("Hello World") == f"{TITLE}hello {TITLE}world"
    assert caseops.encode("NASA's") == f"{ALLCAPS}nasa's"
    assert caseops.encode("McDonald") == f"{TITLE}mc{CAPNEXT}donald"
    assert caseops.encode("CPUs") == f"{TITLE}c{CAPNEXT}p{CAPNEXT}us"
    assert caseops.encode("iPhone") == f"i{CAPNEXT}phone"
    assert caseops.encode("A I") == f"{TITLE}a {TITLE}i"
    assert caseops.encode("ÉCOLE") == f"É{ALLCAPS}cole"  # only ASCII letters are cased
    assert caseops.encode("GROß") == f"{ALLCAPS}groß"
    for kept in ("ß", "İ", "ǅ", "\u212a", "123 ok", "Ⱥ", "ΣΟΦΙΑ"):
        assert caseops.encode(kept) == kept
    assert caseops.encode(TITLE + "x") == ESC + TITLE + "x"
    assert caseops.encode("\ue000") == "\ue000"  # not an operator of caseops_v1
    assert OPERATORS == ("\ue001", "\ue002", "\ue003", "\ue004")  # the shipped tokenizer's ids 4-7


@pytest.mark.parametrize("bad", [TITLE, ESC, CAPNEXT + "1", TITLE + " a", ALLCAPS, ALLCAPS + " ", "a" + CAPNEXT])
def test_decode_rejects_what_encode_never_makes(bad):
    with pytest.raises(ValueError, match="caseops: .* at "):
        caseops.decode(bad)


# --- prepare_data(caseops=True) --------------------------------------------------------------

VAL_DOCS = [
    "Hello World. The NASA team met McDonald at the iPhone launch in Paris.",
    "ÉCOLE normale, Straße, İstanbul and ΣΟΦΙΑ σοφός. Ⱥ is two bytes, ⱥ three.",
    "Numbers 2024 and 3.14 stay; the emoji 😀 too. Private \ue000 use \ue003 chars are escaped.",
    "  Leading spaces,  Double  SPACES\nand a newline.  ",  # the normalizer drops the ends: not charged
    "   ",  # no token at all: nothing charged
]
CLEAN = 3  # the first three decode back exactly (nothing the nmt_nfkc normalizer changes)
TRAIN_DOCS = [f"Document {i}: The Quick Brown Fox jumps over the LAZY dog; Alice and Bob say HELLO to McKay."
              for i in range(12)]


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("caseops")
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in VAL_DOCS + TRAIN_DOCS), encoding="utf-8")
    out = root / "data"
    summary = prepare_data(str(corpus), out, vocab_size=400, val_docs=len(VAL_DOCS), shard_tokens=64,
                           progress=False, caseops=True)
    return out, summary


def _docs(stream: np.ndarray) -> list[np.ndarray]:
    starts = np.flatnonzero(stream == 1).tolist() + [len(stream)]
    assert starts[0] == 0
    return [np.arange(a, b) for a, b in zip(starts, starts[1:])]


def test_prepare_caseops_shards_tokenizer_and_sidecars(caseops_data, capsys):
    out, summary = caseops_data
    meta = json.loads((out / "prepare.json").read_text())
    assert meta["caseops"] is True and meta["tokenizer"]["settings"]["user_defined_symbols"] == list(OPERATORS)
    val_files = list_shards(out, "val")
    assert len(val_files) > 1  # 64-token shards: documents straddle shards, so do their sidecars
    assert meta["shards"]["val_bytes"] == [byte_shard_name(i) for i in range(len(val_files))]
    sp = load_tokenizer(out / "tokenizer.model", summary["vocab_size"])
    assert [sp.id_to_piece(i) for i in range(4, 8)] == list(OPERATORS)  # ids 0-7 reserved
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)

    tokens = np.concatenate([read_shard(f) for f in val_files]).astype(np.int64)
    nbytes = np.concatenate([read_shard(out / n) for n in meta["shards"]["val_bytes"]]).astype(np.int64)
    assert len(tokens) == len(nbytes) == meta["tokens"]["val"]
    docs = _docs(tokens)
    assert len(docs) == len(VAL_DOCS)
    for k, (doc, idx) in enumerate(zip(VAL_DOCS, docs)):
        if k >= CLEAN:  # the normalizer drops leading/trailing spaces, which the record charges to no token
            assert 0 <= nbytes[idx].sum() < len(doc.encode("utf-8")), k
        else:  # BPB's bytes are the original ones (tests/test_oracle.py: equal to the record's sidecar)
            assert nbytes[idx].sum() == len(doc.encode("utf-8")), k
            assert caseops.decode(sp.decode(tokens[idx[1:]].tolist())) == doc
            assert nbytes[idx[0]] == 0  # BOS
            t, b = tokens[idx], nbytes[idx]
            escaped = np.zeros(len(t), bool)  # a literal operator character of the text, after ESC
            for j in range(1, len(t)):
                escaped[j] = t[j - 1] == 7 and not escaped[j - 1]
            assert (b[np.isin(t, [4, 5, 6, 7]) & ~escaped] == 0).all() and (b[escaped] == 3).all()
    assert len(docs[-1]) == 1 and nbytes[docs[-1][0]] == 0  # "   ": a lone BOS, no byte charged (as the record)

    train = np.concatenate([read_shard(f) for f in list_shards(out, "train")]).astype(np.int64)
    first = _docs(train)[0]
    assert caseops.decode(sp.decode(train[first[1:]].tolist())) == TRAIN_DOCS[0]
    assert not list(out.glob("fineweb_train_bytes_*"))

    rows = check_data_dir(out)  # golf data check: sidecars checked and listed apart from the token shards
    assert [r["file"] for r in rows if r["split"] == "val"] == [f.name for f in val_files]
    assert [r["file"] for r in rows if r["split"] == "val_bytes"] == meta["shards"]["val_bytes"]
    capsys.readouterr()
    assert golf_main(["data", "check", str(out)]) == 0
    table = capsys.readouterr().out  # the vocabulary an integer, a sidecar's row marked, no NaN
    assert f" {meta['vocab_size']}\n" in table and "NaN" not in table and f"{meta['vocab_size']}.0" not in table


def test_eval_byte_counts_reads_the_sidecar(caseops_data, demo_data):
    out, summary = caseops_data
    cfg = tiny_cfg_32x3(data_dir=str(out), tokenizer_path=str(out / "tokenizer.model"), vocab_size=summary["vocab_size"],
                   eval_seq_len=16)
    val = load_val_tokens(out, 16)
    counts = eval_byte_counts(cfg, val)
    full = np.concatenate([read_shard(f) for f in sorted(out.glob("fineweb_val_bytes_*.bin"))])
    assert isinstance(counts, SidecarBytes) and counts.counts.tolist() == full[:val.numel()].tolist()
    plain = tiny_cfg_32x3(data_dir=str(demo_data.data_dir), tokenizer_path=str(demo_data.tokenizer_path),
                     vocab_size=demo_data.vocab_size)
    assert not isinstance(eval_byte_counts(plain, load_val_tokens(demo_data.data_dir, 32)), SidecarBytes)


def test_sidecar_of_wrong_length_or_missing_is_one_clear_error(caseops_data, tmp_path):
    out, _ = caseops_data
    bad = tmp_path / "data"
    shutil.copytree(out, bad)
    n = len(read_shard(bad / "fineweb_val_000001.bin"))
    side = bad / byte_shard_name(1)
    write_shard(side, np.ones(n - 1, dtype=np.uint16))
    with pytest.raises(GolfError, match=f"{side}.* holds {n - 1} entries; expected {n}, one per token of "
                                        "fineweb_val_000001.bin"):
        load_val_bytes(bad, 10**6)
    side.unlink()
    with pytest.raises(GolfError, match=f"{side}.* is missing: expected {n} entries"):
        load_val_bytes(bad, 10**6)


# --- BPB on the original bytes ---------------------------------------------------------------

def test_bpb_through_the_sidecar_is_nll_over_original_bytes():
    counts = torch.tensor([0, 5, 0, 3, 1, 7, 0, 2], dtype=torch.int32)  # per token of a made-up val stream
    tokens = torch.tensor([1, 9, 4, 9, 9, 9, 1, 9])
    nll = torch.tensor([2.0, 0.5, 1.5, 3.0, 0.25, 4.0, 1.0])  # per target, tokens 1..7
    acc = BPBAccumulator()
    pos = torch.arange(1, 8)
    acc.add(nll[:3], tokens[:3], tokens[1:4], SidecarBytes(counts), pos[:3])
    acc.add(nll[3:], tokens[3:7], tokens[4:], SidecarBytes(counts), pos[3:])
    res = acc.result()
    assert res["n_bytes"] == 18 and res["val_bpb"] == pytest.approx(nll.double().sum().item() / (math.log(2) * 18))
    with pytest.raises(ValueError, match="pass tgt_pos"):
        token_bytes(SidecarBytes(counts), tokens[:-1], tokens[1:])


def test_every_eval_mode_charges_the_sidecar_by_position():
    """Sidecar counts equal to what the tables charge give the tables' results in every mode (so the
    positions line up); different counts change n_bytes to their sum over the scored targets."""
    cfg, luts, tokens = tiny_cfg_32x3(), tiny_luts(), tiny_tokens()
    same = SidecarBytes(torch.cat((torch.zeros(1, dtype=torch.int64), token_bytes(luts, tokens[:-1], tokens[1:]))))
    odd = SidecarBytes(torch.arange(tokens.numel()) % 5)
    for fn in (eval_plain, eval_sliding, eval_ttt):
        ref = fn(tiny_model(cfg), tokens, luts, cfg, progress=False)
        got = fn(tiny_model(cfg), tokens, same, cfg, progress=False)
        assert (got["val_bpb"], got["n_bytes"]) == pytest.approx((ref["val_bpb"], ref["n_bytes"]), rel=1e-12)
        other = fn(tiny_model(cfg), tokens, odd, cfg, progress=False)
        assert other["n_bytes"] == int(odd.counts[1:].sum()) and other["val_loss"] == pytest.approx(ref["val_loss"])
    with pytest.raises(GolfError, match="byte sidecar holds 10 entries for 225 val tokens"):
        eval_plain(tiny_model(cfg), tokens, SidecarBytes(torch.zeros(10, dtype=torch.int64)), cfg, progress=False)


def test_byte_tables_are_refused_on_caseops_data(caseops_data):
    out, summary = caseops_data
    cfg = tiny_cfg_32x3(data_dir=str(out))
    with pytest.raises(GolfError, match="CaseOps data.*eval_byte_counts"):
        eval_plain(tiny_model(cfg), tiny_tokens(), tiny_luts(), cfg, progress=False)


def test_prepare_again_replaces_the_sidecars_and_a_given_tokenizer_needs_the_operators(caseops_data, demo_data,
                                                                                       tmp_path):
    out, _ = caseops_data
    again = tmp_path / "data"
    shutil.copytree(out, again)
    corpus = out.parent / "docs.jsonl"
    prepare_data(str(corpus), again, vocab_size=400, val_docs=len(VAL_DOCS), progress=False)  # without CaseOps
    assert not list(again.glob("fineweb_val_bytes_*"))
    assert "caseops" not in json.loads((again / "prepare.json").read_text())
    with pytest.raises(GolfError, match="no piece for the CaseOps operator.*U\\+E001, U\\+E002, U\\+E003, U\\+E004"):
        prepare_data(str(corpus), tmp_path / "other", val_docs=2, progress=False, caseops=True,
                     tokenizer=demo_data.tokenizer_path)
    made = prepare_data(str(corpus), tmp_path / "given", val_docs=2, progress=False, caseops=True,
                        tokenizer=out / "tokenizer.model")
    assert made["caseops"] is True and made["shards"]["val_bytes"] == [byte_shard_name(0)]


def test_training_and_evaluation_charge_the_original_bytes(caseops_data, tmp_path):
    """golf train and golf evaluate on CaseOps data: every BPB is over the sidecar's original bytes."""
    import yaml

    from golf.cli import main as golf_main
    from golf.val_stream import load_val_bytes, load_val_tokens

    data_dir, summary = caseops_data
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(dict(
        data_dir=str(data_dir), tokenizer_path=str(summary["tokenizer_path"]), vocab_size=int(summary["vocab_size"]),
        model_dim=32, num_layers=2, num_heads=2, num_kv_heads=1, rope_dims=4, xsa_last_n=2, num_loops=0,
        loop_start=0, loop_end=0, parallel_start_layer=2, train_seq_len=32, eval_seq_len=32, eval_stride=8,
        train_batch_tokens=64, grad_accum_total=1, iterations=3, max_wallclock_seconds=0, warmup_steps=0,
        val_loss_every=0, compile="off", device="cpu", gptq_calibration_batches=1, quant_passthrough_numel=64,
        ttt_chunk_tokens=64, ttt_batch_seqs=2)))
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    assert golf_main(["quantize", "--run-dir", str(run)]) == 0
    tokens = load_val_tokens(data_dir, 32)
    original = int(load_val_bytes(data_dir, tokens.numel())[1:].sum())  # every target but the first token
    for mode in ("plain", "sliding", "ttt"):
        assert golf_main(["evaluate", "--run-dir", str(run), "--mode", mode]) == 0
        res = json.loads((run / f"eval_{mode}.json").read_text())
        assert res["n_bytes"] == original, mode


def test_a_caseops_tokenizer_without_caseops_is_refused(caseops_data, tmp_path):
    """Plain shards from a CaseOps tokenizer would be scored with the wrong bytes: refused up front."""
    data_dir, summary = caseops_data
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in TRAIN_DOCS), encoding="utf-8")
    with pytest.raises(GolfError, match="pass --caseops"):
        prepare_data(str(corpus), tmp_path / "plain", val_docs=2, progress=False,
                     tokenizer=str(summary["tokenizer_path"]))
    assert not (tmp_path / "plain").exists()
