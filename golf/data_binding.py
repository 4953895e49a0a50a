"""What binds a data folder's shards to the tokenizer that made them, and the check that they belong
together before any work (prepare.json / download.json: the tokenizer's sha256, each shard's digests).
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Sequence

from golf.runtime import GolfError, read_json_object
from golf.shards import HEADER_BYTES, SPLITS, ShardError, list_shards, read_checked_shard, read_shard_header

log = logging.getLogger("golf")


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
        read_checked_shard(f, cfg.vocab_size)
    check_shard_contents(read, meta, meta_path)  # sampled: a few MiB a shard
    return {"tokenizer_path": str(tok), "tokenizer_sha256": fingerprint, "vocab_size": cfg.vocab_size,
            "data_dir": str(data_dir), "prepare_json": str(meta_path) if meta is not None else None,
            "warnings": warnings}


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
