"""bench/study.py refuses a study whose arms do not load before any job starts (issue 16: a typo in the
last arm must not cost the GPU time of the others)."""
import json
import subprocess
import threading
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fake_golf_needs_no_data(monkeypatch):
    """In-process studies here run a fake golf: the data check of study.py has no shards to read. (The
    studies run as subprocesses, through ``study()``, check real demo data.)"""
    import golf.data

    monkeypatch.setattr(golf.data, "check_data_binding", lambda cfg, *a, **k: {})


def study(tmp_path, data, *arms, extra=()):
    """bench/study.py on CPU in GOLF_HOME=tmp_path, every arm on the demo data ``data``."""
    env = {"GOLF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    extra = ("--set", f"data_dir={data.data_dir}", f"tokenizer_path={data.tokenizer_path}",
             f"vocab_size={data.vocab_size}", *extra)
    (tmp_path / "params").mkdir(exist_ok=True)
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "bench/study.py"), "--gpus", "cpu", "--seeds", "1",
                           "--prefix", "t", *extra, "--arms", *arms], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_bad_arm_is_refused_before_any_job(tmp_path, demo_data):
    demo = str(ROOT / "params/demo.yaml")
    out = study(tmp_path, demo_data, f"a={demo}", f"b={demo} smear_gat=true")
    assert out.returncode == 1
    assert "arm 'b'" in out.stderr and "smear_gat" in out.stderr
    assert not list((tmp_path / "outputs").glob("t-*")), "no study folder before the arms check"
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--modes", "tt"))
    assert out.returncode == 1 and "unknown --modes ['tt']" in out.stderr


def test_set_given_twice_keeps_both(tmp_path, demo_data):
    demo = str(ROOT / "params/demo.yaml")
    # both --set values reach the arms check: the second one's bad value is named, so it was not dropped
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--set", "iterations=3", "--set", "ema_decay=2"))
    assert out.returncode == 1 and "'ema_decay'" in out.stderr
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--set", "ema_decay=2", "--set", "iterations=3"))
    assert out.returncode == 1 and "'ema_decay'" in out.stderr


