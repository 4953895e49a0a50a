"""`golf run`: every notebook through papermill, the study index, resuming a study (STYLE.md rule 11)."""
import json
import os

import pandas as pd
import pytest

from golf.cli import main as golf_main
from golf.study import run_study
from conftest import tiny_params


@pytest.mark.slow
def test_golf_run_makes_a_run_folder_through_the_notebooks_and_a_later_seed_adds_to_the_study(tmp_path, demo_data):
    """A one-arm study: the notebooks, the report and its plots, the seed table and the index; a later call
    with another seed adds to it. Keeping a finished seed and retrying a killed one is the study engine's one
    rule, tested in test_study.py."""
    params = tiny_params(tmp_path, demo_data, iterations=6, val_loss_every=0, train_log_every=2,
                         max_val_tokens=4096)
    outputs = tmp_path / "outputs"
    index, failures = run_study(str(params), [1], study="smoke", outputs=str(outputs))
    study = outputs / "smoke"
    assert failures == [] and index == study / "index.html"
    run = study / "seed1"
    for name in ("train.ipynb", "quantize.ipynb", "ttt_eval.ipynb", "report.html", "final_model.int6.ptz",
                 "plots/training.png", "plots/quant_error.png", "plots/eval_bpb.png", "tables/eval_summary.csv"):
        assert (run / name).is_file(), name
    assert {json.loads((run / f"eval_{m}.json").read_text())["mode"] for m in ("plain", "sliding", "ttt")} == \
        {"plain", "sliding", "ttt"}  # the notebook's default modes, scored in one process
    finished_at = (run / "report.html").stat().st_mtime_ns

    # another seed later: the study grows, its plan and seed table cover both calls' seeds
    index, failures = run_study(str(params), [2], study="smoke", outputs=str(outputs))
    assert failures == []
    assert (run / "report.html").stat().st_mtime_ns == finished_at  # the finished seed was left as it was
    assert sorted(p.name for p in study.iterdir() if p.is_dir() and p.name.startswith("seed")) == ["seed1", "seed2"]
    assert json.loads((study / "study.json").read_text())["seeds"] == [1, 2]
    table = pd.read_csv(study / "seed_analysis.csv")
    assert list(table["seed"]) == [1, 2] and table["ttt_bpb"].notna().all()
    page = index.read_text()
    assert "seed1/report.html" in page and "FineWeb figures" in page


def test_golf_run_refuses_seed_in_set_and_other_settings_for_a_study(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, iterations=2)
    rc = golf_main(["run", "--params", str(params), "--seeds", "1", "--set", "seed=7",
                    "--outputs", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "'seed'" in err[0] and "--seeds" in err[0]
    assert not (tmp_path / "out").exists()

    study = tmp_path / "out" / "s"
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"params_file": str(params), "overrides": ["ema_decay=0.5"],
                                                  "nproc": 1, "seeds": [1]}))
    rc = golf_main(["run", "--params", str(params), "--seeds", "1", "--study", "s", "--outputs",
                    str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "other settings" in err[0]
    assert os.listdir(study) == ["study.json"]


def test_golf_run_refuses_an_unknown_kernel_before_any_folder(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, iterations=2)
    rc = golf_main(["run", "--params", str(params), "--seeds", "1", "--kernel", "no-such-kernel",
                    "--outputs", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no-such-kernel" in err[0]
    assert not (tmp_path / "out").exists()


def test_golf_run_refuses_a_seed_named_twice_and_suggests_a_misspelt_key(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, iterations=2)
    assert golf_main(["run", "--params", str(params), "--seeds", "1", "1", "--outputs", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "twice" in err[0] and not (tmp_path / "o").exists()
    assert golf_main(["run", "--params", str(params), "--seeds", "1", "--set", "ema_decy=0",
                      "--outputs", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ema_decy'" in err[0] and "did you mean 'ema_decay'" in err[0]


def test_golf_run_shows_the_stage_and_its_progress_on_one_line(tmp_path):
    """golf run's status line within a seed: read from the run's console.log (golf's log lines and progress
    bars, not a command's printed JSON), redrawn with \\r on a terminal, one line a stage elsewhere."""
    import io
    import time

    from golf.notebooks import _SeedStatus

    class Tty(io.StringIO):
        def isatty(self):
            return True

    log = tmp_path / "console.log"
    log.write_text("old output\n")
    for console in (Tty(), io.StringIO()):
        with _SeedStatus(console, "seed 42 (1 of 2) · train", log):
            with open(log, "a") as fh:
                fh.write("2026-01-01 10:00:00,000 INFO step 1/6 loss 6.9\ntrain  50%|#####     | 50/100\r")
                fh.write('{\n  "val_bpb": 2.03\n}\n')  # a command's printed result: no status line
                fh.flush()
                time.sleep(1.6)
                fh.write("train:  90% of budget|######### | 90/100\r")  # training's bar
                fh.flush()
                time.sleep(1.6)
        out = console.getvalue()
        if isinstance(console, Tty):
            assert "\rseed 42 (1 of 2) · train · train:  90% of budget|" in out and "\n" not in out and "old output" not in out
            assert out.endswith("\r")  # cleared for the log line that follows
        else:
            assert out.splitlines() == ["seed 42 (1 of 2) · train · train  50%|#####     | 50/100"]
