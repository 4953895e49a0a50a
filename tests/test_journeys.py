"""Command-line journeys of issue 33 (orphans, tracebacks, late or unclear errors) and 35 items 3 and 7.

Each test meets the defect where a user does: a command's exit status, its one ``golf: error:`` (or
``golf: interrupted:``) line without a traceback, and the folders left as they were where nothing
should change.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from golf.cli import main as golf_main
from golf.runs import LOCK as RUN_LOCK, RunDir


def run_lock_owner(path):
    return RunDir(path).lock_owner()
from conftest import evaluated_tiny_run, one_error_line, snapshot, tiny_params

REPO = Path(__file__).resolve().parent.parent


def _golf(*args: str, cwd: Path | None = None, **popen) -> subprocess.Popen:
    """``python -m golf ARGS`` as a user starts it, in its own session (a test kills it by group)."""
    return subprocess.Popen([sys.executable, "-m", "golf", *args], cwd=cwd or REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)


def _children() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = int(fields[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _last_line(err: str) -> str:
    """The last line a terminal shows (a cleared progress bar leaves its blanks and cursor-up before it)."""
    return re.split(r"\x1b\[A|\r", err.strip().splitlines()[-1])[-1]


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# --- orphans --------------------------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_sigterm_to_golf_run_takes_every_child_down(tmp_path, demo_data, how):
    """golf run -> papermill kernel -> golf train: SIGTERM to golf run (kill PID), or Ctrl-C in its terminal
    (SIGINT to its process group, as in make demo), ends all of them within seconds, with one line; the
    run's lock is held by no live process (the seed is an interrupted run, resumable)."""
    params = tiny_params(tmp_path, demo_data, iterations=10**6, val_loss_every=0, train_log_every=100)
    proc = _golf("run", "--params", str(params), "--seeds", "1", "--study", "s", "--outputs", str(tmp_path / "o"))
    lock = tmp_path / "o" / "s" / "seed1" / RUN_LOCK
    try:
        _wait_for(lambda: lock.is_file() and run_lock_owner(lock.parent)[1], 240, "golf train to start")
        time.sleep(1)
        family = _descendants(proc.pid)
        assert run_lock_owner(lock.parent)[0] in family and len(family) >= 2  # the kernel and golf train
        if how == "kill":
            os.kill(proc.pid, signal.SIGTERM)  # golf run alone, as `kill PID` does
        else:
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's foreground group
        rc = proc.wait(timeout=30)
        _wait_for(lambda: not any(_alive(p) for p in family), 15, f"children {family} to end")
        err = proc.stderr.read()
    finally:
        _kill_group(proc)
    assert rc == 128 + (signal.SIGTERM if how == "kill" else signal.SIGINT) and "Traceback" not in err, err
    assert _last_line(err).startswith("golf: interrupted: study "), err
    assert not run_lock_owner(lock.parent)[1]  # no live process holds the seed's folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_a_golf_child_dies_with_its_parent(tmp_path):
    """The backstop: a child golf started (GOLF_PARENT_PID) gets SIGTERM when its parent is killed -9."""
    script = ("import os, subprocess, sys, time\n"
              "env = {**os.environ, 'GOLF_PARENT_PID': str(os.getpid())}\n"
              "child = subprocess.Popen([sys.executable, '-c', 'from golf.runtime import die_with_parent; "
              "die_with_parent(); import time; time.sleep(120)'], env=env)\n"
              "print(child.pid, flush=True); time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(3)  # the child has imported golf and asked for the signal
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        _wait_for(lambda: not _alive(child), 10, "the child to end")
    finally:
        _kill_group(parent)


# --- Ctrl-C ---------------------------------------------------------------------------------------

def test_ctrl_c_on_train_is_one_line_saying_what_was_kept(tmp_path, demo_data):
    params = tiny_params(tmp_path, demo_data, iterations=10**6, val_loss_every=0, train_log_every=1)
    run = tmp_path / "run"
    proc = _golf("train", "--params", str(params), "--run-dir", str(run))
    try:
        _wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0, 120,
                  "training steps")
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        _kill_group(proc)
    assert rc == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = _last_line(err)
    assert last.startswith("golf: interrupted: run folder ") and str(run) in last and "kept" in last
    assert (run / "metrics.jsonl").is_file() and not (run / "model.pt").exists()
    assert run_lock_owner(run) == (proc.pid, False)  # the lock left behind marks an interrupted run


