"""No wrong number exits 0 (issue 33, "Silent wrong results", items 1-8).

Each test goes through the command line: a wrong result is one ``golf: error:`` line and exit code 1,
or a warning recorded in the run's files, and the folders stay as they were where nothing should change.
"""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from golf.cli import main as golf_main
from conftest import one_error_line, snapshot, tiny_params


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


# --- 1. evaluate with the tokenizer the run trained with ------------------------------------------

@pytest.fixture(scope="module")
def other_data(tmp_path_factory, other_tokenizer):  # noqa: F811
    """The demo plays tokenized with another 512-piece tokenizer: valid data, bound to that tokenizer."""
    from golf.tokenizer import prepare_data

    out = tmp_path_factory.mktemp("other") / "data"
    prepare_data("shakespeare", out, val_docs=1, max_docs=4, shard_tokens=65_536, progress=False,
                 tokenizer=other_tokenizer)
    return out


def test_evaluate_refuses_a_tokenizer_the_run_did_not_train_with(tmp_path, trained_run, other_data, capsys):  # noqa: F811
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = snapshot(run)
    other = ["--set", f"data_dir={other_data}", f"tokenizer_path={other_data / 'tokenizer.model'}"]
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--force", *other]) == 1
    line = one_error_line(capsys)
    assert str(other_data / "tokenizer.model") in line and str(run / "environment.json") in line
    assert "--allow-other-tokenizer" in line and snapshot(run) == before
    # opted in: the result and the export say so
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--force", "--allow-other-tokenizer",
                      *other]) == 0
    made = json.loads((run / "eval_plain.json").read_text())
    assert made["tokenizer_differs_from_training"]["trained_sha256"] != made["tokenizer_sha256"]
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(tmp_path / "sub")]) == 1
    line = one_error_line(capsys)  # a stage scored with another tokenizer ships only when allowed
    assert str(run / "eval_plain.json") in line and "--allow-other-tokenizer" in line
    assert not (tmp_path / "sub").exists()
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(tmp_path / "sub"),
                      "--allow-other-tokenizer"]) == 0
    sub = json.loads((tmp_path / "sub" / "submission.json").read_text())
    assert sub["results_by_stage"]["plain"]["tokenizer_differs_from_training"] is True
    assert "tokenizer other than training's" in (tmp_path / "sub" / "README.md").read_text()
    # the training tokenizer is recorded too, and passes
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--force"]) == 0
    assert "tokenizer_differs_from_training" not in json.loads((run / "eval_plain.json").read_text())


# --- 7. export: the budget and the headline's val text --------------------------------------------

def test_export_refuses_an_artifact_over_the_budget(tmp_path, trained_run, capsys):  # noqa: F811
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    budget = json.loads((run / "quant_budget.json").read_text())
    (run / "quant_budget.json").write_text(json.dumps({**budget, "fits": False}))
    out = tmp_path / "sub"
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert "does not fit" in line and "fits: false" in line and "--allow-over-budget" in line
    assert not out.exists()
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out), "--allow-over-budget"]) == 0
    assert json.loads((out / "submission.json").read_text())["fits"] is False


def test_export_over_the_limit_names_the_stages_quantize_counted_the_code_of(tmp_path, trained_run, capsys):  # noqa: F811
    """quantize counts the code of a file scoring the record's stages; a run scored otherwise ships another
    file: where that one no longer fits, the refusal says so (it was "fits" at quantize)."""
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    budget = json.loads((run / "quant_budget.json").read_text())
    assert budget["code_modes"] == ["plain", "sliding", "ttt"]
    model = (run / "final_model.int6.ptz").stat().st_size
    (run / "quant_budget.json").write_text(json.dumps({**budget, "fits": True, "limit": model + 1000}))
    out = tmp_path / "sub"
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert "does not fit" in line and "scoring plain, sliding, ttt; this one scores plain)" in line
    assert not out.exists()