def _study_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("golf_bench_study", ROOT / "bench/study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def _fake_study(root: Path) -> None:
    """Study 't' with arms a and b: a/seed1 finished (weights, artifact, eval), a/seed2 trained only."""
    done, half = root / "t-a/seed1", root / "t-a/seed2"
    for run in (done, half):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 1\n")
        (run / "model.pt").write_bytes(b"w" * 100)
    (done / "final_model.int6.ptz").write_bytes(b"q" * 50)
    (done / "eval_ttt.json").write_text('{"val_bpb": 1.2}')
    (done / "tables").mkdir()
    (done / "tables/x.csv").write_text("a,b\n")
    (root / "t-a/seed1.console.log").write_text("$ golf train\n")
    (root / "t-b").mkdir()
    (root / "t-plan.json").write_text("{}")
    (root / "t-study.jsonl").write_text('{"step": "train"}\n')
    other = root / "t-a-x/seed9"  # study t-a's arm x, not study t's: never packed with t
    other.mkdir(parents=True)
    (other / "model.pt").write_bytes(b"w")
    (other / "eval_ttt.json").write_text("{}")


def test_an_archive_moves_the_finished_runs_without_their_weights(tmp_path):
    study = _study_module()
    here, there = tmp_path / "here", tmp_path / "there"
    _fake_study(here)
    packed, left = study.archive_study(tmp_path / "s.tgz", here, "t", ["a", "b"], ["ttt"])
    assert (packed, left) == (1, 1)
    assert study.restore_study(tmp_path / "s.tgz", there, "t") is None
    files = sorted(str(p.relative_to(there)) for p in there.rglob("*") if p.is_file())
    assert files == ["t-a/seed1.console.log", "t-a/seed1/config.yaml", "t-a/seed1/eval_ttt.json",
                     "t-a/seed1/tables/x.csv", "t-plan.json", "t-study.jsonl"]
    # restoring again would overwrite what is there: refused, nothing touched
    problem = study.restore_study(tmp_path / "s.tgz", there, "t")
    assert problem and "exists here already" in problem


def test_restore_refuses_an_archive_of_another_study(tmp_path):
    study = _study_module()
    _fake_study(tmp_path / "here")
    study.archive_study(tmp_path / "s.tgz", tmp_path / "here", "t", ["a", "b"], ["ttt"])
    problem = study.restore_study(tmp_path / "s.tgz", tmp_path / "there", "other")
    assert problem and "is not a file of study 'other'" in problem
    assert not (tmp_path / "there").exists()


def test_a_finished_run_without_weights_is_not_run_again(tmp_path, monkeypatch):
    import threading

    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", lambda args, gpu, console, cpus=None: calls.append(args[0]) or (0, 0.0))
    run = tmp_path / "t-a/seed1"
    run.mkdir(parents=True)
    (run / "eval_ttt.json").write_text("{}")  # as restored: no model.pt, no artifact
    study.run_job("a", "p.yaml", 1, run, [], ["ttt"], "cpu", tmp_path / "log.jsonl", threading.Lock())
    assert calls == []
    (run / "eval_ttt.json").unlink()
    (run / "model.pt").write_bytes(b"w")  # trained, not quantized: the job goes on from quantize
    study.run_job("a", "p.yaml", 1, run, [], ["ttt"], "cpu", tmp_path / "log.jsonl", threading.Lock())
    assert calls == ["quantize", "evaluate"]


def test_a_run_is_finished_when_every_mode_is_evaluated(tmp_path):
    study = _study_module()
    (tmp_path / "eval_ttt.json").write_text("{}")
    assert study.finished(tmp_path, ["ttt"])
    assert not study.finished(tmp_path, ["sliding", "ttt"]), "sliding's evaluation is missing"


def test_restore_of_a_missing_archive_is_one_line(tmp_path, demo_data):
    demo = str(ROOT / "params/demo.yaml")
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--restore", str(tmp_path / "none.tgz")))
    assert out.returncode == 1 and "none.tgz: no such file" in out.stderr and "Traceback" not in out.stderr


def test_stop_taking_after_starts_no_job_past_its_time(tmp_path, demo_data):
    demo = str(ROOT / "params/demo.yaml")
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--stop-taking-after", "1e-9", "--archive", str(tmp_path / "s.tgz")))
    assert "golf compare" in out.stdout, out.stderr
    assert not list((tmp_path / "outputs/t-a").iterdir()), "no job was started"
    assert "1 jobs not started" in out.stdout
    assert "archive:" in out.stdout and "0 finished runs" in out.stdout


def test_a_study_part_way_through_compares_the_arms_it_has(tmp_path, monkeypatch, capsys):
    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", lambda args, gpu, console, cpus=None: calls.append(args) or (0, 0.0))
    _fake_study(tmp_path)  # arm a has a finished run, arm b none
    assert study.compare_finished(tmp_path, "t", ["a", "b"], ["ttt"]) == 0
    assert calls and calls[0][calls[0].index("--names") + 1:][:2] == ["a", "--stage"]
    assert "arms with no finished run yet: b" in capsys.readouterr().out
    calls.clear()
    assert study.compare_finished(tmp_path, "t", ["b", "a"], ["ttt"], part_way=True) == 0
    assert calls == [] and "the baseline arm 'b' has no finished run yet" in capsys.readouterr().out
    assert study.compare_finished(tmp_path, "t", ["b", "a"], ["ttt"]) == 1  # every job ran: b failed
    assert calls == [] and "(see its console log)" in capsys.readouterr().out


def test_a_failed_compare_says_golfs_reason(tmp_path, monkeypatch, capsys):
    study = _study_module()

    said = ["golf: error: the HTML report needs nbformat, not installed here"]

    def failing(args, gpu, console, cpus=None):
        with console.open("a") as f:
            f.write("$ golf compare ...\n" + "".join(line + "\n" for line in said))
        return (1 if said else -9), 0.0

    monkeypatch.setattr(study, "_golf", failing)
    _fake_study(tmp_path)  # arm b has no finished run
    assert study.compare_finished(tmp_path, "t", ["a", "b"], ["ttt"]) == 1
    out = capsys.readouterr().out.strip()
    assert out.endswith("needs nbformat, not installed here; arms with no finished run yet: b"), out
    said.clear()  # killed before a word: no reason, and not the header nor the earlier call's line
    assert study.compare_finished(tmp_path, "t", ["a", "b"], ["ttt"]) == -9
    out = capsys.readouterr().out.strip()
    assert out.endswith("-compare); arms with no finished run yet: b"), out


def _fake_golf(calls):
    """Stands in for the golf CLI: each step writes what the real one would, so the study moves on."""
    def golf(args, gpu, console, cpus=None):
        calls.append(args)
        if args[0] == "compare":
            return 0, 0.0
        run = Path(args[args.index("--run-dir") + 1])
        if args[0] == "train":
            from golf.config import load_config, save_config

            run.mkdir(parents=True)
            for name in ("model.pt", "train.log", "metrics.jsonl"):
                (run / name).write_text(name)
            params, sets = args[args.index("--params") + 1], args[args.index("--set") + 1:]
            save_config(load_config(params, sets), run / "config.yaml")
        elif args[0] == "quantize":
            for name in ("final_model.int6.ptz", "quant_budget.json", "quantize.log"):
                (run / name).write_text(f"{name} of {run.parent.name}")
        else:
            (run / f"eval_{args[args.index('--mode') + 1]}.json").write_text("{}")
        return 0, 0.0
    return golf


def test_a_quantization_only_arm_quantizes_a_copy_of_the_trained_run(tmp_path, monkeypatch):
    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", _fake_golf(calls))
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    demo = str(ROOT / "params/demo.yaml")
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "cpu", "--seeds", "1", "2", "--prefix", "t",
                                      "--lead-arms", "c", "--arms", f"a={demo}", f"b={demo} lqer_rank=2",
                                      f"c={demo} iterations=7 lqer_rank=2"])
    assert study.main() == 0
    steps = [(a[0], Path(a[a.index("--run-dir") + 1]).parent.name, Path(a[a.index("--run-dir") + 1]).name)
             for a in calls if a[0] != "compare"]
    trained = [(arm, seed) for step, arm, seed in steps if step == "train"]
    # c (a training key differs) trains, first as it leads; b, differing from a only in lqer_rank, does not
    assert trained == [("t-c", "seed1"), ("t-c", "seed2"), ("t-a", "seed1"), ("t-a", "seed2")]
    b_quantize = [a for a in calls if a[0] == "quantize" and "t-b" in a[a.index("--run-dir") + 1]]
    assert len(b_quantize) == 2 and all(a[-2:] == ["--set", "lqer_rank=2"] for a in b_quantize)
    run = tmp_path / "outputs/t-b/seed1"
    assert (run / "model.pt").read_text() == "model.pt" and (run / "metrics.jsonl").is_file()
    assert json.loads((run / "copied_from.json").read_text())["arm"] == "a"
    # a's artifact and evaluation were there when b copied the run: b made its own, nothing of a's came along
    assert (run / "quantize.log").read_text() == "quantize.log of t-b"
    assert (run / "final_model.int6.ptz").read_text() == "final_model.int6.ptz of t-b"
    log = [json.loads(line) for line in (tmp_path / "outputs/t-study.jsonl").read_text().splitlines()]
    assert {(r["arm"], r["step"]) for r in log if r["arm"] == "b"} == {("b", "train (copied from a)"), ("b", "quantize"),
                                                                       ("b", "evaluate ttt")}