# --- a failing child's own line -------------------------------------------------------------------

@pytest.mark.parametrize("code, line", [
    ("import torch; raise torch._C._LinAlgError('linalg.cholesky: The factorization could not be completed')",
     "torch._C._LinAlgError: linalg.cholesky: The factorization could not be completed"),
    ("import argparse; p = argparse.ArgumentParser(prog='golf train'); p.parse_args(['--bogus'])",
     "golf train: error: unrecognized arguments: --bogus"),
])
def test_a_failing_child_is_reported_by_its_last_error_line(tmp_path, monkeypatch, code, line):
    import golf.launch as launch
    from golf.runtime import GolfError

    monkeypatch.setattr(launch, "golf_command", lambda args, nproc=1: [sys.executable, "-c", code])
    with pytest.raises(GolfError) as err:
        launch.launch_golf(["train"], log_path=tmp_path / "console.log", echo=False)
    assert line in str(err.value) and "see its output" not in str(err.value)


@pytest.mark.parametrize("rank_code, line", [
    ("print('golf: error: shard 3 is short'); sys.exit(1)", "golf: error: shard 3 is short"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "golf: error: rank 1 was ended by SIGKILL"),
])
def test_torchrun_s_own_traceback_does_not_bury_a_rank_s_error(tmp_path, monkeypatch, rank_code, line):
    """Under torchrun (nproc > 1) the failed rank's line is the error, and the console holds no traceback."""
    import golf.launch as launch
    from golf.runtime import GolfError

    script = tmp_path / "rank.py"
    script.write_text("import os, signal, sys, time\n"
                      f"if os.environ['RANK'] == '1':\n    {rank_code}\n"
                      "time.sleep(60)\n")  # rank 0 is stopped by torchrun once rank 1 fails
    monkeypatch.setattr(launch, "golf_command", lambda args, nproc=1: [
        sys.executable, "-c", launch._TORCHRUN, "--standalone", "--nproc_per_node=2", str(script)])
    with pytest.raises(GolfError) as err:
        launch.launch_golf(["train"], log_path=tmp_path / "console.log", echo=False)
    assert line in str(err.value)
    console = (tmp_path / "console.log").read_text()
    assert "Traceback" not in console and "ChildFailedError" not in console and "OMP_NUM_THREADS" not in console


def test_a_failed_seed_s_reason_is_said_once_and_the_closing_line_names_the_seed(tmp_path, demo_data, capfd):
    """golf run: the run's FAILED line says why (golf's own words, no class name); the closing error line
    names the failed seed without repeating the reason."""
    params = tiny_params(tmp_path, demo_data, iterations=6, val_loss_every=3, matrix_lr=1e9, scalar_lr=1e9,
                         tied_embed_lr=1e9)
    assert golf_main(["run", "--params", str(params), "--seeds", "1", "--outputs", str(tmp_path / "o")]) == 1
    err = capfd.readouterr().err.splitlines()
    failed = [line for line in err if " FAILED: " in line]
    assert len(failed) == 1 and "training diverged" in failed[0] and "GolfError" not in failed[0]
    assert err[-1].startswith("golf: error: 1 of 1 runs failed (params seed 1): the reason of each is in its FAILED")
    assert "diverged" not in err[-1]


# --- data prepare's staging -----------------------------------------------------------------------

def test_prepare_removes_the_half_built_dataset_of_a_killed_prepare(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 40)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".data.prepare-{dead}-abc"  # what a prepare killed with -9 leaves
    stale.mkdir()
    (stale / "fineweb_val_000000.bin").write_bytes(b"x" * 100)
    live = tmp_path / f".data.prepare-{os.getpid()}-def"  # a prepare under way in this process: left alone
    live.mkdir()
    assert golf_main(["data", "prepare", "--corpus", str(corpus), "--out", str(tmp_path / "data"),
                      "--vocab-size", "300", "--val-docs", "1"]) == 0
    assert not stale.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".data.prepare-" + live.name.split("-", 1)[1],
                                                                 "corpus", "data"])


# --- checked at the door, against the params file, before any folder -------------------------------