def test_quantize_counts_the_code_of_the_stages_the_run_will_score(tmp_path, trained_run, capsys):  # noqa: F811
    """golf quantize --modes: near the limit the budget holds the exact code of a file scoring those stages
    (the one export-submission ships once they are scored: the stages in golf's order), and names them."""
    from golf.config import load_config
    from golf.submission import code_bytes

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    model = (run / "final_model.int6.ptz").stat().st_size
    limit = model + 20_000  # near enough for the exact count
    assert golf_main(["quantize", "--run-dir", str(run), "--force", "--modes", "phased_ttt", "plain",  # any order
                      "--set", f"artifact_limit_bytes={limit}"]) == 0
    budget = json.loads((run / "quant_budget.json").read_text())
    cfg = load_config(run / "quantize_config.yaml")
    assert budget["code_modes"] == ["plain", "phased_ttt"] and budget["code_bytes_exact"] is True
    assert budget["code_bytes"] == code_bytes(cfg, ("plain", "phased_ttt"))  # (with LoRA TTT's code)
    said = "code counted: the train_gpt.py of a submission scoring plain, phased_ttt"
    assert said in (run / "quantize.log").read_text()


def test_export_ships_the_eval_logs_and_says_where_it_runs(tmp_path, trained_run, capsys):  # noqa: F811
    """The record folder holds the log of each scored stage (of the evaluation that made its result); its
    README names the run's process count and the data paths the file reads. A run folder that is not there,
    or --out under a file: one line each."""
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    old_log = (run / "eval_plain.log").read_text()
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--force"]) == 0
    assert old_log not in (run / "eval_plain.log").read_text()  # the log of the result there, not of the last
    for name in ("config.yaml", "quantize_config.yaml"):  # a run of 2 processes, 8 micro-batches a step
        if (run / name).is_file():
            cfg = yaml.safe_load((run / name).read_text())
            (run / name).write_text(yaml.safe_dump({**cfg, "grad_accum_total": 8}))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "world_size": 2}))
    out = tmp_path / "sub"
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 0
    assert (out / "eval_plain.log").read_text() == (run / "eval_plain.log").read_text()
    readme = (out / "README.md").read_text()
    assert "--nproc_per_node=2 train_gpt.py" in readme and "(the run's 2 process(es); it also runs on 1, 4, 8" in readme
    assert f"`{cfg['data_dir']}`, `{cfg['tokenizer_path']}`" in readme  # (outside the project: as they are)
    capsys.readouterr()
    assert golf_main(["export-submission", "--run-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 1
    assert "does not exist" in one_error_line(capsys)
    (tmp_path / "afile").write_text("mine")
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(tmp_path / "afile" / "sub")]) == 1
    assert "'afile' is a file" in one_error_line(capsys).replace(str(tmp_path) + "/", "")
    assert (tmp_path / "afile").read_text() == "mine"


def test_export_refuses_a_headline_scored_on_less_text(tmp_path, trained_run, capsys):  # noqa: F811
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "sliding", "--set", "max_val_tokens=256"]) == 0
    out = tmp_path / "sub"
    capsys.readouterr()
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    line = one_error_line(capsys)
    plain = json.loads((run / "eval_plain.json").read_text())["n_tokens"]
    assert "eval_sliding.json" in line and f"{plain:,}" in line and "--allow-mixed-tokens" in line
    assert not out.exists()
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out), "--allow-mixed-tokens"]) == 0
    sub = json.loads((out / "submission.json").read_text())
    assert sub["val_tokens"] < plain and sub["results_by_stage"]["plain"]["val_tokens"] == plain
    assert f"| {plain:,} |" in (out / "README.md").read_text()


# --- 2, 3. shards bound to their tokenizer by content ---------------------------------------------

def _swap_shard(target: Path, source: Path) -> None:
    shutil.copy(source, target)