def _restored_without_weights(tmp_path, monkeypatch):
    """A study 't' under GOLF_HOME=tmp_path run through the fake golf, whose arm a's seed 1 came back
    from another machine finished but without its weights. Returns (study module, golf calls, demo params)."""
    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", _fake_golf(calls))
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    done = tmp_path / "outputs/t-a/seed1"
    done.mkdir(parents=True)
    (done / "eval_ttt.json").write_text("{}")
    return study, calls, str(ROOT / "params/demo.yaml")


def test_when_the_first_twin_came_back_without_weights_the_next_one_trains_for_both(tmp_path, monkeypatch):
    """A study restored on a fresh machine: a/seed1 finished there, its weights left behind. b and c
    train as a does (only lqer_rank differs): b trains, c quantizes a copy of b's run."""
    study, calls, demo = _restored_without_weights(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "cpu", "--seeds", "1", "--prefix", "t", "--arms",
                                      f"a={demo}", f"b={demo} lqer_rank=2", f"c={demo} lqer_rank=3"])
    assert study.main() == 0
    runs = [(a[0], Path(a[a.index("--run-dir") + 1]).parent.name, a[a.index("--run-dir") + 2:])
            for a in calls if a[0] != "compare"]
    assert runs == [("train", "t-b", ["--set", "seed=1", "lqer_rank=2"]), ("quantize", "t-b", []),
                    ("evaluate", "t-b", ["--mode", "ttt"]),
                    ("quantize", "t-c", ["--set", "lqer_rank=3"]), ("evaluate", "t-c", ["--mode", "ttt"])]
    assert json.loads((tmp_path / "outputs/t-c/seed1/copied_from.json").read_text())["arm"] == "b"


