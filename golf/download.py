"""``golf data download``: the challenge's official shards and tokenizer from the Hugging Face dataset
(§1.2), validated and bound to each other as ``golf data prepare`` binds its own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf.data_binding import DOWNLOAD_META, check_shard_contents, load_tokenizer, read_data_meta, shard_digests, \
    tokenizer_fingerprint
from golf.runtime import GolfError, atomic_write_json
from golf.shards import SPLITS, ShardError, check_shard, shard_glob, shard_name

log = logging.getLogger("golf")


@dataclass(frozen=True)
class HubVariant:
    """Where one tokenizer variant lives in the Hugging Face dataset (paths relative to its root)."""
    dataset_dir: str
    tokenizer: str
    vocab_size: int
    val_shards: int
    train_shards: int  # how many the dataset holds


# The official layout (as fetched by the challenge's data/cached_challenge_fineweb.py); local copies
# keep the same relative paths under --out, so `--out data` gives golf's default data_dir.
HUB_VARIANTS: dict[str, HubVariant] = {
    "sp8192": HubVariant(dataset_dir="datasets/fineweb10B_sp8192",
                         tokenizer="tokenizers/fineweb_8192_bpe.model",
                         vocab_size=8192, val_shards=1, train_shards=80),
}
DEFAULT_HUB_REPO = "kevclark/parameter-golf"


def _hub_fetch(repo_id: str, rel: str, out_dir: Path) -> Path:
    """One file from the Hub into ``out_dir/rel``, with errors a user can act on."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    # the Hub's logger has its own handler: without this, each of its warnings shows twice (ours too)
    logging.getLogger("huggingface_hub").propagate = False
    try:
        got = huggingface_hub.hf_hub_download(repo_id=repo_id, filename=rel, repo_type="dataset",
                                              local_dir=str(out_dir))
    except hf_errors.LocalEntryNotFoundError as exc:  # offline, or the Hub did not answer
        raise GolfError(_unreachable(repo_id, rel, out_dir, exc)) from exc
    except hf_errors.EntryNotFoundError as exc:
        raise GolfError(f"{rel!r} is not in the Hugging Face dataset {repo_id!r} ({exc})") from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise GolfError(f"Hugging Face dataset {repo_id!r} not found or not accessible (gated "
                        f"datasets need `huggingface-cli login`): {exc}") from exc
    except _transport_errors() as exc:
        raise GolfError(_unreachable(repo_id, rel, out_dir, exc)) from exc
    return Path(got)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures: huggingface_hub < 1 uses requests (OSError subclasses), >= 1 uses httpx."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        import httpx
        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _unreachable(repo_id: str, rel: str, out_dir: Path, exc: BaseException) -> str:
    return (f"could not reach the Hugging Face Hub to fetch {rel!r} from dataset {repo_id!r} "
            f"({type(exc).__name__}: {exc}). To get data otherwise: copy the shards and tokenizer from a "
            f"machine that has them into {str(out_dir)!r} with the same layout (datasets/..., tokenizers/...), "
            f"or build a local dataset with `golf data prepare --corpus shakespeare --out DIR`")


def download_shards(variant: str, out_dir: str | Path, train_shards: int = 1,
                    repo_id: str = DEFAULT_HUB_REPO) -> dict[str, Any]:
    """Fetch the val shards, ``train_shards`` train shards and the tokenizer; validate them all.

    Files already present and valid are kept (the command is idempotent). Returns
    ``{data_dir, tokenizer_path, vocab_size, files: [...], downloaded: n}``.
    """
    if variant not in HUB_VARIANTS:
        raise GolfError(f"unknown data variant {variant!r}; known: {', '.join(HUB_VARIANTS)}")
    v = HUB_VARIANTS[variant]
    if not 0 <= train_shards <= v.train_shards:
        raise GolfError(f"--train-shards must be in [0, {v.train_shards}] for {variant}, got {train_shards}")
    out_dir = Path(out_dir)
    tail = Path(v.dataset_dir).parts
    if out_dir.parts[-len(tail):] == tail:  # the shard folder itself given: its root keeps the layout
        out_dir = out_dir.parents[len(tail) - 1]
        log.info("--out names the shard folder; downloading into its root %s", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    downloaded = 0
    tok_path = out_dir / v.tokenizer
    if not tok_path.is_file():
        _hub_fetch(repo_id, v.tokenizer, out_dir)
        downloaded += 1
    load_tokenizer(tok_path, v.vocab_size)

    names = [shard_name("val", i) for i in range(v.val_shards)]
    names += [shard_name("train", i) for i in range(train_shards)]
    files = []
    data_dir = out_dir / v.dataset_dir
    earlier = (read_data_meta(data_dir)[1] or {}).get("shard_digests") or {} if (data_dir / DOWNLOAD_META).is_file() else {}
    for name in names:
        rel, local = f"{v.dataset_dir}/{name}", out_dir / v.dataset_dir / name
        fresh = not local.is_file()
        if fresh:
            _hub_fetch(repo_id, rel, out_dir)
            downloaded += 1
        try:
            check_shard(local, v.vocab_size)
            if not fresh and name in earlier:  # changed since it was downloaded: fetch it again
                check_shard_contents([local], {"shard_digests": earlier}, data_dir / DOWNLOAD_META)
        except ShardError as exc:
            if fresh:
                raise ShardError(f"downloaded file is bad: {exc}") from None
            # a stale or partial earlier copy: fetch it again once
            local.unlink()
            _hub_fetch(repo_id, rel, out_dir)
            downloaded += 1
            check_shard(local, v.vocab_size)
        files.append(local)
    # every official shard in the folder (an earlier call may have fetched more), bound to the tokenizer
    present = {split: [f.name for f in sorted(data_dir.glob(shard_glob(split)))] for split in SPLITS}
    atomic_write_json(data_dir / DOWNLOAD_META, {
        "source": f"huggingface dataset {repo_id}", "variant": variant, "tokenizer_path": str(tok_path),
        "tokenizer_sha256": tokenizer_fingerprint(tok_path), "vocab_size": v.vocab_size, "shards": present,
        "shard_digests": shard_digests([data_dir / n for split in SPLITS for n in present[split]])})
    return {"data_dir": str(out_dir / v.dataset_dir), "tokenizer_path": str(tok_path),
            "vocab_size": v.vocab_size, "files": [str(f) for f in files], "downloaded": downloaded}