def test_shards_copied_over_a_prepared_folder_are_refused(tmp_path, demo_data, data_copy, other_data, capsys):  # noqa: F811
    from golf.shards import read_shard, write_shard

    meta = json.loads((data_copy / "prepare.json").read_text())
    assert meta["shard_digests"]["fineweb_val_000000.bin"]["tokens"] > 0
    _swap_shard(data_copy / "fineweb_train_000000.bin", other_data / "fineweb_train_000000.bin")
    before = snapshot(data_copy)
    assert golf_main(["data", "check", str(data_copy)]) == 1
    line = one_error_line(capsys)
    assert str(data_copy / "fineweb_train_000000.bin") in line and str(data_copy / "prepare.json") in line
    params, run = tiny_params(tmp_path, demo_data, data_dir=str(data_copy)), tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 1
    assert str(data_copy / "fineweb_train_000000.bin") in one_error_line(capsys)
    assert not run.exists() and snapshot(data_copy) == before
    # the same token count, other text: the hash tells
    shutil.copy(demo_data.data_dir / "fineweb_train_000000.bin", data_copy / "fineweb_train_000000.bin")
    val = data_copy / "fineweb_val_000001.bin"
    write_shard(val, read_shard(val)[::-1].copy())
    assert golf_main(["data", "check", str(data_copy)]) == 1
    assert f"{val}: its content" in one_error_line(capsys)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 1
    assert f"{val}: its content" in one_error_line(capsys) and not run.exists()


def test_unbound_data_with_another_tokenizer_beside_it_is_refused(tmp_path, demo_data, data_copy, other_tokenizer,  # noqa: F811
                                                                  capsys):
    (data_copy / "prepare.json").unlink()  # no binding, but the tokenizer that made it lies beside it
    params, run = tiny_params(tmp_path, demo_data, data_dir=str(data_copy)), tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run), "--set",
                      f"tokenizer_path={other_tokenizer}"]) == 1
    line = one_error_line(capsys)
    assert str(other_tokenizer) in line and str(data_copy / "tokenizer.model") in line and not run.exists()


def test_unbound_data_is_a_warning_recorded_in_the_run(tmp_path, demo_data, data_copy):  # noqa: F811
    (data_copy / "prepare.json").unlink()
    (data_copy / "tokenizer.model").unlink()
    params, run = tiny_params(tmp_path, demo_data, data_dir=str(data_copy), iterations=1, val_loss_every=0,
                              max_val_tokens=2048), tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    assert f"WARNING data folder {data_copy} has no prepare.json or download.json" in (run / "train.log").read_text()
    assert "nothing shows that tokenizer" in json.loads((run / "run.json").read_text())["data_warnings"][0]


def test_downloaded_data_is_bound_by_download_json(fake_hub, tmp_path, demo_data, other_data, capsys):  # noqa: F811
    from golf.download import download_shards

    got = download_shards("sp8192", tmp_path / "dl", train_shards=2)
    ddir = Path(got["data_dir"])
    meta = json.loads((ddir / "download.json").read_text())
    assert sorted(meta["shard_digests"]) == sorted(p.name for p in ddir.glob("fineweb_*.bin"))
    assert golf_main(["data", "check", str(ddir)]) == 0
    capsys.readouterr()
    _swap_shard(ddir / "fineweb_train_000001.bin", other_data / "fineweb_train_000001.bin")
    assert golf_main(["data", "check", str(ddir)]) == 1
    line = one_error_line(capsys)
    assert str(ddir / "fineweb_train_000001.bin") in line and "download.json" in line
    assert download_shards("sp8192", tmp_path / "dl", train_shards=2)["downloaded"] == 1  # fetched again
    assert golf_main(["data", "check", str(ddir)]) == 0
    params = tiny_params(tmp_path, demo_data, data_dir=str(ddir), tokenizer_path=str(other_data / "tokenizer.model"))
    capsys.readouterr()
    assert golf_main(["train", "--params", str(params), "--run-dir", str(tmp_path / "run")]) == 1
    assert "download.json" in one_error_line(capsys) and not (tmp_path / "run").exists()


# --- 4. a study is its params file's content, not its path -----------------------------------------