def test_a_twin_whose_training_failed_leaves_the_job_to_train_itself(tmp_path, monkeypatch):
    import threading

    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", _fake_golf(calls))
    failed = tmp_path / "t-a/seed1"
    failed.mkdir(parents=True)  # its training stopped before model.pt
    twin = study.Twin("a", failed, study.Training(ok=False))
    twin.training.done.set()
    (tmp_path / "t-b").mkdir()
    demo = str(ROOT / "params/demo.yaml")
    study.run_job("b", demo, 1, tmp_path / "t-b/seed1", ["lqer_rank=2"], ["ttt"], "cpu", tmp_path / "l.jsonl",
                  threading.Lock(), twin=twin)
    assert [a[0] for a in calls] == ["train", "quantize", "evaluate"]
    assert "--set" not in calls[1], "trained with its own keys: nothing to set at quantize"


def test_quantization_changes_are_none_when_a_training_key_differs(tmp_path):
    from golf.config import load_config, save_config

    study = _study_module()
    demo = str(ROOT / "params/demo.yaml")
    save_config(load_config(demo, ["seed=1", "lqer_rank=2"]), tmp_path / "config.yaml")
    assert study.quantization_changes(tmp_path, demo, ["lqer_rank=2"], 1) == []
    assert study.quantization_changes(tmp_path, demo, [], 1) == ["lqer_rank=0"]
    assert study.quantization_changes(tmp_path, demo, [], 2) is None, "another seed trains other weights"
    assert study.quantization_changes(tmp_path, demo, ["lqer_rank=2", "iterations=9"], 1) is None


def test_an_unknown_lead_arm_is_refused_before_anything_is_written(tmp_path, demo_data):
    demo = str(ROOT / "params/demo.yaml")
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--lead-arms", "z"))
    assert out.returncode == 1 and "--lead-arms ['z']" in out.stderr
    assert not (tmp_path / "outputs/t-plan.json").exists(), "refused before the plan is written"


def test_workers_side_by_side_get_their_own_cpus(monkeypatch):
    study = _study_module()
    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert study.cpu_shares(4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert study.cpu_shares(3) == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert study.cpu_shares(1) == [None], "one worker keeps every CPU"
    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert study.cpu_shares(2) == [None, None], "fewer CPUs than workers: not pinned"


def test_a_pinned_step_runs_on_its_cpus(tmp_path, monkeypatch):
    import os

    study = _study_module()
    probe = tmp_path / "allowed.txt"
    fake = tmp_path / "python"  # stands in for the interpreter _golf starts: reports the CPUs it may use
    fake.write_text(f"#!/bin/sh\ngrep Cpus_allowed_list /proc/self/status > {probe}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(study.sys, "executable", str(fake))
    cpu = sorted(os.sched_getaffinity(0))[-1]
    assert study._golf(["config"], "cpu", tmp_path / "console.log", [cpu])[0] == 0
    assert probe.read_text().split()[-1] == str(cpu)
    assert study._golf(["config"], "cpu", tmp_path / "console.log")[0] == 0
    assert probe.read_text().split()[-1] != str(cpu) or len(os.sched_getaffinity(0)) == 1, "unpinned: every CPU"


def test_a_lead_arm_never_waits_for_a_twin_queued_behind_it(tmp_path, monkeypatch):
    """c leads; its first twin a came back without weights, its next twin b is queued after c: c trains
    itself instead of waiting for b (which would hang a one-worker study)."""
    study, calls, demo = _restored_without_weights(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "cpu", "--seeds", "1", "--prefix", "t", "--lead-arms", "a",
                                      "c", "--arms", f"a={demo}", f"b={demo} lqer_rank=2", f"c={demo} lqer_rank=3"])
    result = []
    worker = threading.Thread(target=lambda: result.append(study.main()), daemon=True)
    worker.start()
    worker.join(60)
    assert result == [0], "the study hung"
    trained = [Path(a[a.index("--run-dir") + 1]).parent.name for a in calls if a[0] == "train"]
    assert trained == ["t-c"], "c trained; b then copied c's run"
    assert json.loads((tmp_path / "outputs/t-b/seed1/copied_from.json").read_text())["arm"] == "c"


def test_calibration_batches_are_a_training_key_when_training_collects_the_hessians():
    study = _study_module()
    assert "gptq_calibration_batches" in study.quantization_only_keys({"fix_gptq_in_budget": False})
    assert "gptq_calibration_batches" not in study.quantization_only_keys({"fix_gptq_in_budget": True})
    assert "lqer_rank" in study.quantization_only_keys({"fix_gptq_in_budget": True})


def test_two_workers_train_each_seed_once_for_twin_arms(tmp_path, monkeypatch):
    import time

    study = _study_module()
    calls = []
    fake = _fake_golf(calls)
    monkeypatch.setattr(study, "_golf", lambda args, gpu, console, cpus=None: (time.sleep(0.05), fake(args, gpu, console))[1])
    monkeypatch.setattr(study.time, "sleep", lambda s: None)  # not the 2 s stagger between workers
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    demo = str(ROOT / "params/demo.yaml")
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "0", "1", "--seeds", "1", "2", "3", "--prefix", "t",
                                      "--arms", f"a={demo}", f"b={demo} lqer_rank=2"])
    result = []
    runner = threading.Thread(target=lambda: result.append(study.main()), daemon=True)
    runner.start()
    runner.join(60)
    assert result == [0], "the study hung"
    trained = sorted(Path(a[a.index("--run-dir") + 1]).name for a in calls if a[0] == "train")
    assert trained == ["seed1", "seed2", "seed3"], "each seed trained once, by a or by b"
    for seed in (1, 2, 3):
        runs = [tmp_path / f"outputs/t-{arm}/seed{seed}" for arm in "ab"]
        assert all(study.finished(r, ["ttt"]) for r in runs)
        assert sum((r / "copied_from.json").is_file() for r in runs) == 1


