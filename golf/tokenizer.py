"""SentencePiece BPE tokenizer (spec §1.3) and ``prepare_data``, behind ``golf data prepare``.

``prepare_data`` follows the challenge's export pipeline (spec §1.2): with ``shuffle_seed`` given
(``golf data prepare`` gives 0 unless ``--keep-order``) all documents are shuffled by a seeded RNG,
the first ``val_docs`` of the shuffled order go to val and the rest to train in that order, as
FineWeb's split (val = the first 50,000 shuffled documents); without it, the first ``val_docs`` in
corpus order go to val and the rest to train. Each is encoded as ``[BOS=1] + sp.encode(text)`` with
no EOS, concatenated and cut into shards of ``shard_tokens`` tokens regardless of document
boundaries. The tokenizer is trained on NUL-to-space, stripped documents in corpus order (whatever
the shuffle), which by default include the val documents as in the record (spec §9.18;
``exclude_val_from_tokenizer`` is the fix: then only the train documents, still in corpus order).
With ``tokenizer=PATH`` (``golf data prepare --tokenizer``) an existing model makes the shards instead.
Either way prepare.json records the tokenizer's sha256, so shards and tokenizer stay bound.

``caseops=True`` (``--caseops``, spec §8, PR #1729): documents go through ``golf.caseops.encode``
before the tokenizer (trained with the four operators as user-defined symbols), and every val shard
gets a byte sidecar ``fineweb_val_bytes_%06d.bin`` (same format): per token, the UTF-8 bytes of the
*original* text it accounts for, which BPB charges instead of the byte tables (``golf.bpb``).
"""
from __future__ import annotations

import filecmp
import glob
import io
import logging
import os
import shutil
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import sentencepiece as spm
from tqdm.auto import tqdm

from golf.bpb import build_byte_luts
from golf.caseops import OPERATORS, encode as caseops_encode, original_bytes
from golf.corpora import iter_documents
from golf.data_binding import (  # noqa: F401  (load_tokenizer: tokenizer users import it from here too)
    PREPARE_META, load_tokenizer, read_prepare_meta, shard_digests, tokenizer_fingerprint,
)
from golf.shards import byte_shard_name, shard_name, write_shard
from golf.runtime import GolfError, atomic_write_bytes, atomic_write_json, bar_interval

# Trainer settings of the challenge's export script and the #1394 README (spec §1.3).
SPEC_TRAINER_SETTINGS: dict[str, Any] = dict(
    model_type="bpe",
    character_coverage=0.999,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=0, bos_id=1, eos_id=2, unk_id=3,
    hard_vocab_limit=False,
)
BOS_ID = SPEC_TRAINER_SETTINGS["bos_id"]
SP_DEFAULT_MAX_SENTENCE_LENGTH = 4192  # SentencePiece's default, in effect in the record
SPEC_VAL_DOCS = 50_000  # spec §1.2
DEFAULT_VOCAB_SIZE = 8192  # the record's SP8192


def clean_for_training(text: str) -> str:
    """What the export script feeds the trainer: NUL replaced by a space, then stripped."""
    return text.replace("\x00", " ").strip()