def test_golf_run_refuses_a_study_whose_params_file_was_edited(tmp_path, demo_data, capsys):
    import yaml

    from golf.config import load_config, save_config
    from golf.notebooks import _claim_study, config_sha256

    params = tiny_params(tmp_path, demo_data, iterations=2)
    cfg = load_config(params)
    study = tmp_path / "out" / "s"
    (study / "seed1").mkdir(parents=True)
    save_config(cfg.replace(seed=1), study / "seed1" / "config.yaml")
    plan = {"params_file": str(params), "overrides": [], "nproc": 1}
    (study / "study.json").write_text(json.dumps({**plan, "seeds": [1]}))  # made before golf kept the config's sha
    _claim_study(study, {**plan, "config_sha256": config_sha256(cfg.to_dict())}, [1], cfg.to_dict())  # resumes
    params.write_text(yaml.safe_dump({**yaml.safe_load(params.read_text()), "iterations": 3}))  # the edit
    before = snapshot(study)
    run = ["run", "--params", str(params), "--seeds", "1", "2", "--study", "s", "--outputs", str(tmp_path / "out")]
    assert golf_main(run) == 1
    line = one_error_line(capsys)
    assert "other settings" in line and "iterations=2 (now 3)" in line and str(params) in line
    assert snapshot(study) == before
    shutil.rmtree(study / "seed1")  # no run left to tell: the recorded sha does
    assert golf_main(run) == 1
    assert "config_sha256 differs" in one_error_line(capsys)


# --- 5, 6. compare counts each seed once, and says when data or tokenizers differ --------------------

def _fake_run(run: Path, seed: int, bpb: float | None, **env) -> Path:
    import yaml

    from golf.config import Config

    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({**Config().to_dict(), "seed": seed}))
    (run / "train_summary.json").write_text(json.dumps({"steps": 7, "prequant_post_ema":
                                                        {"val_loss": 3.0, "val_bpb": 1.3 + seed / 100}}))
    if bpb is not None:
        (run / "eval_plain.json").write_text(json.dumps({"val_loss": bpb * 2.5, "val_bpb": bpb, "seconds": 1.0}))
        (run / "eval_ttt.json").write_text(json.dumps({"val_loss": bpb * 2.5, "val_bpb": bpb, "seconds": 1.0}))
    (run / "environment.json").write_text(json.dumps({"tokenizer_sha256": "a" * 64, "data_manifest_sha256": "d1",
                                                      **env}))
    return run


def test_compare_counts_a_killed_and_retried_seed_once(tmp_path, capsys):
    import pandas as pd

    study = tmp_path / "study"
    for seed in (1, 2):
        _fake_run(study / f"seed{seed}", seed, 1.2 + seed / 100)
    _fake_run(study / "seed3", 3, None)  # killed after training: golf run retried it in seed3-2
    _fake_run(study / "seed3-2", 3, 1.23)
    for stage in ("prequant", "plain", "ttt"):
        out = tmp_path / f"c-{stage}"
        assert golf_main(["compare", str(study), "--stage", stage, "--out", str(out)]) == 0
        runs = pd.read_csv(out / "compare_runs.csv")
        assert sorted(runs["seed"]) == [1, 2, 3] and "study/seed3" not in set(runs["run"]), stage
        assert list(pd.read_csv(out / "compare.csv")["n"]) == [3]
    # two runs of one seed that both finished (two golf run at once): refused in one line, not counted twice
    _fake_run(study / "seed2-2", 2, 1.25)
    capsys.readouterr()
    assert golf_main(["compare", str(study), "--stage", "plain", "--out", str(tmp_path / "c2")]) == 1
    assert "holds seed 2 in 2 runs" in one_error_line(capsys)


def test_compare_says_when_runs_used_other_data_or_tokenizers(tmp_path, capsys):
    base, other = tmp_path / "base", tmp_path / "other"
    for seed in (1, 2):
        _fake_run(base / f"seed{seed}", seed, 1.2)
        _fake_run(other / f"seed{seed}", seed, 1.2, tokenizer_sha256="b" * 64, data_manifest_sha256="d2")
    out = tmp_path / "c"
    assert golf_main(["compare", str(base), str(other), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "tokenizer_sha256" in captured.out and "data_sha256" in captured.out and "bbbbbbbbbbbb" in captured.out
    assert "the runs used different tokenizers and data" in captured.err
    page = (out / "compare.html").read_text()
    assert "the runs used different tokenizers and data" in page and "None: the studies ran the same" not in page
    # a study whose own runs disagree is shown as mixed: every run is read, not only the first
    _fake_run(other / "seed3", 3, 1.2, tokenizer_sha256="b" * 64, data_manifest_sha256="d3")
    assert golf_main(["compare", str(base), str(other), "--out", str(out)]) == 0
    assert "mixed: 'd2' / 'd3'" in capsys.readouterr().out