def test_notebook_overrides_are_checked_against_the_params_file_not_the_record(tmp_path, demo_data):
    """num_layers=3 and train_batch_tokens=4096 break the record's loop span and batch split, not the tiny
    params file's: the train notebook's call passes them at the door and trains."""
    import golf.notebooks as nb

    params = tiny_params(tmp_path, demo_data, iterations=2, val_loss_every=0, max_val_tokens=1024)
    run = nb.train(str(params), str(tmp_path / "run"), overrides=["num_layers=3", "train_batch_tokens=4096"],
                   echo=False)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 2 and (run / "console.log").is_file()
    with pytest.raises(nb.GolfError, match="num_layers=2 with params file"):  # the overrides are named, not the file
        nb.set_args(None, ["num_layers=2"], base=params)


def test_train_notebook_into_a_new_run_dir_under_a_new_folder(tmp_path, demo_data):
    """papermill's -p run_dir with a folder that does not exist yet: its console.log is opened after the folder
    is made; a run_dir holding a run is refused before anything is written into it."""
    import golf.notebooks as nb

    params = tiny_params(tmp_path, demo_data, iterations=1, val_loss_every=0, max_val_tokens=1024)
    run = nb.train(str(params), str(tmp_path / "new" / "deeper" / "run"), echo=False)
    assert (run / "model.pt").is_file() and (run / "console.log").is_file()
    before = snapshot(run)
    with pytest.raises(nb.GolfError, match="holds a finished run"):
        nb.train(str(params), str(run), echo=False)
    assert snapshot(run) == before


def test_a_study_folder_is_refused_as_a_run_folder(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, iterations=1)
    study = tmp_path / "study"
    (study / "seed1").mkdir(parents=True)
    (study / "seed1" / "config.yaml").write_text("seed: 1\n")
    (study / "study.json").write_text("{}")
    before = snapshot(study)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(study)]) == 1
    assert "is a study folder" in one_error_line(capsys)
    assert snapshot(study) == before and sorted(p.name for p in study.iterdir()) == ["seed1", "study.json"]


@pytest.mark.parametrize("over, what", [(["max_val_tokens=10"], "params key 'max_val_tokens' (10) keeps 10 tokens"),
                                        (["eval_seq_len=1000000", "max_val_tokens=0"], "needs at least 1000001")])
def test_a_val_text_too_short_is_refused_before_the_run_folder(tmp_path, demo_data, capsys, over, what):
    params = tiny_params(tmp_path, demo_data, iterations=1)
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run), "--set", *over]) == 1
    assert what in one_error_line(capsys) and not run.exists()
    assert golf_main(["run", "--params", str(params), "--seeds", "1", "--outputs", str(tmp_path / "o"),
                      "--set", *over]) == 1
    assert what in one_error_line(capsys) and not (tmp_path / "o").exists()


def test_golf_run_refuses_a_negative_seed_before_the_study_folder(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, iterations=1)
    assert golf_main(["run", "--params", str(params), "--seeds", "1", "-1", "--outputs", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)  # the bound in full, as a user would type it (not 1.84467e+19)
    assert "--seeds: -1 is not a seed; expected whole numbers in [0, 18446744073709551615]" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("over", [["model_dim=100000000"], ["num_layers=100000000"]])
def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path, demo_data, capsys, over):
    params = tiny_params(tmp_path, demo_data, iterations=1, num_heads=1, num_kv_heads=1)
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run), "--set", *over]) == 1
    line = one_error_line(capsys)
    assert "parameters, which need about" in line and "host memory has" in line and not run.exists()
    assert golf_main(["model-info", "--params", str(params), "--set", *over]) == 1
    assert "make the model smaller" in one_error_line(capsys)


def test_a_resumed_study_takes_its_overrides_in_any_order(tmp_path, demo_data, capsys):
    from golf.notebooks import _claim_study

    study = tmp_path / "s"
    plan = {"params_file": "p.yaml", "overrides": ["ema_decay=0.5", "iterations=3"], "nproc": 1}
    _claim_study(study, plan, [1])
    _claim_study(study, {**plan, "overrides": ["iterations=3", "ema_decay=0.5"]}, [1])  # resumes
    with pytest.raises(Exception, match="other settings"):
        _claim_study(study, {**plan, "overrides": ["iterations=4", "ema_decay=0.5"]}, [1])


