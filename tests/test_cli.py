"""The command line of INTERFACE.md: data prepare / check, model-info, export-submission's wrapper."""
import json
import os
import subprocess
import sys
from pathlib import Path

from golf.cli import main as golf_main
from golf.data_check import check_data_dir
from golf.shards import shard_name

REPO = Path(__file__).resolve().parent.parent


def test_data_prepare_and_check_from_the_command_line(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "data"
    assert golf_main(["data", "prepare", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "300",
                      "--val-docs", "2"]) == 0
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["docs"] == {"val": 2, "train": 4}
    capsys.readouterr()
    assert golf_main(["data", "check", str(out)]) == 0
    table = capsys.readouterr().out
    assert shard_name("val", 0) in table and shard_name("train", 0) in table
    rows = check_data_dir(out)
    for split in ("val", "train"):  # a total per split, with thousands separators
        own = [r for r in rows if r["split"] == split]
        n = len(own)
        total = next(line for line in table.splitlines() if f"total ({n} file" in line and f" {split} " in line)
        assert f"{sum(r['tokens'] for r in own):,}" in total and f"{sum(r['bytes'] for r in own):,}" in total

    bad = out / shard_name("train", 0)
    bad.write_bytes(bad.read_bytes()[:-1])  # one byte cut off
    assert golf_main(["data", "check", str(out)]) == 1
    err = capsys.readouterr().err
    assert bad.name in err and "truncated" in err


def test_model_info_prints_the_record_numbers(capsys):
    assert golf_main(["model-info", "--params", str(REPO / "params/record.yaml")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_params"] == 35_944_537
    assert info["virtual_layers"]["looped"] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]


def test_generated_train_gpt_carries_its_settings(tmp_path):
    """The submission's single-file train_gpt.py: the settings that differ from golf's defaults, then the
    code; run with no arguments where its data is missing, it says so in one line (no traceback)."""
    from golf.config import load_config
    from golf.submission import code_bytes, train_gpt_bytes

    cfg = load_config(REPO / "params/record.yaml")  # the same code as test_submission's: made once
    script = tmp_path / "train_gpt.py"
    script.write_bytes(train_gpt_bytes(cfg))
    assert script.stat().st_size == code_bytes(cfg)
    assert script.read_bytes().startswith(b"#coding:latin1\nimport brotli\n")
    env = {k: v for k, v in os.environ.items() if k != "GOLF_HOME"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("golf: error: ") and "Traceback" not in out.stderr
    assert "data/datasets/fineweb10B_sp8192" in out.stderr  # the record's data path, read from its folder


def test_fixed_batch_pads_the_short_last_batch():
    """A compiled static-shape scorer sees one batch size only; the padding rows are dropped again."""
    import torch

    from golf.compile_policy import fixed_batch

    shapes = []

    def scorer(ids):
        shapes.append(tuple(ids.shape))
        return ids.float() * 2

    fwd = fixed_batch(scorer, 4)
    ids = torch.arange(15).view(3, 5)
    assert torch.equal(fwd(ids), ids.float() * 2)
    assert torch.equal(fwd(torch.arange(20).view(4, 5)), torch.arange(20).view(4, 5).float() * 2)
    assert shapes == [(4, 5), (4, 5)]


def test_config_into_a_closed_pipe_says_nothing():
    """`golf config | head -2`: no BrokenPipeError traceback when the reader leaves early."""
    out = subprocess.run(f"{sys.executable} -m golf config | head -2", shell=True, capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert len(out.stdout.splitlines()) == 2 and out.stderr == ""


def test_repeated_set_flags_all_apply(capsys):
    """``--set a=1 --set b=2`` is both overrides (argparse kept only the last flag's, silently)."""
    import yaml

    assert golf_main(["config", "--params", "params/demo.yaml", "--set", "iterations=20", "--set", "seed=7"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["train"]["iterations"] == 20 and tree["train"]["seed"] == 7
