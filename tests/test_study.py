"""`golf study`: arms x seeds through one engine, on the local executor and on a local Ray (issue 30).

Tiny runs of the demo data; the twin arm (it differs only in a quantization key) quantizes a copy of
the baseline's trained run, so each seed trains once."""
import json
import os

import pytest

from golf.cli import main as golf_main
from golf.runs import LOCK, RunDir
from conftest import tiny_params

TINY = dict(iterations=4, val_loss_every=0, train_log_every=2, max_val_tokens=2048)


def study(tmp_path, params, *extra):
    return golf_main(["study", "--study", "s", "--outputs", str(tmp_path / "out"), "--seeds", "1", "2",
                      "--modes", "plain", "--arms", f"base={params}", f"q1={params} gptq_calibration_batches=1",
                      *extra])


def kill(run_dir):
    """A run killed mid-training in an earlier call of the study: a config and a lock whose process is gone."""
    run_dir.mkdir(parents=True)
    (run_dir.parent.parent / "study.json").write_text("{}")
    (run_dir / "config.yaml").write_text("seed: 2\n")
    (run_dir / LOCK).write_text("999999999")


def check_finished(out, notebooks=True):
    s = out / "s"
    plan = json.loads((s / "study.json").read_text())
    assert sorted(plan["arms"]) == ["base", "q1"] and plan["seeds"] == [1, 2]
    for arm in ("base", "q1"):
        for seed in ("seed1", "seed2-2" if arm == "base" else "seed2"):
            run = RunDir(s / arm / seed)
            assert json.loads(run.eval_result("plain").read_text())["val_bpb"] > 0, run
            assert run.report.is_file() == notebooks
        copied = json.loads(RunDir(s / "q1" / "seed1").copied_from.read_text())
        assert copied["run"] == str(s / "base" / "seed1")  # the twin shares base's weights
        assert RunDir(s / "q1" / "seed1").model.samefile(RunDir(s / "base" / "seed1").model)  # linked
        assert RunDir(s / "q1" / "seed1").config() == RunDir(s / "base" / "seed1").config()
    assert (s / "compare" / "compare.html").is_file()
    assert "paired" in (s / "compare" / "compare.csv").read_text()  # the twin's test is paired
    return s