def test_a_set_value_that_breaks_a_rule_with_the_file_blames_the_set(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, iterations=1)  # loop_end 2
    assert golf_main(["train", "--params", str(params), "--run-dir", str(tmp_path / "r"), "--set", "num_layers=2"]) == 1
    line = one_error_line(capsys)
    assert line.startswith("golf: error: overrides num_layers=2 with params file ") and "loop_start" in line
    params.write_text(params.read_text().replace("loop_end: 2", "loop_end: 9"))
    assert golf_main(["train", "--params", str(params), "--run-dir", str(tmp_path / "r"), "--set", "iterations=2"]) == 1
    assert one_error_line(capsys).startswith(f"golf: error: params file '{params}': ")  # the file's own fault


def test_a_misspelt_notebook_parameter_stops_with_a_suggestion():
    import golf.notebooks as nb

    namespace = {"nb": nb, "In": [""], "_i1": "x", "params_file": "params/demo.yaml", "iterations": None,
                 "run": Path("."), "ema_decai": 0.5}
    with pytest.raises(nb.GolfError, match=r"unknown notebook parameter\(s\) 'ema_decai'; did you mean 'ema_decay'"):
        nb.given_keys(namespace)
    del namespace["ema_decai"]
    assert nb.given_keys({**namespace, "iterations": 5}) == {"iterations": 5}


def test_a_misspelt_parameter_of_the_analysis_notebooks_stops_with_a_suggestion():
    import golf.notebooks as nb

    with pytest.raises(nb.GolfError, match=r"unknown parameter\(s\) 'stge' of the seed_analysis notebook; did you "
                                           r"mean 'stage'"):
        nb.check_parameters({"nb": nb, "study_dir": "", "run_dirs": [], "stage": "ttt", "stge": "prequant"},
                            "seed_analysis")
    with pytest.raises(nb.GolfError, match="'iterations' of the compare notebook"):  # a params key is none of its own
        nb.check_parameters({"studies": [], "iterations": 3}, "compare")
    nb.check_parameters({"studies": [], "names": [], "stage": "ttt", "out_dir": "", "result": {}}, "compare")


def test_lab_saves_drop_empty_cell_tags():
    from golf.lab import strip_notebook

    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": [], "collapsed": True}, "outputs": [1],
                     "execution_count": 3, "source": "x"},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [], "source": "y"}],
          "metadata": {}}
    cells = strip_notebook(nb)["cells"]
    assert cells[0]["metadata"] == {} and cells[1]["metadata"] == {"tags": ["parameters"]}


# --- reports and comparisons of damaged runs --------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, demo_data):
    return evaluated_tiny_run(tmp_path_factory.mktemp("evaluated"), demo_data, val_loss_every=2, train_log_every=1)


def _copy(run: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, to, ignore=shutil.ignore_patterns("plots", "report.html", "tables")))


