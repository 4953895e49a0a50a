"""``golf data check``: every shard of a data folder validated, one row per file."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from golf.data_binding import check_listed_shards, check_shard_contents, find_tokenizer, read_data_meta, \
    read_prepare_meta
from golf.runtime import GolfError
from golf.shards import check_shard, read_shard_header, shard_glob
from golf.val_stream import load_val_bytes


def infer_vocab_size(data_dir: str | Path) -> int | None:
    """The vocab a data folder was made with: prepare.json, a tokenizer.model beside it, or the
    official folder name ``fineweb10B_sp8192``. None if nothing says."""
    data_dir = Path(data_dir)
    meta = read_prepare_meta(data_dir)
    if meta is not None and "vocab_size" in meta:
        return int(meta["vocab_size"])
    tok = find_tokenizer(data_dir)
    if tok is not None:
        import sentencepiece as spm
        return int(spm.SentencePieceProcessor(model_file=str(tok)).get_piece_size())
    m = re.search(r"_sp(\d+)$", data_dir.name)
    return int(m.group(1)) if m else None


def check_data_dir(data_dir: str | Path, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """Validate every shard of a folder (magic, version, size, ids < vocab); one row per file.
    A CaseOps folder's byte sidecars are checked too (``load_val_bytes``) and listed as ``val_bytes``.

    ``vocab_size=None`` takes it from the folder (``infer_vocab_size``), else checks ids < 2^16.
    Raises ``ShardError`` naming the first bad file (val files first, then train, sorted).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise GolfError(f"data folder {str(data_dir)!r} does not exist")
    if vocab_size is not None and not 0 < vocab_size <= 2**16:
        raise GolfError(f"vocab_size must be in 1..65536 (uint16 shards), got {vocab_size}")
    vocab = vocab_size or infer_vocab_size(data_dir) or 2**16
    files = [(s, f) for s in ("val", "train") for f in sorted(data_dir.glob(shard_glob(s)))]
    if not files:
        raise GolfError(f"no shards (fineweb_train_*.bin / fineweb_val_*.bin) in {str(data_dir)!r}")
    present = {split: [f.name for s, f in files if s == split] for split in ("val", "train")}
    for split, names in present.items():
        if not names:
            raise GolfError(f"no {split} shards (fineweb_{split}_*.bin) in {str(data_dir)!r}: training and "
                            "evaluation need both splits")
    meta_path, meta = read_data_meta(data_dir)
    check_listed_shards(data_dir, meta, present, meta_path.name)
    rows = [{"file": f.name, "split": s, "tokens": check_shard(f, vocab), "bytes": f.stat().st_size,
             "vocab_size": vocab} for s, f in files]
    check_shard_contents([f for _, f in files] + sorted(data_dir.glob("fineweb_val_bytes_*.bin")), meta, meta_path,
                         full=True)
    n_val = sum(r["tokens"] for r in rows if r["split"] == "val")
    if n_val and load_val_bytes(data_dir, n_val) is not None:  # CaseOps: one sidecar entry per val token
        rows += [{"file": f.name, "split": "val_bytes", "tokens": read_shard_header(f), "bytes": f.stat().st_size,
                  "vocab_size": "-"} for f in sorted(data_dir.glob("fineweb_val_bytes_*.bin"))]  # bytes, not ids
    return rows