@pytest.mark.slow
def test_a_two_arm_study_runs_resumes_by_the_one_rule_and_compares(tmp_path, demo_data, capfd):
    capsys = capfd  # file descriptor 2 as well: the kernels write there
    params = tiny_params(tmp_path, demo_data, **TINY)
    kill(tmp_path / "out" / "s" / "base" / "seed2")  # an earlier call was killed there
    before = sorted(p.name for p in (tmp_path / "out" / "s" / "base" / "seed2").iterdir())
    assert study(tmp_path, params) == 0
    console = capsys.readouterr().err
    assert "IPKernelApp" not in console  # no kernel's start-up warning among golf's lines
    assert "seed 2 · base (3 of 4): seed2 kept as it was left (interrupted); starting again in seed2-2" in console
    for arm, notebooks in (("base (1 of 4)", "train quantize ttt_eval"), ("q1 (2 of 4)", "quantize ttt_eval")):
        assert [line.split(": ")[-1].split()[0] for line in console.splitlines()
                if f"seed 1 · {arm}:" in line] == notebooks.split()
    # the status line, as golf run shows it, for a run trained here and for a twin that quantizes a copy
    for status in ("seed 1 · base (1 of 4) · train · ", "seed 1 · q1 (2 of 4) · quantize · "):
        assert any(line.startswith(status) for line in console.splitlines()), status
    s = check_finished(tmp_path / "out")
    # quantize counted the code of a submission scoring the study's stages (the quantize notebook's modes)
    assert json.loads((s / "base" / "seed1" / "quant_budget.json").read_text())["code_modes"] == ["plain"]
    killed = s / "base" / "seed2"
    assert sorted(p.name for p in killed.iterdir()) == before  # kept as it was; the seed ran in seed2-2
    assert RunDir(killed).status() == "interrupted"
    assert not (s / "q1" / "seed1" / "train.ipynb").exists()  # quantized a copy, did not train

    stamp = (s / "q1" / "seed2" / "eval_plain.json").stat().st_mtime_ns
    evaluated = RunDir(s / "base" / "seed1")  # as if killed after training, while it was evaluated
    evaluated.eval_result("plain").unlink()
    evaluated.report.unlink()
    RunDir(s / "q1" / "seed2").report.unlink()  # the twin's too: its retry links base's weights again
    capsys.readouterr()
    assert study(tmp_path, params) == 0  # run again: every finished run kept, nothing redone
    assert (s / "q1" / "seed2" / "eval_plain.json").stat().st_mtime_ns == stamp  # kept as it was left
    err = capsys.readouterr().err
    assert "seed 2 · q1 (4 of 4): seed2 kept as it was left (evaluated); starting again in seed2-2 from " \
           "base/seed2-2's trained weights" in err
    assert "kept" in err and "seed1 kept as it was left (quantized); starting again in seed1-2 from its " \
                               "trained weights" in err
    retried = RunDir(s / "base" / "seed1-2")  # not trained again: quantized and evaluated what seed1 trained
    assert retried.model.samefile(evaluated.model) and not retried.notebook("train").exists()
    assert json.loads(retried.eval_result("plain").read_text())["val_bpb"] > 0 and retried.report.is_file()
    # other settings for an arm of this study: refused in one line, before any work
    assert golf_main(["study", "--study", "s", "--outputs", str(tmp_path / "out"), "--seeds", "1",
                      "--modes", "plain", "--arms", f"base={params} ema_decay=0.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "'base'" in err[0]
    # an arm with the config of an arm of an earlier call: one arm twice, refused before any work
    assert golf_main(["study", "--study", "s", "--outputs", str(tmp_path / "out"), "--seeds", "1",
                      "--modes", "plain", "--arms", f"again={params}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has the settings of arm 'base'" in err[0] and not (s / "again").exists()


def test_ray_runs_each_job_as_a_task_on_its_own_gpu(tmp_path, demo_data):
    """A local Ray told it has 2 GPUs hands each task one (CUDA_VISIBLE_DEVICES); the runs themselves go
    on the CPU here. A kill between the calls is resumed by the same rule."""
    ray = pytest.importorskip("ray")
    from golf.study import run_arms
    from golf.study_executors import RayExecutor
    from golf.study_plan import Study, parse_arm

    params = tiny_params(tmp_path, demo_data, **TINY)
    arms = [parse_arm(f"base={params}"), parse_arm(f"q1={params} gptq_calibration_batches=1")]
    seen = []

    def ray_executor():
        ex = RayExecutor("local", nproc=1, num_cpus=2, num_gpus=2)
        submit = ex.submit

        def recorded(job):
            future = submit(job)
            future.add_done_callback(lambda f: seen.append(f.result().get("gpus")))
            return future
        ex.submit = recorded
        return ex

    kill(tmp_path / "out" / "s" / "base" / "seed2")
    st = Study(tmp_path / "out" / "s", arms, [1, 2], modes=["plain"], notebooks=False)
    try:
        page, failures = run_arms(st, ray_executor)
    finally:
        ray.shutdown()
    assert failures == [] and page == tmp_path / "out" / "s" / "compare" / "compare.html"
    check_finished(tmp_path / "out", notebooks=False)
    retried = tmp_path / "out" / "s" / "base" / "seed2-2"  # golf quantize --modes, as without notebooks
    assert json.loads((retried / "quant_budget.json").read_text())["code_modes"] == ["plain"]
    assert set(seen) == {"0", "1"}  # two tasks side by side, each on its own (fake) GPU


def test_bad_arms_and_keys_are_one_line_before_any_folder(tmp_path, demo_data, capsys):
    params = tiny_params(tmp_path, demo_data, **TINY)
    out = tmp_path / "out"
    for arms, words in (([f"a={params}", f"b={params} smear_gat=true"], ["arm 'b'", "smear_gat"]),
                        ([f"a={params}", "b"], ["NAME=PARAMS"]),
                        ([f"a={params} seed=3"], ["--seeds"]),
                        ([f"a={params}", f"b={params}"], ["arms 'a' and 'b' have the same settings"]),
                        ([f"a={params} ema_decay=0.5", f"b={params} ema_decay=0.50"], ["same settings"]),
                        ([f"a={params}", f"compare={params} ema_decay=0.5"], ["comparison folder"])):
        assert golf_main(["study", "--study", "s", "--outputs", str(out), "--seeds", "1", "--arms", *arms]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err
    assert golf_main(["study", "--study", "s", "--outputs", str(out), "--seeds", "1", "--arms", f"a={params}",
                      "--lead-arms", "zz"]) == 1
    assert "zz" in capsys.readouterr().err
    assert golf_main(["study", "--study", "s", "--outputs", str(out), "--seeds", "1", "--arms", f"a={params}",
                      "--restore", str(tmp_path / "none.tgz")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()


def test_an_archive_moves_the_finished_runs_without_their_weights(tmp_path):
    from golf.study_archive import archive_study, restore_study

    s = tmp_path / "a" / "s"
    done, half = s / "base" / "seed1", s / "base" / "seed2"
    for run in (done, half):
        run.mkdir(parents=True)
        (run / "model.pt").write_bytes(b"w")
        (run / "config.yaml").write_text("seed: 1\n")
    (done / "eval_ttt.json").write_text("{}")
    twin = s / "q1" / "seed1"  # a twin arm's run: its trained files are links to its lead's
    twin.mkdir(parents=True)
    os.link(done / "config.yaml", twin / "config.yaml")
    (twin / "eval_ttt.json").write_text("{}")
    (s / "study.json").write_text("{}")
    assert archive_study(tmp_path / "s.tgz", s, ["ttt"]) == (2, 1)
    restore_study(tmp_path / "s.tgz", tmp_path / "b" / "s")
    got = sorted(str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert got == ["s/base/seed1/config.yaml", "s/base/seed1/eval_ttt.json", "s/q1/seed1/config.yaml",
                   "s/q1/seed1/eval_ttt.json", "s/study.json"]
    assert (tmp_path / "b" / "s" / "q1" / "seed1" / "config.yaml").read_text() == "seed: 1\n"
    with pytest.raises(Exception, match="exists here already"):
        restore_study(tmp_path / "s.tgz", tmp_path / "b" / "s")
    with pytest.raises(Exception, match="not a file of study"):
        restore_study(tmp_path / "s.tgz", tmp_path / "b" / "other")


def test_a_seed_another_golf_process_is_running_is_left_to_it(tmp_path):
    """Two `golf run` of one study at once: the second does not train the seed the first holds (issue 33,
    item 5); a claim whose process is gone is taken over, and the claim goes when the job ends."""
    import subprocess
    import sys

    from golf.runs import _seed_claim
    from golf.study_job import Job, run_job

    arm = tmp_path / "study"
    arm.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _seed_claim(arm, 3).write_text(str(other.pid))
        job = Job(arm="a", seed=3, arm_dir=str(arm), params="params/demo.yaml", overrides=[], modes=["ttt"])
        res = run_job(job)
        assert res["status"] == "in use" and str(other.pid) in res["error"]
        assert not any(p.is_dir() for p in arm.iterdir())  # no folder made for the seed
    finally:
        other.kill()
        other.wait()
    job = Job(arm="a", seed=3, arm_dir=str(arm), params="params/demo.yaml", overrides=[], modes=["ttt"],
              deadline=0.0, notebooks=False)
    from golf import study_job

    study_job._run_fresh, real = (lambda *a, **k: {"status": "done", "run": "x"}), study_job._run_fresh
    try:
        assert run_job(job)["status"] == "done"  # the dead process's claim was taken over
    finally:
        study_job._run_fresh = real
    assert not _seed_claim(arm, 3).exists()


def test_workers_side_by_side_run_each_job_in_a_child_that_sees_only_its_gpus(tmp_path):
    """``--gpus 0 1``: two workers, each job in a child process whose CUDA_VISIBLE_DEVICES is its worker's
    group. Jobs past their deadline (``--stop-taking-after``) return at once, unstarted, from the child."""
    import time

    from golf.study_executors import LocalExecutor
    from golf.study_job import Job

    ex = LocalExecutor(["0", "1"], nproc=1)
    assert ex.describe() == "GPUs 0 | 1"
    jobs = [Job("a", s, str(tmp_path / "a"), "params/demo.yaml", [], ["plain"], deadline=time.time() - 1)
            for s in range(4)]
    results = [f.result(timeout=120) for f in [ex.submit(j) for j in jobs]]
    assert [r["status"] for r in results] == ["not started"] * 4
    assert {r["gpus"] for r in results} <= {"0", "1"} and all(r["gpus"] for r in results)
    assert not (tmp_path / "a").exists()  # nothing was made for a job that did not start
    with pytest.raises(Exception, match="more than given"):
        LocalExecutor(["0"], nproc=2)


def test_stop_taking_after_starts_no_run_past_it_and_a_later_call_runs_them(tmp_path, demo_data, capfd, monkeypatch):
    """A study told to stop taking runs after a time starts none past it; the plan is kept, so the same
    command without the limit runs them (here: the limit has passed before the first run)."""
    import golf.study_job

    capsys = capfd  # golf's lines go to the console's file descriptor while the runs' kernels are quiet

    params = tiny_params(tmp_path, demo_data, **TINY)
    ran = []
    monkeypatch.setattr(golf.study_job, "_run_fresh", lambda job, *a, **k: ran.append(job.seed) or {"status": "done"})
    assert study(tmp_path, params, "--stop-taking-after", "1e-9") == 0  # nothing failed: nothing started
    assert ran == [] and (tmp_path / "out" / "s" / "study.json").is_file()
    assert "not started" in capsys.readouterr().err
    assert study(tmp_path, params) == 1  # the stub makes no result, so compare finds no finished run
    assert sorted(ran) == [1, 1, 2, 2] and "has no finished run" in capsys.readouterr().err


def test_a_retried_seed_is_counted_once_and_said_once(tmp_path, caplog):
    """A seed killed part-way and retried counts once, from the run that got further; the line saying so
    comes once, though the index and compare both read the study."""
    from golf.studies import one_run_per_seed

    runs = []
    for name, results in (("seed1", ["eval_plain.json"]), ("seed1-2", ["eval_plain.json", "eval_ttt.json"])):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text("seed: 1\n")
        for r in ("final_model.int6.ptz", *results):
            (run / r).write_text("{}")
        runs.append(run)
    with caplog.at_level("INFO", logger="golf"):
        assert one_run_per_seed(runs) == [runs[1]] and one_run_per_seed(runs) == [runs[1]]
    assert [r.getMessage() for r in caplog.records] == ["seed 1 counted once, from seed1-2: seed1 got less far "
                                                        "(killed, then retried)"]


def test_only_a_run_that_trained_itself_is_reused_by_a_retry(tmp_path):
    """A retry reuses the weights of a folder whose training ended there; a twin's folder holds its lead's
    config.yaml (quantization keys included), so a retry of that arm trains (or links its lead) anew."""
    from golf.study_job import _trained

    run = RunDir(tmp_path / "seed1")
    run.path.mkdir()
    for f in (run.config_file, run.model, run.summary):
        f.write_text("seed: 1\n")
    assert _trained(run.path)
    (run.path / LOCK).write_text("999999999")  # a training that did not end
    assert not _trained(run.path)
    (run.path / LOCK).unlink()
    run.copied_from.write_text("{}")
    assert not _trained(run.path)


def test_a_retry_of_a_retry_reuses_the_run_that_trained(tmp_path):
    """seed1 trained, seed1-2 linked its weights and was killed in turn: seed1-3 links seed1's again,
    it does not train (a retry's folder holds links and copied_from.json, no training of its own)."""
    from golf.study_job import copy_trained_run, trained_earlier

    first = RunDir(tmp_path / "seed1")
    first.path.mkdir()
    for f in (first.config_file, first.model, first.summary):
        f.write_text("seed: 1\n")
    second = RunDir(tmp_path / "seed1-2")
    second.path.mkdir()
    copy_trained_run(first.path, second.path, "base")
    assert second.model.samefile(first.model)
    assert trained_earlier([first.path, second.path]) == first.path
    assert trained_earlier([second.path]) is None  # only a copy left: train anew
    third = RunDir(tmp_path / "seed1-3")
    third.path.mkdir()
    copy_trained_run(first.path, third.path, "base")
    assert third.model.samefile(first.model)
    assert json.loads(third.copied_from.read_text())["run"] == str(first.path)