def test_report_and_compare_leave_out_a_half_written_metrics_line(tmp_path, evaluated_run, capsys, caplog):
    run = _copy(evaluated_run, tmp_path / "cut")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[:-15])  # killed while writing its last line
    assert golf_main(["report", "--run-dir", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "plots" / "training.png").is_file()
    assert "are not JSON objects (cut short by a killed run?): left out" in caplog.text
    assert golf_main(["compare", str(evaluated_run), str(run), "--stage", "plain", "--out", str(tmp_path / "c")]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_report_and_compare_of_a_damaged_config_are_one_line(tmp_path, evaluated_run, capsys):
    run = _copy(evaluated_run, tmp_path / "bad")
    (run / "config.yaml").write_text("seed: [1\n")
    before = snapshot(run)
    assert golf_main(["report", "--run-dir", str(run)]) == 1
    assert "config.yaml' is not valid YAML" in one_error_line(capsys) and snapshot(run) == before
    assert golf_main(["compare", str(evaluated_run), str(run), "--stage", "plain", "--out", str(tmp_path / "c")]) == 1
    assert "config.yaml' is not valid YAML" in one_error_line(capsys) and not (tmp_path / "c").exists()


def test_nan_results_are_drawn_as_missing_with_a_note(tmp_path, evaluated_run, capsys):
    run = _copy(evaluated_run, tmp_path / "nan")
    for name in ("eval_plain.json", "train_summary.json"):
        text = (run / name).read_text()
        (run / name).write_text(re.sub(r'("val_(bpb|loss)": )[-0-9.e]+', r"\1NaN", text))
    assert golf_main(["report", "--run-dir", str(run)]) == 0
    assert (run / "plots" / "eval_bpb.png").is_file() and (run / "report.html").is_file()
    assert golf_main(["compare", str(evaluated_run), str(run), "--stage", "plain", "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "WARNING val_bpb is not a finite number in " in err and "Traceback" not in err
    assert "not a finite number" in (tmp_path / "c" / "compare.html").read_text()


# --- quantize and export of damaged inputs ----------------------------------------------------------

def _trained_copy(evaluated_run: Path, to: Path) -> Path:
    """The training files of the run only (no artifact), as a run after golf train."""
    import shutil

    to.mkdir()
    for name in ("config.yaml", "model.pt", "train_summary.json", "environment.json", "metrics.jsonl", "run.json"):
        shutil.copy2(evaluated_run / name, to / name)
    return to


def test_quantize_of_nan_weights_is_one_line_before_the_hessians(tmp_path, evaluated_run, capsys):
    import torch

    run = _trained_copy(evaluated_run, tmp_path / "nan")
    state = torch.load(run / "model.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1000)
    state[name][0] = float("nan")
    torch.save(state, run / "model.pt")
    summary = json.loads((run / "train_summary.json").read_text())
    summary.pop("model_sha256", None)  # a run trained before golf recorded model.pt's sha256
    (run / "train_summary.json").write_text(json.dumps(summary))
    before = snapshot(run)
    assert golf_main(["quantize", "--run-dir", str(run)]) == 1
    line = one_error_line(capsys)
    assert "holds NaN or infinite weights" in line and name in line and "LinAlgError" not in line
    assert {k: v for k, v in snapshot(run).items() if not k.endswith("quantize.log")} == before


def test_quantize_force_on_a_full_disk_puts_the_old_artifact_back(tmp_path, evaluated_run, capsys, monkeypatch):
    import errno

    import golf.runtime

    run = _copy(evaluated_run, tmp_path / "full")
    old = (run / "final_model.int6.ptz").read_bytes()
    before = snapshot(run)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(golf.runtime, "atomic_write_bytes", full)
    assert golf_main(["quantize", "--run-dir", str(run), "--force"]) == 1
    line = one_error_line(capsys)
    assert "No space left on device" in line and "back in place" in line
    assert (run / "final_model.int6.ptz").read_bytes() == old and not (run / "superseded").exists()
    after = snapshot(run)
    assert {k: v for k, v in after.items() if not k.endswith("quantize.log")} == \
        {k: v for k, v in before.items() if not k.endswith("quantize.log")}  # the run as it was


def test_export_of_an_eval_result_missing_a_field_is_one_line_and_writes_nothing(tmp_path, evaluated_run, capsys):
    run = _copy(evaluated_run, tmp_path / "run")
    result = json.loads((run / "eval_plain.json").read_text())
    del result["val_bpb"]
    (run / "eval_plain.json").write_text(json.dumps(result))
    out = tmp_path / "submission"
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    assert "eval_plain.json' has no number for 'val_bpb'" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_export_that_fails_half_way_leaves_no_out_folder(tmp_path, evaluated_run, capsys, monkeypatch):
    import golf.submission

    def broken(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(golf.submission.shutil, "copy2", broken)
    out = tmp_path / "submission"
    assert golf_main(["export-submission", "--run-dir", str(evaluated_run), "--out", str(out)]) == 1
    assert "No space left on device" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging: the retry is not blocked
    monkeypatch.undo()
    assert golf_main(["export-submission", "--run-dir", str(evaluated_run), "--out", str(out)]) == 0
    assert {"train_gpt.py", "submission.json", "README.md", "config.yaml"} <= {p.name for p in out.iterdir()}


# --- which file a path names ---------------------------------------------------------------------------

def test_dot_slash_names_the_current_folder_and_a_shadowed_name_is_said(tmp_path, monkeypatch, capsys):
    """From a folder with its own params/demo.yaml but no notebooks/ (not a project): ./params/demo.yaml is
    that file; params/demo.yaml is the project's, with a note naming both; mine.yaml, here only, is this one."""
    (tmp_path / "params").mkdir()
    text = (REPO / "params" / "demo.yaml").read_text()
    assert re.search(r"^warmup_steps: \d+$", text, re.M)
    (tmp_path / "params" / "demo.yaml").write_text(re.sub(r"^warmup_steps: \d+$", "warmup_steps: 7", text, flags=re.M))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GOLF_HOME", str(REPO))
    assert golf_main(["config", "--params", "./params/demo.yaml"]) == 0
    out, err = capsys.readouterr()
    assert "  warmup_steps: 7  #" in out and "note" not in err
    assert golf_main(["config", "--params", "params/demo.yaml"]) == 0
    out, err = capsys.readouterr()
    assert "  warmup_steps: 7  #" not in out
    assert err.strip() == (f"golf: note: params/demo.yaml is read from the project root ({REPO}/params/demo.yaml), "
                           "not the current folder: give ./params/demo.yaml for the one here")
    # a name only the current folder holds is that file, without ./ and without a note
    (tmp_path / "mine.yaml").write_text("warmup_steps: 9\n")
    assert golf_main(["config", "--params", "mine.yaml"]) == 0
    out, err = capsys.readouterr()
    assert "  warmup_steps: 9  #" in out and err == ""
    # where golf writes (golf train's run folder) keeps the project root, an empty folder here or not
    from golf.cli import _resolve_path_args, build_parser

    (tmp_path / "newrun").mkdir()
    for argv, where in ((["train", "--params", "mine.yaml", "--run-dir", "newrun"], REPO / "newrun"),
                        (["quantize", "--run-dir", "newrun"], tmp_path / "newrun")):
        args = build_parser().parse_args(argv)
        _resolve_path_args(args)
        assert args.run_dir == str(where), argv


# --- the README's demo table ---------------------------------------------------------------------------

def test_the_readme_demo_table_is_generated_from_a_run_at_a_real_commit(tmp_path):
    """bench/readme_demo_table.py writes the table from a study's files; the README's block is its output,
    naming the commit it was made at and what the numbers depend on."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import readme_demo_table as gen
    finally:
        sys.path.remove(str(REPO / "bench"))
    study = tmp_path / "demo"
    for seed, shift in ((42, 0.0), (314, 0.01)):
        run = study / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text('{"step": 0, "val_loss": 6.9, "val_bpb": 3.9081}\n{"step": 10, '
                                           '"train_loss": 5.0}\n')
        (run / "train_summary.json").write_text(json.dumps({"train_ms": 61000, "prequant_post_ema":
                                                            {"val_bpb": 2.05 + shift}}))
        (run / "quant_budget.json").write_text(json.dumps({"quantize_s": 9.0}))
        (run / "environment.json").write_text(json.dumps({"git_commit": "abcdef1234567", "git_dirty": False,
                                                          "torch": "2.13.0+cpu", "platform": "Linux-x86_64"}))
        for mode, bpb in (("plain", 2.06), ("sliding", 2.04), ("ttt", 1.99)):
            (run / f"eval_{mode}.json").write_text(json.dumps({"val_bpb": bpb + shift, "seconds": 10.0}))
    block = gen.demo_table(study, wall_s=600)
    assert "| step 0 (uniform) | 3.908 | 3.908 |" in block and "| quantized, score-first TTT | 1.9900 | 2.0000 |" in block
    assert "commit abcdef1234, torch 2.13.0+cpu" in block and "training 61 s, quantization 9 s, evaluation 30 s" in block
    assert "took 10 minutes" in block

    readme = (REPO / "README.md").read_text()
    assert gen.START in readme and gen.END in readme, "README's demo table is not in its generated block"
    shown = readme.split(gen.START, 1)[1].split(gen.END, 1)[0]
    assert "the numbers depend on the commit" in shown  # what the figures depend on, generated or not
    commit = re.search(r"from a `make demo` at commit ([0-9a-f]{10})", shown)
    if commit:  # a generated table names a commit that exists, and the wall time of make demo
        assert subprocess.run(["git", "cat-file", "-e", f"{commit.group(1)}^{{commit}}"], cwd=REPO).returncode == 0
        assert re.search(r"`make demo` took \d+ minutes", shown)
    assert gen.replace_block(readme, shown.strip()) == readme  # the block is the script's to rewrite


def test_a_micro_batch_too_big_for_memory_is_refused_before_allocating(tmp_path, demo_data, capsys):
    """The weights fit, the activations of one micro-batch cannot (second trial of issue 33)."""
    params = tiny_params(tmp_path, demo_data, iterations=1)
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run), "--set",
                      "train_batch_tokens=1073741824", "grad_accum_total=1"]) == 1
    line = one_error_line(capsys)
    assert "train_batch_tokens 1,073,741,824" in line and "GiB of activations" in line and not run.exists()
