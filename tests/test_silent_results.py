"""No wrong number exits 0 (issue 33, "Silent wrong results", items 1-8).

Each test goes through the command line: a wrong result is one ``golf: error:`` line and exit code 1,
or a warning recorded in the run's files, and the folders stay as they were where nothing should change.
"""
import json
import shutil
from pathlib import Path

import pytest

from golf.cli import main as golf_main
from test_reliability import data_copy, one_error_line, other_tokenizer, snapshot, trained_run  # noqa: F401
from test_train import tiny_params


# --- 8. a diverged training, a damaged model.pt ---------------------------------------------------

def test_a_diverged_training_ends_with_one_error_and_no_model(tmp_path, demo_data, capsys):
    run = tmp_path / "run"
    params = tiny_params(tmp_path, demo_data, iterations=4, val_loss_every=0, train_log_every=1, max_val_tokens=2048,
                         matrix_lr=1e30, scalar_lr=1e30, tied_embed_lr=1e30)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 1
    line = one_error_line(capsys)
    assert "training diverged" in line and "no model.pt was saved" in line and str(run) in line
    assert not (run / "model.pt").exists() and not (run / "train_summary.json").exists()
    assert "ERROR training diverged" in (run / "train.log").read_text()


def test_a_damaged_model_pt_is_refused_by_quantize_and_evaluate(tmp_path, trained_run, capsys):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    summary = json.loads((run / "train_summary.json").read_text())
    assert len(summary["model_sha256"]) == 64
    data = bytearray((run / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside a tensor
    (run / "model.pt").write_bytes(bytes(data))
    before = snapshot(run)
    for command in (["quantize", "--force"], ["evaluate", "--mode", "plain", "--source", "raw"]):
        assert golf_main([command[0], "--run-dir", str(run), *command[1:]]) == 1
        line = one_error_line(capsys)
        assert str(run / "model.pt") in line and "train_summary.json" in line and "changed or damaged" in line
        assert snapshot(run) == before
