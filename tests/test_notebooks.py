"""Smoke test: `golf run` executes every notebook through papermill at a tiny size (STYLE.md rule 11)."""
import json

import pandas as pd
import pytest

from golf.notebooks import run_study
from test_train import tiny_params


@pytest.mark.slow
def test_golf_run_executes_all_notebooks_for_two_seeds(tmp_path, demo_data):
    params = tiny_params(tmp_path, demo_data, iterations=8, val_loss_every=0, train_log_every=2,
                         max_val_tokens=4096)
    report = run_study(str(params), [1, 2], study="smoke", outputs=str(tmp_path / "outputs"))
    study = tmp_path / "outputs" / "smoke"
    assert report == study / "seed_analysis.html" and report.stat().st_size > 10_000
    for seed in (1, 2):
        run = study / f"seed{seed}"
        for name in ("train.ipynb", "quantize.ipynb", "ttt_eval.ipynb", "report.html", "final_model.int6.ptz",
                     "plots/training.png", "plots/quant_error.png", "plots/eval_bpb.png", "tables/eval_summary.csv"):
            assert (run / name).is_file(), f"seed{seed}/{name}"
        assert json.loads((run / "eval_ttt.json").read_text())["val_bpb"] > 0
    table = pd.read_csv(study / "seed_analysis.csv")
    assert sorted(table["seed"]) == [1, 2] and table["ttt_bpb"].notna().all()
    # a second study of the same name gets a new folder: nothing finished is overwritten
    again = run_study(str(params), [1], study="smoke", outputs=str(tmp_path / "outputs"))
    assert again.parent.name == "smoke-2"