def train_tokenizer(docs: Iterable[str], model_path: str | Path, vocab_size: int,
                    user_defined_symbols: tuple[str, ...] = ()) -> spm.SentencePieceProcessor:
    """Train a BPE model with the spec §1.3 settings, one document per trainer "sentence".

    ``user_defined_symbols``: pieces always kept whole, with the ids after UNK (CaseOps' operators).

    One deviation, needed for whole-document corpora: ``max_sentence_length`` is raised to the
    longest document. With the default 4192 bytes the trainer silently skips longer documents
    (the record lost its long FineWeb docs that way; here every Shakespeare play would be lost).
    BPE splits on whitespace before counting pairs, so a longer limit only adds text.
    """
    if not 0 < vocab_size <= 2**16:
        raise GolfError(f"vocab_size must be in (0, 65536] for uint16 shards, got {vocab_size}")
    texts = [t for t in (clean_for_training(d) for d in docs) if t]
    if not texts:
        raise GolfError("no non-empty documents to train the tokenizer on")
    longest = max(len(t.encode("utf-8")) for t in texts)
    model = io.BytesIO()
    # num_threads stays at its default (16): the pieces do not depend on it, but the model file
    # records it, and the same corpus should give the same file on every machine.
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
            max_sentence_length=max(SP_DEFAULT_MAX_SENTENCE_LENGTH, longest + 1),
            minloglevel=2, **SPEC_TRAINER_SETTINGS,
            **({"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}))
    except RuntimeError as exc:  # e.g. a vocab smaller than the 4 specials + 256 bytes + characters
        raise GolfError(f"SentencePiece could not train a {vocab_size}-piece tokenizer for {model_path}: {exc}") from exc
    atomic_write_bytes(model_path, model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def default_val_docs(n_docs: int) -> int:
    """The spec's 50,000 val documents, capped at a tenth of the corpus so that small corpora
    keep most of their text for training."""
    return max(1, min(SPEC_VAL_DOCS, n_docs // 10))


def _caseops_token_bytes(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """``[BOS] + ids``'s original UTF-8 bytes for one caseops-encoded document ``text``.

    ``offsets``: SentencePiece's (begin, end) character span of each token in ``text``. As the
    record's sidecar (#1729, #1855): a token is charged the original bytes of its own span, an
    operator 0 and BOS 0; characters the normalizer dropped (leading or trailing spaces) are charged
    to no token, as the record does not charge them.
    """
    cum = np.concatenate(([0], np.cumsum(original_bytes(text), dtype=np.int64)))
    counts = np.zeros(len(offsets) + 1, dtype=np.int64)
    if offsets:
        spans = np.array(offsets, dtype=np.int64)
        counts[1:] = cum[spans[:, 1]] - cum[spans[:, 0]]
    if counts.max() >= 2**16:
        raise GolfError(f"a token accounts for {int(counts.max())} bytes, more than a uint16 byte sidecar holds")
    return counts


def _write_split(sp: spm.SentencePieceProcessor, docs: list[str], out_dir: Path, split: str,
                 shard_tokens: int, progress: bool, caseops: bool = False) -> dict[str, Any]:
    """Encode ``[BOS] + ids`` per document, concatenate, and cut into shards of ``shard_tokens``.

    ``caseops``: encode ``caseops.encode(doc)``; for val also write each shard's byte sidecar.
    """
    sidecar = caseops and split == "val"
    buf = np.empty(shard_tokens, dtype=np.uint16)
    nbytes = np.empty(shard_tokens, dtype=np.uint16) if sidecar else None
    fill, total, shards, byte_files = 0, 0, [], []

    def flush() -> None:
        nonlocal fill
        if fill:
            if nbytes is not None:
                byte_files.append(write_shard(out_dir / byte_shard_name(len(shards)), nbytes[:fill]).name)
            shards.append(write_shard(out_dir / shard_name(split, len(shards)), buf[:fill]).name)
            fill = 0

    def add(ids: list[int], counts: np.ndarray | None = None) -> None:
        nonlocal fill, total
        toks = np.empty(len(ids) + 1, dtype=np.uint16)
        toks[0] = BOS_ID  # explicit: SentencePiece never emits it (spec §8's data-prep bug)
        toks[1:] = ids
        total += len(toks)
        done = 0
        while done < len(toks):  # a document may straddle two shards (spec §1.2)
            take = min(len(toks) - done, shard_tokens - fill)
            buf[fill:fill + take] = toks[done:done + take]
            if nbytes is not None:
                nbytes[fill:fill + take] = counts[done:done + take]
            fill, done = fill + take, done + take
            if fill == shard_tokens:
                flush()

    batch, threads = 256, os.cpu_count() or 1
    with tqdm(total=len(docs), desc=f"encode {split}", unit="doc", disable=not progress,
              mininterval=bar_interval()) as bar:
        for i in range(0, len(docs), batch):
            texts = [caseops_encode(d) for d in docs[i:i + batch]] if caseops else docs[i:i + batch]
            if sidecar:
                for text, enc in zip(texts, sp.encode(texts, return_type="offset_mapping", num_threads=threads)):
                    add(enc["ids"], _caseops_token_bytes(text, enc["offsets"]))
            else:
                for ids in sp.encode(texts, out_type=int, num_threads=threads):
                    add(ids)
            bar.update(min(batch, len(docs) - i))
    flush()
    return {"docs": len(docs), "tokens": total, "shards": shards, **({"byte_files": byte_files} if sidecar else {})}


def _previous_dataset(out: Path, tokenizer: Path | None) -> list[Path]:
    """The files of an earlier ``golf data prepare`` in ``out``, which the new dataset replaces.

    Shards or a tokenizer that no prepare.json accounts for were not written by golf (an official
    download, a copy, another tool's output): golf refuses rather than replace them. The one
    exception is a tokenizer.model byte-identical to ``--tokenizer``: replacing it changes nothing.
    """
    if out.exists() and not out.is_dir():
        raise GolfError(f"--out {str(out)!r} is a file; expected a folder (or a path that does not exist)")
    if not out.is_dir():
        return []
    shards = [*sorted(out.glob("fineweb_val_*.bin")), *sorted(out.glob("fineweb_train_*.bin"))]
    tok = out / "tokenizer.model"
    meta = read_prepare_meta(out)
    if meta is None:
        same_tokenizer = tokenizer is not None and tok.is_file() and filecmp.cmp(tok, tokenizer, shallow=False)
        foreign = shards + ([tok] if tok.exists() and not same_tokenizer else [])
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise GolfError(f"{str(out)!r} holds {foreign[0].name}{more} but no {PREPARE_META}, so golf did not "
                            "write them and will not replace them; prepare into a new folder, or move them away")
        return [tok] if tok.exists() else []
    listed = {name for split in ("val", "train", "val_bytes") for name in (meta.get("shards") or {}).get(split, [])}
    unlisted = [f for f in shards if f.name not in listed]
    if unlisted:
        raise GolfError(f"{str(out)!r} holds {unlisted[0].name}, which its {PREPARE_META} does not list, so golf "
                        "did not write it and will not replace it; prepare into a new folder, or move it away")
    return [out / PREPARE_META, *([tok] if tok.exists() else []), *shards]  # the done-marker goes first


def _drop_stale_staging(out: Path) -> None:
    """Remove the half-built datasets of earlier prepares into ``out`` whose process is gone (killed, -9)."""
    from golf.runtime import _pid_alive

    for folder in out.parent.glob(f".{glob.escape(out.name)}.prepare-*"):
        pid = folder.name[len(f".{out.name}.prepare-"):].split("-")[0]
        if folder.is_dir() and (not pid.isdigit() or not _pid_alive(int(pid))):
            logging.getLogger("golf").info("removing %s, the half-built dataset of a prepare that was killed", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _swap_in(staging: Path, out: Path, previous: list[Path]) -> None:
    """Move the finished dataset from ``staging`` into ``out``, the previous one out of the way.

    The previous files are renamed aside first (prepare.json first, so a folder caught half-way never
    looks finished) and deleted only once every new file is in place; prepare.json comes in last.
    """
    out.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.replaced-"))
    try:
        for f in previous:
            os.replace(f, aside / f.name)
        for f in sorted(staging.iterdir(), key=lambda p: p.name == PREPARE_META):
            os.replace(f, out / f.name)
    except OSError as exc:
        raise GolfError(f"could not move the new dataset into {str(out)!r} ({exc}); the files it replaced "
                        f"are kept in {str(aside)!r}") from exc
    shutil.rmtree(aside)


def _given_tokenizer(path: Path, vocab_size: int | None, caseops: bool = False) -> spm.SentencePieceProcessor:
    """``--tokenizer``: a SentencePiece model fit for the record's shard layout (BOS = 1, "▁" piece);
    with ``caseops``, one that has the four operators as pieces."""
    sp = load_tokenizer(path, vocab_size)
    if sp.bos_id() != BOS_ID:
        raise GolfError(f"tokenizer {str(path)!r} has BOS id {sp.bos_id()}; the shard layout starts every "
                        f"document with BOS = {BOS_ID} (spec §1.2)")
    missing = [f"U+{ord(op):04X}" for op in OPERATORS if caseops and sp.id_to_piece(sp.piece_to_id(op)) != op]
    if missing:
        raise GolfError(f"tokenizer {str(path)!r} has no piece for the CaseOps operator(s) {', '.join(missing)}; "
                        "--caseops needs a tokenizer trained with them (leave --tokenizer out to train one)")
    if not caseops and all(sp.id_to_piece(sp.piece_to_id(op)) == op for op in OPERATORS):
        raise GolfError(f"tokenizer {str(path)!r} was trained for CaseOps (it has the four operator pieces); "
                        "pass --caseops, or leave --tokenizer out to train a plain one")
    build_byte_luts(sp, sp.get_piece_size())  # fails now if "▁" has no id (spec §1.6)
    return sp


def prepare_data(corpus: str, out_dir: str | Path, vocab_size: int | None = None, val_docs: int | None = None,
                 shard_tokens: int = 10**8, tokenizer_train_docs: int | None = None,
                 exclude_val_from_tokenizer: bool = False, max_docs: int | None = None,
                 progress: bool = True, tokenizer: str | Path | None = None, caseops: bool = False,
                 shuffle_seed: int | None = None) -> dict[str, Any]:
    """Train ``out_dir/tokenizer.model`` and write ``out_dir/fineweb_{val,train}_%06d.bin``.

    ``corpus``: a name, a path, or several joined by commas (see ``golf.corpora``).
    ``vocab_size``: pieces to train (None = 8192). ``tokenizer``: use this SentencePiece model
    instead of training one (copied to ``out_dir/tokenizer.model``; ``vocab_size``, if given, must
    match its pieces). ``val_docs``: documents sent to val (None = ``default_val_docs``).
    ``tokenizer_train_docs``: train the tokenizer on only the first N documents (the record used
    the first 5M). ``max_docs``: use only the first N documents of the corpus. ``caseops``: the
    CaseOps transform and val byte sidecars (module docstring); prepare.json records ``"caseops": true``.
    ``shuffle_seed``: all documents are put in the order of
    ``numpy.random.default_rng(shuffle_seed).permutation(len(docs))``; val is the first ``val_docs``
    of that order and train the rest, in that order (FineWeb's split). None (the default here; the
    CLI's is 0) keeps the corpus order: val the first ``val_docs`` documents, train the rest.
    prepare.json records it as ``shuffle_seed`` (with ``split`` in words; files from before this
    rule have ``train_shuffle_seed``, which shuffled the train documents only). The tokenizer is
    trained on documents in corpus order either way: all of them, or with
    ``exclude_val_from_tokenizer`` those not in val (so never on val then).
    With a small corpus SentencePiece may learn fewer than ``vocab_size`` pieces
    (``hard_vocab_limit=False``); the summary's ``vocab_size`` is the size actually learned.

    Everything is built in a temporary folder beside ``out_dir`` and moved in at the end, so a
    failed run leaves ``out_dir`` as it was. The summary, also written to ``out_dir/prepare.json``
    (the last file moved in: a folder with prepare.json holds a finished dataset), records the
    tokenizer's sha256, which binds the shards to it (``golf.data_binding.check_data_binding``).
    """
    t0 = time.time()
    out = Path(out_dir)
    given = Path(tokenizer) if tokenizer is not None else None
    if given is not None:
        if exclude_val_from_tokenizer or tokenizer_train_docs:
            raise GolfError("--exclude-val-from-tokenizer and tokenizer_train_docs only apply when golf trains "
                            "the tokenizer, not with --tokenizer")
        sp = _given_tokenizer(given, vocab_size, caseops)
    elif vocab_size is None:
        vocab_size = DEFAULT_VOCAB_SIZE
    if shard_tokens < 1:
        raise GolfError(f"shard_tokens must be positive, got {shard_tokens}")
    if shuffle_seed is not None and shuffle_seed < 0:
        raise GolfError(f"the shuffle seed must be 0 or more, got {shuffle_seed}")
    previous = _previous_dataset(out, given)
    docs = list(islice(iter_documents(corpus), max_docs))
    n_val = default_val_docs(len(docs)) if val_docs is None else val_docs
    if not 0 < n_val < len(docs):
        raise GolfError(f"corpus {corpus!r} has {len(docs)} documents; val_docs={n_val} must leave at "
                        "least one for val and one for train")

    order = (np.arange(len(docs)) if shuffle_seed is None
             else np.random.default_rng(shuffle_seed).permutation(len(docs))).tolist()
    val_ids, train_ids = order[:n_val], order[n_val:]

    out.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale_staging(out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.prepare-{os.getpid()}-"))
    try:
        tok_path = staging / "tokenizer.model"
        if given is not None:
            atomic_write_bytes(tok_path, given.read_bytes())
            tok_docs: list[str] = []
        else:
            tok_docs = [docs[i] for i in sorted(train_ids)] if exclude_val_from_tokenizer else docs
            tok_docs = tok_docs[:tokenizer_train_docs] if tokenizer_train_docs else tok_docs
            sp = train_tokenizer(map(caseops_encode, tok_docs) if caseops else tok_docs, tok_path, vocab_size,
                                 OPERATORS if caseops else ())
            build_byte_luts(tok_path, sp.get_piece_size())  # fails now if "▁" has no id (spec §1.6)
        val = _write_split(sp, [docs[i] for i in val_ids], staging, "val", shard_tokens, progress, caseops)
        train = _write_split(sp, [docs[i] for i in train_ids], staging, "train", shard_tokens, progress, caseops)
        summary = {
            "corpus": corpus,
            "out_dir": str(out),
            "tokenizer_path": str(out / "tokenizer.model"),
            "tokenizer_sha256": tokenizer_fingerprint(tok_path),
            "tokenizer_source": str(given) if given is not None else "trained",
            "vocab_size": sp.get_piece_size(),
            "vocab_size_requested": vocab_size,
            "docs": {"val": val["docs"], "train": train["docs"]},
            "tokens": {"val": val["tokens"], "train": train["tokens"]},
            "shards": {"val": val["shards"], "train": train["shards"],
                       **({"val_bytes": val["byte_files"]} if caseops else {})},
            "shard_tokens": shard_tokens,
            "shuffle_seed": shuffle_seed,
            "split": (f"val = the first {n_val} documents in corpus order, train = the rest" if shuffle_seed is None
                      else f"all documents shuffled by numpy.random.default_rng({shuffle_seed}).permutation; val = "
                           f"the first {n_val} of that order, train = the rest in that order"),
            "shard_digests": shard_digests([staging / n for n in (*val["shards"], *train["shards"],
                                                                  *val.get("byte_files", []))]),
            "tokenizer": {"train_docs": len(tok_docs), "exclude_val_from_tokenizer": exclude_val_from_tokenizer,
                          "settings": None if given is not None else
                          {**SPEC_TRAINER_SETTINGS, **({"user_defined_symbols": OPERATORS} if caseops else {})}},
            **({"caseops": True} if caseops else {}),
            "seconds": round(time.time() - t0, 3),
        }
        atomic_write_json(staging / PREPARE_META, summary)
        _swap_in(staging, out, previous)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