def test_a_copy_of_a_copy_names_the_training_that_made_the_weights(tmp_path):
    study = _study_module()
    first = tmp_path / "t-b/seed1"
    first.mkdir(parents=True)
    for name in ("model.pt", "config.yaml", "hessians_rank0.pt", "final_model.int6.ptz", "eval_ttt.json"):
        (first / name).write_text(name)
    (first / "copied_from.json").write_text(json.dumps({"run": "/m/t-a/seed1", "arm": "a", "via": None}))
    (tmp_path / "t-c").mkdir()  # the study's arm folder
    study.copy_trained_run(first, tmp_path / "t-c/seed1", "b")
    made = tmp_path / "t-c/seed1"
    assert json.loads((made / "copied_from.json").read_text()) == {"run": "/m/t-a/seed1", "arm": "a", "via": str(first)}
    assert sorted(p.name for p in made.iterdir()) == ["config.yaml", "copied_from.json", "hessians_rank0.pt", "model.pt"]


def test_a_job_whose_twin_is_training_lets_the_next_job_go_first(tmp_path, monkeypatch):
    """Two workers, arms a, b (a's twin) and c: while a trains, the second worker starts c rather than
    sitting on b; b copies a's run once a's training is done."""
    import time

    real_sleep = time.sleep
    study = _study_module()
    calls, started = [], []
    fake = _fake_golf(calls)

    def slow_golf(args, gpu, console, cpus=None):
        started.append((args[0], Path(args[args.index("--run-dir") + 1]).parent.name if "--run-dir" in args else ""))
        if args[0] == "train":
            real_sleep(0.5)
        return fake(args, gpu, console)
    monkeypatch.setattr(study, "_golf", slow_golf)
    monkeypatch.setattr(study.time, "sleep", lambda s: None)  # not the 2 s stagger between workers
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    demo = str(ROOT / "params/demo.yaml")
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "0", "1", "--seeds", "1", "--prefix", "t", "--arms",
                                      f"a={demo}", f"b={demo} lqer_rank=2", f"c={demo} iterations=7"])
    result = []
    runner = threading.Thread(target=lambda: result.append(study.main()), daemon=True)
    runner.start()
    runner.join(60)
    assert result == [0], "the study hung"
    assert sorted(started[:2]) == [("train", "t-a"), ("train", "t-c")], started
    assert ("train", "t-b") not in started and ("quantize", "t-b") in started


def test_missing_data_is_refused_before_any_folder(tmp_path, demo_data):
    demo = str(ROOT / "params/demo.yaml")
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--set", f"data_dir={tmp_path / 'no_data'}"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "arm 'a'" in out.stderr and "no_data" in out.stderr and "does not exist" in out.stderr
    assert not list((tmp_path / "outputs").glob("t-*")), "no study folder before the data check"


