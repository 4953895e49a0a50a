"""SentencePiece BPE tokenizer (spec §1.3) and ``prepare_data``, behind ``golf data prepare``.

``prepare_data`` follows the challenge's export pipeline (spec §1.2): documents in a fixed order,
the first ``val_docs`` to val and the rest to train, each encoded as ``[BOS=1] + sp.encode(text)``
with no EOS, concatenated and cut into shards of ``shard_tokens`` tokens regardless of document
boundaries. The tokenizer is trained on NUL-to-space, stripped documents, which by default
include the val documents as in the record (spec §9.18; ``exclude_val_from_tokenizer`` is the fix).
"""
from __future__ import annotations

import io
import os
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import sentencepiece as spm
from tqdm.auto import tqdm

from golf.bpb import build_byte_luts
from golf.corpora import iter_documents
from golf.data import shard_name, write_shard
from golf.runtime import GolfError, atomic_write_bytes, atomic_write_json

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


def clean_for_training(text: str) -> str:
    """What the export script feeds the trainer: NUL replaced by a space, then stripped."""
    return text.replace("\x00", " ").strip()


def train_tokenizer(docs: Iterable[str], model_path: str | Path, vocab_size: int) -> spm.SentencePieceProcessor:
    """Train a BPE model with the spec §1.3 settings, one document per trainer "sentence".

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
            minloglevel=2, **SPEC_TRAINER_SETTINGS)
    except RuntimeError as exc:  # e.g. a vocab smaller than the 4 specials + 256 bytes + characters
        raise GolfError(f"SentencePiece could not train a {vocab_size}-piece tokenizer for {model_path}: {exc}") from exc
    atomic_write_bytes(model_path, model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def load_tokenizer(path: str | Path, vocab_size: int | None = None) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model; an error naming the file if it is missing, unreadable, or has
    a different number of pieces than ``vocab_size``."""
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


def default_val_docs(n_docs: int) -> int:
    """The spec's 50,000 val documents, capped at a tenth of the corpus so that small corpora
    keep most of their text for training."""
    return max(1, min(SPEC_VAL_DOCS, n_docs // 10))


def _write_split(sp: spm.SentencePieceProcessor, docs: list[str], out_dir: Path, split: str,
                 shard_tokens: int, progress: bool) -> dict[str, Any]:
    """Encode ``[BOS] + ids`` per document, concatenate, and cut into shards of ``shard_tokens``."""
    buf = np.empty(shard_tokens, dtype=np.uint16)
    fill, total, shards = 0, 0, []

    def flush() -> None:
        nonlocal fill
        if fill:
            shards.append(write_shard(out_dir / shard_name(split, len(shards)), buf[:fill]).name)
            fill = 0

    batch = 256
    with tqdm(total=len(docs), desc=f"encode {split}", unit="doc", disable=not progress) as bar:
        for i in range(0, len(docs), batch):
            for ids in sp.encode(docs[i:i + batch], out_type=int, num_threads=os.cpu_count() or 1):
                toks = np.empty(len(ids) + 1, dtype=np.uint16)
                toks[0] = BOS_ID
                toks[1:] = ids
                total += len(toks)
                while len(toks):  # a document may straddle two shards (spec §1.2)
                    take = min(len(toks), shard_tokens - fill)
                    buf[fill:fill + take] = toks[:take]
                    fill, toks = fill + take, toks[take:]
                    if fill == shard_tokens:
                        flush()
            bar.update(min(batch, len(docs) - i))
    flush()
    return {"docs": len(docs), "tokens": total, "shards": shards}


def prepare_data(corpus: str, out_dir: str | Path, vocab_size: int = 8192, val_docs: int | None = None,
                 shard_tokens: int = 10**8, tokenizer_train_docs: int | None = None,
                 exclude_val_from_tokenizer: bool = False, max_docs: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Train ``out_dir/tokenizer.model`` and write ``out_dir/fineweb_{val,train}_%06d.bin``.

    ``corpus``: a name, a path, or several joined by commas (see ``golf.corpora``).
    ``val_docs``: documents sent to val (None = ``default_val_docs``). ``tokenizer_train_docs``:
    train the tokenizer on only the first N documents (the record used the first 5M).
    ``max_docs``: use only the first N documents of the corpus.
    With a small corpus SentencePiece may learn fewer than ``vocab_size`` pieces
    (``hard_vocab_limit=False``); the summary's ``vocab_size`` is the size actually learned.
    Returns the summary, also written to ``out_dir/prepare.json`` as the last step, so a folder
    with prepare.json holds a finished dataset.
    """
    t0 = time.time()
    out = Path(out_dir)
    docs = list(islice(iter_documents(corpus), max_docs))
    n_val = default_val_docs(len(docs)) if val_docs is None else val_docs
    if not 0 < n_val < len(docs):
        raise GolfError(f"corpus {corpus!r} has {len(docs)} documents; val_docs={n_val} must leave at "
                        "least one for val and one for train")
    if shard_tokens < 1:
        raise GolfError(f"shard_tokens must be positive, got {shard_tokens}")
    out.mkdir(parents=True, exist_ok=True)
    # Drop the done-marker and old shards first: a run killed half-way never looks finished, and
    # shards of an earlier, larger run never mix with the new ones.
    (out / "prepare.json").unlink(missing_ok=True)
    for old in [*out.glob("fineweb_train_*.bin"), *out.glob("fineweb_val_*.bin")]:
        old.unlink()

    tok_docs = docs[n_val:] if exclude_val_from_tokenizer else docs
    tok_docs = tok_docs[:tokenizer_train_docs] if tokenizer_train_docs else tok_docs
    sp = train_tokenizer(tok_docs, out / "tokenizer.model", vocab_size)
    build_byte_luts(out / "tokenizer.model", sp.get_piece_size())  # fails now if "▁" has no id (spec §1.6)
    val = _write_split(sp, docs[:n_val], out, "val", shard_tokens, progress)
    train = _write_split(sp, docs[n_val:], out, "train", shard_tokens, progress)
    summary = {
        "corpus": corpus,
        "out_dir": str(out),
        "tokenizer_path": str(out / "tokenizer.model"),
        "vocab_size": sp.get_piece_size(),
        "vocab_size_requested": vocab_size,
        "docs": {"val": val["docs"], "train": train["docs"]},
        "tokens": {"val": val["tokens"], "train": train["tokens"]},
        "shards": {"val": val["shards"], "train": train["shards"]},
        "shard_tokens": shard_tokens,
        "tokenizer": {"train_docs": len(tok_docs), "exclude_val_from_tokenizer": exclude_val_from_tokenizer,
                      "settings": SPEC_TRAINER_SETTINGS},
        "seconds": round(time.time() - t0, 3),
    }
    atomic_write_json(out / "prepare.json", summary)
    return summary