def test_an_interrupted_training_is_kept_aside_and_trained_again(tmp_path, monkeypatch):
    import threading

    from golf.runs import LOCK as RUN_LOCK

    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", _fake_golf(calls))
    run = tmp_path / "t-a/seed1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')  # killed mid-training: no model.pt
    (run / RUN_LOCK).write_text("999999999")  # its process is gone
    log = tmp_path / "l.jsonl"
    study.run_job("a", str(ROOT / "params/demo.yaml"), 1, run, [], ["ttt"], "cpu", log, threading.Lock())
    assert [a[0] for a in calls] == ["train", "quantize", "evaluate"]
    aside = tmp_path / "t-a/seed1.interrupted-1"
    assert (aside / "metrics.jsonl").read_text() == '{"step": 1}\n', "the interrupted run is kept as it was"
    assert (run / "model.pt").is_file() and study.finished(run, ["ttt"])
    assert "interrupted run moved to seed1.interrupted-1" in log.read_text() and not study.FAILED


def test_a_run_folder_in_use_is_left_alone_and_reported(tmp_path, monkeypatch):
    import os
    import threading

    from golf.runs import LOCK as RUN_LOCK

    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", _fake_golf(calls))
    run = tmp_path / "t-a/seed1"
    run.mkdir(parents=True)
    (run / RUN_LOCK).write_text(str(os.getpid()))  # a live process trains here
    study.run_job("a", str(ROOT / "params/demo.yaml"), 1, run, [], ["ttt"], "cpu", tmp_path / "l.jsonl",
                  threading.Lock())
    assert calls == [] and list(run.iterdir()) == [run / RUN_LOCK]
    assert len(study.FAILED) == 1 and "in use" in study.FAILED[0]["step"]


def test_a_failed_job_makes_the_study_exit_1_and_the_summary_names_it(tmp_path, monkeypatch, capsys):
    study = _study_module()
    calls = []
    fake = _fake_golf(calls)

    def golf(args, gpu, console, cpus=None):
        if args[0] == "quantize" and "t-b" in args[args.index("--run-dir") + 1]:
            calls.append(args)
            return 1, 0.0
        return fake(args, gpu, console, cpus)

    monkeypatch.setattr(study, "_golf", golf)
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    demo = str(ROOT / "params/demo.yaml")
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "cpu", "--seeds", "1", "2", "--prefix", "t", "--arms",
                                      f"a={demo}", f"b={demo} iterations=7"])
    assert study.main() == 1
    out = capsys.readouterr().out
    assert "4 jobs (2 arms x 2 seeds), 4 to run" in out
    assert "job 1 of 4: a seed 1 on CPU" in out and "job 4 of 4: b seed 2 on CPU" in out
    assert "missing seeds [1, 2]" in out and out.count("FAILED: b seed") == 2
    assert "t-b/seed1.console.log" in out


def test_the_data_check_skips_arms_whose_seeds_are_all_finished(tmp_path, demo_data):
    """Comparing or archiving a restored study needs no shards: only arms with a seed to run are checked."""
    demo = str(ROOT / "params/demo.yaml")
    done = tmp_path / "outputs/t-a/seed1"
    done.mkdir(parents=True)
    (done / "eval_ttt.json").write_text("{}")  # finished, as restored from an archive
    out = study(tmp_path, demo_data, f"a={demo}", extra=("--set", f"data_dir={tmp_path / 'no_data'}"))
    assert "no_data" not in out.stderr and "0 to run" in out.stdout, out.stderr


def test_a_job_that_raises_is_one_failed_line_and_the_worker_goes_on(tmp_path, monkeypatch, capsys):
    study = _study_module()
    calls = []
    monkeypatch.setattr(study, "_golf", _fake_golf(calls))
    real_run_job = study.run_job

    def run_job(arm, *args, **kw):
        if arm == "a":
            raise PermissionError("cannot rename")
        return real_run_job(arm, *args, **kw)

    monkeypatch.setattr(study, "run_job", run_job)
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    demo = str(ROOT / "params/demo.yaml")
    monkeypatch.setattr(sys, "argv", ["study.py", "--gpus", "cpu", "--seeds", "1", "--prefix", "t", "--arms",
                                      f"a={demo}", f"b={demo} iterations=7"])
    assert study.main() == 1
    out = capsys.readouterr().out
    assert "FAILED: a seed 1: job stopped: PermissionError: cannot rename" in out
    assert (tmp_path / "outputs/t-b/seed1/eval_ttt.json").is_file(), "the worker went on to b"
