"""Nothing wrong passes silently, nothing made is lost (issue 12).

Each test goes through the command line, where a user meets the defect: a bad input gives exit
code 1 and one line ``golf: error: ...`` naming the file or key, and the folders involved hold
the same files, byte for byte, before and after. Numbers in the section titles are the issue's.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from golf.cli import main as golf_main
from golf.config import load_config, save_config
from golf.data_binding import check_data_binding, tokenizer_fingerprint
from golf.loaders import ShuffledSequenceLoader
from golf.shards import ShardError, list_shards, read_shard, shard_name, write_shard
from golf.val_stream import load_val_tokens
from conftest import one_error_line, snapshot, tiny_params


def run_folder(tmp_path, demo_data, name="run", **kw) -> Path:
    """A run folder holding only config.yaml: enough for quantize/evaluate to reach their checks."""
    run = tmp_path / name
    run.mkdir()
    save_config(load_config(tiny_params(tmp_path, demo_data, **kw)), run / "config.yaml")
    return run


@pytest.fixture
def tiny_corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 40)
    return folder


# --- 1. the tokenizer is bound to its shards ------------------------------------------------------

def test_train_refuses_a_tokenizer_the_data_was_not_made_with(tmp_path, demo_data, other_tokenizer, capsys):
    params, run = tiny_params(tmp_path, demo_data), tmp_path / "run"
    before = snapshot(demo_data.data_dir, other_tokenizer.parent)
    assert golf_main(["train", "--params", str(params), "--set", f"tokenizer_path={other_tokenizer}",
                      "--run-dir", str(run)]) == 1
    line = one_error_line(capsys)
    assert str(other_tokenizer) in line and str(demo_data.data_dir / "prepare.json") in line
    assert not run.exists() and snapshot(demo_data.data_dir, other_tokenizer.parent) == before


def test_vocab_size_must_match_the_data(tmp_path, demo_data, capsys):
    params, run = tiny_params(tmp_path, demo_data), tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--set", "vocab_size=8192", "--run-dir", str(run)]) == 1
    line = one_error_line(capsys)
    assert "'vocab_size'" in line and "8192" in line and "prepare.json" in line
    assert not run.exists()


@pytest.mark.parametrize("command", [["quantize"], ["evaluate", "--mode", "plain"]])
def test_quantize_and_evaluate_check_the_binding(tmp_path, demo_data, other_tokenizer, capsys, command):
    run = run_folder(tmp_path, demo_data, tokenizer_path=str(other_tokenizer))
    before = snapshot(run)
    assert golf_main([command[0], "--run-dir", str(run), *command[1:]]) == 1
    line = one_error_line(capsys)
    assert str(other_tokenizer) in line and "prepare.json" in line
    assert snapshot(run) == before
    # the same through --set on a run whose own config is right (a moved tokenizer may be named)
    run2 = run_folder(tmp_path, demo_data, name="run2")
    assert golf_main([command[0], "--run-dir", str(run2), *command[1:], "--set",
                      f"tokenizer_path={other_tokenizer}"]) == 1
    line = one_error_line(capsys)
    assert str(other_tokenizer) in line and "prepare.json" in line
    assert golf_main([command[0], "--run-dir", str(run2), *command[1:], "--set", "vocab_size=600"]) == 1
    assert "'vocab_size'" in one_error_line(capsys)


@pytest.mark.parametrize("command, override, what", [
    (["quantize"], "smear_gate=true", "shapes the trained model"),
    (["quantize"], "matrix_lr=0.01", "belongs to training (section optim)"),
    (["quantize"], "ttt_lr=0.01", "is an evaluation key: golf quantize can't change it (golf evaluate --set it)"),
    (["evaluate", "--mode", "plain"], "num_layers=5", "shapes the trained model"),
    (["evaluate", "--mode", "plain"], "num_layers=2", "shapes the trained model"),  # not loop_end's rule first
    (["evaluate", "--mode", "plain"], "matrix_bits=5", "was fixed when the artifact was made"),
    (["evaluate", "--mode", "plain"], "iterations=5", "belongs to training (section train)"),
])
def test_post_training_refuses_keys_it_cannot_apply(tmp_path, trained_run, capsys, command, override, what):
    """A key quantize / evaluate would silently ignore, or that contradicts the trained model, is named."""
    before = snapshot(trained_run)
    capsys.readouterr()
    assert golf_main([command[0], "--run-dir", str(trained_run), *command[1:], "--force", "--set", override]) == 1
    line = one_error_line(capsys)
    assert f"'{override.split('=')[0]}' {what}" in line and f"golf {command[0]} can't change it" in line
    assert snapshot(trained_run) == before


def test_post_training_notebooks_offer_only_the_keys_their_stage_reads():
    from golf.config_stages import stage_keys
    from golf.notebook_params import parameters_source, set_args

    cell = parameters_source("quantize")
    assert "matrix_clip_sigmas: float = None" in cell and "max_val_tokens: int = None" in cell
    assert "num_layers:" not in cell and "matrix_lr:" not in cell and "ttt_lr:" not in cell
    cell = parameters_source("ttt_eval")
    assert "ttt_lr: float = None" in cell and "matrix_bits:" not in cell and "smear_gate:" not in cell
    assert "num_layers: int = None" in parameters_source("train")  # training takes every key
    assert set_args({"ttt_lr": 0.01}, ["eval_stride=32"], "evaluate") == ["--set", "ttt_lr=0.01", "eval_stride=32"]
    with pytest.raises(Exception, match="'iterations' belongs to training"):
        set_args({"iterations": 5}, None, "quantize")  # papermill -p iterations 5 into the quantize notebook
    assert "lqer_rank" in stage_keys("quantize") and "lqer_rank" not in stage_keys("evaluate")


def test_lora_rank_above_the_width_is_refused_before_loading(tmp_path, trained_run, capsys):
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    rank = cfg["model_dim"] + 1
    capsys.readouterr()
    assert golf_main(["evaluate", "--run-dir", str(trained_run), "--mode", "lora_ttt", "--set",
                      f"ttt_lora_rank={rank}"]) == 1
    assert f"'ttt_lora_rank' ({rank}) must be at most model_dim ({cfg['model_dim']})" in one_error_line(capsys)
    assert not (trained_run / "eval_lora_ttt.json").exists() and not (trained_run / "eval_lora_ttt.log").exists()


def test_parallel_lanes_past_the_last_layer_are_named_in_the_train_log(tmp_path, demo_data):
    from golf.config_rules import inert_settings

    cfg = load_config(tiny_params(tmp_path, demo_data))
    assert inert_settings(cfg) == []
    late = cfg.replace(parallel_start_layer=cfg.num_layers)
    assert inert_settings(late) == [f"parallel_start_layer ({cfg.num_layers}) is not below num_layers "
                                    f"({cfg.num_layers}): no layer runs the parallel_mode 'lanes'"]
    assert inert_settings(late.replace(parallel_mode="none")) == []
    run = tmp_path / "late"
    params = tiny_params(tmp_path, demo_data, iterations=1, val_loss_every=0, max_val_tokens=2048,
                         parallel_start_layer=cfg.num_layers)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    assert "WARNING parallel_start_layer" in (run / "train.log").read_text()


def test_an_ema_that_keeps_the_initial_weights_is_named(tmp_path, demo_data):
    """0.997 over 120 steps saves 70% initialisation: warned before training and measured after."""
    from golf.config_rules import inert_settings

    cfg = load_config(tiny_params(tmp_path, demo_data, ema_decay=0.997, iterations=120))
    assert inert_settings(cfg) == ["ema_decay (0.997) over at most 120 steps leaves at least 70% of the initial "
                                   "weights in the saved model: ema_decay 0.975 or lower keeps it under 5%"]
    assert 0.975 ** 120 < 0.05 < 0.976 ** 120  # the suggested value is the limit, rounded down
    assert inert_settings(cfg.replace(iterations=2000)) == [] and inert_settings(cfg.replace(ema_decay=0.0)) == []
    run = tmp_path / "run"
    params = tiny_params(tmp_path, demo_data, iterations=3, val_loss_every=0, max_val_tokens=2048, ema_decay=0.5)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    assert json.loads((run / "train_summary.json").read_text())["ema_init_share"] == pytest.approx(0.125)
    assert "WARNING the saved EMA weights are still 12% the initial weights after 3 steps" in (run / "train.log").read_text()


def test_every_stage_records_the_code_it_ran(tmp_path, trained_run):
    env = json.loads((trained_run / "environment.json").read_text())
    for name in ("quant_budget.json", "eval_plain.json"):
        made = json.loads((trained_run / name).read_text())
        assert made["git_commit"] == env["git_commit"] and isinstance(made["git_dirty"], bool), name
    assert len(env["git_commit"]) == 40  # the tests run inside golf's checkout

    from golf.report import run_header

    assert "other code" not in run_header(trained_run)
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    made = json.loads((run / "eval_plain.json").read_text())
    (run / "eval_plain.json").write_text(json.dumps({**made, "git_commit": "f" * 40, "git_dirty": True}))
    assert f"other code for eval_plain: {'f' * 40} (with uncommitted changes)" in run_header(run)


def test_environment_records_the_tokenizer_fingerprint(trained_run, demo_data):
    env = json.loads((trained_run / "environment.json").read_text())
    assert env["tokenizer_sha256"] == tokenizer_fingerprint(demo_data.tokenizer_path)
    meta = json.loads((demo_data.data_dir / "prepare.json").read_text())
    assert meta["tokenizer_sha256"] == env["tokenizer_sha256"]


def test_data_without_prepare_json_is_accepted_with_a_warning(tmp_path, demo_data, data_copy, caplog):
    (data_copy / "prepare.json").unlink()  # like the official download
    cfg = load_config(tiny_params(tmp_path, demo_data, data_dir=str(data_copy)))
    with caplog.at_level("WARNING", logger="golf"):
        binding = check_data_binding(cfg)
    assert "no prepare.json" in caplog.text
    assert binding["prepare_json"] is None and binding["tokenizer_sha256"] == tokenizer_fingerprint(cfg.tokenizer_path)


def test_a_lost_or_foreign_shard_is_named_by_data_check_and_training(tmp_path, demo_data, data_copy, capsys):
    """prepare.json lists the shards it made: one missing, or one more, is an error naming the file."""
    lost = data_copy / "fineweb_train_000002.bin"
    kept = lost.read_bytes()
    lost.unlink()
    assert golf_main(["data", "check", str(data_copy)]) == 1
    assert "fineweb_train_000002.bin: listed in prepare.json but missing" in capsys.readouterr().err
    with pytest.raises(ShardError, match="fineweb_train_000002.bin: listed in prepare.json but missing"):
        check_data_binding(load_config(tiny_params(tmp_path, demo_data, data_dir=str(data_copy))))
    lost.write_bytes(kept)
    (data_copy / "fineweb_train_000009.bin").write_bytes(kept)  # a shard from elsewhere
    assert golf_main(["data", "check", str(data_copy)]) == 1
    assert "fineweb_train_000009.bin: not listed in prepare.json" in capsys.readouterr().err


def test_data_check_refuses_a_missing_split_and_a_bad_vocab_size_and_says_what_it_checked(data_copy, capsys):
    (data_copy / "prepare.json").unlink()
    (data_copy / "tokenizer.model").unlink(missing_ok=True)
    assert golf_main(["data", "check", str(data_copy)]) == 0  # nothing says the vocab size: checked < 65,536
    assert "ids were checked against 65,536 only" in capsys.readouterr().out
    for bad in ("0", "-5", "70000"):
        assert golf_main(["data", "check", str(data_copy), "--vocab-size", bad]) == 1
        assert f"vocab_size must be in 1..65536 (uint16 shards), got {bad}" in capsys.readouterr().err
    for f in data_copy.glob("fineweb_val_*.bin"):
        f.unlink()
    assert golf_main(["data", "check", str(data_copy)]) == 1
    assert "no val shards (fineweb_val_*.bin)" in capsys.readouterr().err
    assert golf_main(["data", "check", "no/such/folder"]) == 1
    assert "a relative path starts at the project root" in capsys.readouterr().err


def test_golf_report_draws_a_command_line_run(tmp_path, trained_run, capsys):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    shutil.rmtree(run / "plots", ignore_errors=True)  # a command-line run has none of these
    for made in ("report.html", "tables/eval_summary.csv"):
        (run / made).unlink(missing_ok=True)
    assert golf_main(["report", "--run-dir", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"training.png", "schedule.png", "eval_bpb.png"}
    page = (run / "report.html").read_text()
    assert "data:image/png;base64" in page and "Headline" in page
    assert golf_main(["report", "--run-dir", str(tmp_path)]) == 1
    assert "is not a golf run folder" in one_error_line(capsys)


def test_evaluate_builds_its_model_without_drawing_initial_weights(tmp_path, trained_run, monkeypatch):
    """quantize and evaluate load every tensor, so the seeded draw (44 QRs at record size) is skipped;
    the results are those of the run's own evaluation."""
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))

    def no_draw(*args, **kwargs):
        raise AssertionError("initial weights drawn for a model that is loaded next")

    monkeypatch.setattr(torch.nn.init, "orthogonal_", no_draw)
    want = json.loads((run / "eval_plain.json").read_text())
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--force"]) == 0  # the artifact
    assert json.loads((run / "eval_plain.json").read_text())["val_loss"] == want["val_loss"]
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--source", "raw"]) == 0  # model.pt
    assert golf_main(["quantize", "--run-dir", str(run), "--force"]) == 0


def test_golf_report_without_nbformat_keeps_its_figures_and_says_what_is_missing(tmp_path, trained_run, capsys,
                                                                                   monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nbconvert" else real(name, *a))
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    shutil.rmtree(run / "plots", ignore_errors=True)
    (run / "report.html").unlink(missing_ok=True)
    assert golf_main(["report", "--run-dir", str(run)]) == 1
    line = one_error_line(capsys)
    assert "needs nbconvert, not installed here" in line and "pip install nbconvert" in line and "plots" in line
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"training.png", "schedule.png"}
    assert not (run / "report.html").exists()


# --- 3. replacing the artifact takes what was made from it along ------------------------------

def test_quantize_force_moves_old_results_aside_and_export_refuses_stale_ones(tmp_path, trained_run, capsys):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    old_eval = json.loads((run / "eval_plain.json").read_text())
    old_artifact = (run / "final_model.int6.ptz").read_bytes()
    old_log = (run / "eval_plain.log").read_text()
    assert old_eval["artifact_sha256"] == hashlib.sha256(old_artifact).hexdigest()

    assert golf_main(["quantize", "--run-dir", str(run), "--force", "--set", "matrix_bits=5"]) == 0
    aside = run / "superseded" / "001"
    assert not (run / "eval_plain.json").exists()  # the old BPB left with the old artifact ...
    assert (aside / "final_model.int6.ptz").read_bytes() == old_artifact  # ... and nothing was lost
    assert json.loads((aside / "eval_plain.json").read_text()) == old_eval
    assert (aside / "eval_plain.log").read_text() == old_log and not (run / "eval_plain.log").exists()  # its log too
    assert (aside / "quant_budget.json").is_file() and (aside / "tables" / "quant_tensors.csv").is_file()
    budget = json.loads((run / "quant_budget.json").read_text())
    new_sha = hashlib.sha256((run / "final_model.int6.ptz").read_bytes()).hexdigest()
    assert budget["artifact_sha256"] == new_sha and budget["config_changes"] == {"matrix_bits": 5}
    assert yaml.safe_load((run / "quantize_config.yaml").read_text())["matrix_bits"] == 5

    # no result for the new artifact: nothing to ship (a record's headline is a scored val_bpb)
    out = tmp_path / "record"
    capsys.readouterr()
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert "no evaluation result" in line and "golf evaluate --run-dir" in line and not out.exists()

    # a stale result put back by hand is refused, naming the file
    shutil.copy2(aside / "eval_plain.json", run / "eval_plain.json")
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    assert "eval_plain.json" in one_error_line(capsys) and not out.exists()

    (run / "eval_plain.json").unlink()
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain"]) == 0
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 0
    sub = json.loads((out / "submission.json").read_text())
    new_eval = json.loads((run / "eval_plain.json").read_text())
    assert sub["val_bpb"] == new_eval["val_bpb"] and sub["bytes_model"] == (run / "final_model.int6.ptz").stat().st_size
    budget = sub["quant_budget"]  # quantize's, its code count the file's (quantize may have used the bound)
    assert (budget["code_bytes"], budget["total"]) == (sub["bytes_code"], sub["bytes_total"])
    assert budget["code_bytes_exact"] is True
    assert sub["bytes_code"] == (out / "train_gpt.py").stat().st_size
    # one micro-batch a step splits over one rank only: the README's command is for a world it allows
    assert yaml.safe_load((run / "config.yaml").read_text())["grad_accum_total"] == 1
    assert "--nproc_per_node=1 train_gpt.py" in (out / "README.md").read_text()
    assert (out / "quantize_config.yaml").is_file()


def test_export_scores_as_the_results_were_scored(tmp_path, trained_run, capsys):
    """A result made with ``golf evaluate --set`` ships a train_gpt.py with that setting; results scored
    with different values of a key are refused (one file scores every stage with one config)."""
    from golf.config import load_config
    from golf.submission import train_gpt_bytes

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "sliding", "--set", "eval_stride=8"]) == 0
    capsys.readouterr()
    out = tmp_path / "record"
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert "eval_stride=8" in line and "eval_plain.json eval_stride=" in line and not out.exists()
    assert f"golf evaluate --run-dir {run} --mode plain --force --set eval_stride=8" in line  # what to run

    # how a stage ran (here its attention backend) is no scoring setting: it neither ships nor is refused
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain", "--force", "--set", "eval_stride=8",
                      "attention_backend=math"]) == 0
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(out)]) == 0
    base = run / "quantize_config.yaml" if (run / "quantize_config.yaml").is_file() else run / "config.yaml"
    modes = ("plain", "sliding")
    assert (out / "train_gpt.py").read_bytes() == train_gpt_bytes(load_config(base, ["eval_stride=8"]), modes)
    assert (out / "train_gpt.py").read_bytes() != train_gpt_bytes(load_config(base), modes)


def test_export_refuses_a_budget_of_another_artifact(tmp_path, trained_run, capsys):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    budget = json.loads((run / "quant_budget.json").read_text())
    (run / "quant_budget.json").write_text(json.dumps({**budget, "artifact_sha256": "0" * 64}))
    assert golf_main(["export-submission", "--run-dir", str(run), "--out", str(tmp_path / "rec")]) == 1
    assert "quant_budget.json" in one_error_line(capsys) and not (tmp_path / "rec").exists()


# --- 4. a failed prepare leaves --out as it was ---------------------------------------------------

def test_failed_prepare_keeps_the_dataset_in_out(tmp_path, tiny_corpus, capsys):
    out = tmp_path / "data"
    assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out), "--vocab-size", "300",
                      "--val-docs", "2"]) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    capsys.readouterr()
    # SentencePiece cannot make 100 pieces (4 specials + 256 bytes): fails after the corpus is read
    assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out), "--vocab-size", "100",
                      "--val-docs", "2"]) == 1
    assert "100-piece" in one_error_line(capsys)
    assert snapshot(tmp_path) == before  # nor is anything left beside it


def test_prepare_never_replaces_files_golf_did_not_write(tmp_path, tiny_corpus, capsys):
    out = tmp_path / "data"
    write_shard(out / shard_name("train", 0), np.arange(50))  # someone's shard, no prepare.json
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out), "--vocab-size", "300",
                      "--val-docs", "2"]) == 1
    assert shard_name("train", 0) in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_prepare_again_replaces_its_own_dataset_and_keeps_other_files(tmp_path, tiny_corpus):
    out = tmp_path / "data"
    args = ["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out), "--vocab-size", "300",
            "--val-docs", "2"]
    assert golf_main([*args, "--shard-tokens", "500"]) == 0
    assert len(list(out.glob("fineweb_train_*.bin"))) > 1
    (out / "notes.txt").write_text("mine")
    assert golf_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin",
                                                     "notes.txt", "prepare.json", "tokenizer.model"]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "data"]  # no staging folder left


# --- 6. token ids out of range: an error naming the shard ---------------------------------------

def _bad_id_shard(path: Path, bad_id: int) -> None:
    tokens = np.array(read_shard(path), dtype=np.int64)
    tokens[len(tokens) // 2] = bad_id
    write_shard(path, tokens)


def test_train_refuses_out_of_range_ids(tmp_path, demo_data, data_copy, capsys):
    bad = data_copy / shard_name("train", 1)
    _bad_id_shard(bad, demo_data.vocab_size + 88)
    params, run = tiny_params(tmp_path, demo_data, data_dir=str(data_copy)), tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 1
    line = one_error_line(capsys)
    assert str(bad) in line and "out of range" in line and not run.exists()


def test_evaluate_refuses_out_of_range_ids(tmp_path, demo_data, data_copy, capsys):
    bad = data_copy / shard_name("val", 0)
    _bad_id_shard(bad, 60_000)
    run = run_folder(tmp_path, demo_data, data_dir=str(data_copy))
    before = snapshot(run)
    assert golf_main(["evaluate", "--run-dir", str(run), "--mode", "plain"]) == 1
    assert str(bad) in one_error_line(capsys) and snapshot(run) == before


def test_loaders_check_ids_when_asked(demo_data, data_copy):
    _bad_id_shard(data_copy / shard_name("val", 1), 512)
    _bad_id_shard(data_copy / shard_name("train", 2), 512)
    with pytest.raises(ShardError, match=shard_name("val", 1)):
        load_val_tokens(data_copy, 64, vocab_size=512)
    with pytest.raises(ShardError, match=shard_name("train", 2)):
        ShuffledSequenceLoader(list_shards(data_copy, "train"), 0, 1, 64, 2, vocab_size=512)
    assert load_val_tokens(demo_data.data_dir, 64, vocab_size=512).numel() > 0


# --- 7. every value checked up front, before any folder ------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("eval_stride=0", "eval_stride"), ("eval_stride=999", "eval_stride"), ("train_seq_len=0", "train_seq_len"),
    ("num_heads=0", "num_heads"), ("num_kv_heads=0", "num_kv_heads"), ("grad_accum_total=0", "grad_accum_total"),
    ("eval_batch_seqs=0", "eval_batch_seqs"), ("ema_decay=1.5", "ema_decay"), ("matrix_lr=-1", "matrix_lr"),
    ("num_loops=-1", "num_loops"), ("iterations=-5", "iterations"), ("adam_eps=nan", "adam_eps"),
    ("train_batch_tokens=2000", "train_batch_tokens"), ("gptq_reserve_seconds=700", "gptq_reserve_seconds"),
])
def test_bad_values_fail_before_any_folder(tmp_path, demo_data, capsys, override, key):
    params = tiny_params(tmp_path, demo_data, max_wallclock_seconds=600)
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--set", override, "--run-dir", str(run)]) == 1
    assert f"'{key}'" in one_error_line(capsys)
    assert not run.exists()


def test_grad_accum_must_split_over_the_world(tmp_path, demo_data, capsys, monkeypatch):
    params, run = tiny_params(tmp_path, demo_data, grad_accum_total=1), tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node=2 sets it
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 1
    assert "'grad_accum_total'" in one_error_line(capsys) and not run.exists()


def test_golf_run_checks_values_and_world_size_before_the_study_folder(tmp_path, demo_data, capsys):
    params, outputs = tiny_params(tmp_path, demo_data), tmp_path / "outputs"
    for extra in (["--set", "eval_stride=0"], ["--nproc", "2"]):  # tiny_params has grad_accum_total 1
        assert golf_main(["run", "--params", str(params), "--seeds", "1", "--outputs", str(outputs), *extra]) == 1
        assert ("'eval_stride'" if "--set" in extra else "'grad_accum_total'") in one_error_line(capsys)
        assert not outputs.exists()


def test_golf_run_checks_the_tokenizer_binding_before_the_study_folder(tmp_path, demo_data, other_tokenizer,
                                                                      capsys):
    params, outputs = tiny_params(tmp_path, demo_data), tmp_path / "outputs"
    assert golf_main(["run", "--params", str(params), "--seeds", "1", "--outputs", str(outputs),
                      "--set", f"tokenizer_path={other_tokenizer}"]) == 1
    line = one_error_line(capsys)
    assert str(other_tokenizer) in line and "prepare.json" in line
    assert not outputs.exists()


# --- 8. one line, not a traceback -----------------------------------------------------------------

@pytest.mark.parametrize("content, what", [(b"a: [1, 2\nb: 3\n", "not valid YAML at line 2"),
                                           (b"\x80\x81\xfe\xff\x00", "not a UTF-8 text file"),
                                           (b"\x00\x01\x02", "not valid YAML"),
                                           (b"iterations: 5\niterations: 7\n", "line 2: key 'iterations' is given twice"),
                                           (b"model:\n  num_layers: 3\n  num_layers: 4\n", "line 3: key 'num_layers'"),
                                           (b"model:\n  - 1\n", "section 'model' must be a mapping"),
                                           (b"compile: off\n", "put the word in quotes"),
                                           (b"x: !!python/name:os.system\n", "line 1: could not determine"),
                                           (b"? [a, b]\n: 1\n", "unhashable key")])
def test_unreadable_params_file(tmp_path, capsys, content, what):
    params = tmp_path / "params.yaml"
    params.write_bytes(content)
    for command in (["model-info"], ["train", "--run-dir", str(tmp_path / "run")]):
        assert golf_main([*command, "--params", str(params)]) == 1
        line = one_error_line(capsys)
        assert str(params) in line and what in line
    assert not (tmp_path / "run").exists()


def test_yaml_merge_keys_in_a_params_file_still_work(tmp_path):
    from golf.config import load_config

    params = tmp_path / "params.yaml"
    params.write_text("model: &m\n  model_dim: 256\neval:\n  eval_stride: 32\nfixes: {}\n"
                      "train:\n  <<: {iterations: 5, warmup_steps: 1}\n  iterations: 6\n")
    cfg = load_config(params)
    assert (cfg.model_dim, cfg.iterations, cfg.warmup_steps, cfg.eval_stride) == (256, 6, 1, 32)


def test_a_params_path_that_is_a_folder_says_so(tmp_path, capsys):
    assert golf_main(["model-info", "--params", str(tmp_path)]) == 1
    line = one_error_line(capsys)
    assert str(tmp_path) in line and "is a folder" in line


def test_a_wrongly_typed_value_in_a_params_file_names_the_file(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("fused_mlp: maybe\n")
    assert golf_main(["model-info", "--params", str(params)]) == 1
    line = one_error_line(capsys)
    assert str(params) in line and "'fused_mlp'" in line and "maybe" in line
    params.write_text("warmdown_frac: 7\n")  # out of range: found after the merge, still named by file
    assert golf_main(["model-info", "--params", str(params)]) == 1
    line = one_error_line(capsys)
    assert str(params) in line and "'warmdown_frac'" in line
    assert golf_main(["model-info", "--params", str(params), "--set", "warmdown_frac=9"]) == 1
    line = one_error_line(capsys)  # the bad value is the override's now: the file is not blamed
    assert str(params) not in line and "'warmdown_frac'" in line


def test_missing_or_invalid_tokenizer(tmp_path, demo_data, capsys):
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    params = tiny_params(tmp_path, demo_data)
    for tok in (tmp_path / "missing.model", junk):
        assert golf_main(["train", "--params", str(params), "--set", f"tokenizer_path={tok}",
                          "--run-dir", str(tmp_path / "run")]) == 1
        assert str(tok) in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_unavailable_flash_attention(tmp_path, demo_data, capsys):
    from golf.attention import _flash

    if _flash("flash_attn_interface") is not None:
        pytest.skip("FlashAttention-3 is installed here")
    params = tiny_params(tmp_path, demo_data, attention_backend="fa3")
    assert golf_main(["train", "--params", str(params), "--run-dir", str(tmp_path / "run")]) == 1
    assert "'attention_backend'" in one_error_line(capsys) and not (tmp_path / "run").exists()


def test_run_dir_or_out_that_is_a_file(tmp_path, demo_data, trained_run, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    params = tiny_params(tmp_path, demo_data)
    for command in (["train", "--params", str(params)], ["quantize"], ["evaluate", "--mode", "plain"]):
        assert golf_main([*command, "--run-dir", str(a_file)]) == 1
        assert str(a_file) in one_error_line(capsys)
    assert golf_main(["export-submission", "--run-dir", str(trained_run), "--out", str(a_file)]) == 1
    assert str(a_file) in one_error_line(capsys)
    assert a_file.read_text() == "mine"


# --- 9. small corpora, file modes, no zip left in /tmp -------------------------------------------

def test_prepare_without_val_docs_on_a_small_corpus(tmp_path, tiny_corpus):
    out = tmp_path / "data"
    assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out), "--vocab-size", "300"]) == 0
    assert json.loads((out / "prepare.json").read_text())["docs"] == {"val": 1, "train": 5}  # a tenth, at least 1


def test_written_files_follow_the_umask(tmp_path, tiny_corpus):
    from golf.runtime import atomic_write_json

    old = os.umask(0o022)
    try:
        out = tmp_path / "data"
        assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out),
                          "--vocab-size", "300"]) == 0
        atomic_write_json(tmp_path / "x.json", {})
        os.umask(0o077)
        atomic_write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*out.iterdir(), tmp_path / "x.json"]}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_exported_train_gpt_leaves_nothing_in_tmp(tmp_path):
    from golf.submission import train_gpt_bytes

    script, tmp = tmp_path / "train_gpt.py", tmp_path / "tmp"
    script.write_bytes(train_gpt_bytes())
    tmp.mkdir()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "TMPDIR": str(tmp)}, timeout=120)
    assert out.returncode == 1 and "golf: error: " in out.stderr  # no data here: refused before any work
    assert list(tmp.iterdir()) == []


# --- 10. shards for a tokenizer you already have --------------------------------------------------

def test_prepare_with_a_given_tokenizer(tmp_path, demo_data, tiny_corpus, capsys):
    import sentencepiece as spm

    from golf.corpora import iter_documents

    out = tmp_path / "data"
    assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(out),
                      "--tokenizer", str(demo_data.tokenizer_path), "--val-docs", "2", "--keep-order"]) == 0
    meta = json.loads((out / "prepare.json").read_text())
    assert meta["tokenizer_sha256"] == tokenizer_fingerprint(demo_data.tokenizer_path)
    assert meta["vocab_size"] == demo_data.vocab_size and meta["tokenizer_source"] == str(demo_data.tokenizer_path)
    assert (out / "tokenizer.model").read_bytes() == demo_data.tokenizer_path.read_bytes()
    sp = spm.SentencePieceProcessor(model_file=str(demo_data.tokenizer_path))
    docs = list(iter_documents(str(tiny_corpus)))
    for split, part in (("val", docs[:2]), ("train", docs[2:])):  # BOS per document, the record's layout
        want = np.concatenate([[1, *sp.encode(d)] for d in part])
        got = np.concatenate([read_shard(f) for f in list_shards(out, split)])
        assert np.array_equal(got, want)
    for tok in (demo_data.tokenizer_path, out / "tokenizer.model"):  # data and tokenizer stay bound
        check_data_binding(load_config(tiny_params(tmp_path, demo_data, data_dir=str(out), tokenizer_path=str(tok))))

    capsys.readouterr()
    assert golf_main(["data", "prepare", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "d2"),
                      "--tokenizer", str(demo_data.tokenizer_path), "--vocab-size", "1024"]) == 1
    assert str(demo_data.tokenizer_path) in one_error_line(capsys) and not (tmp_path / "d2").exists()


def test_a_bar_redraws_rarely_when_stderr_is_a_file(monkeypatch):
    """A bar on a terminal or in a Jupyter kernel redraws in place; written to a file (nohup, a study's
    console log) every redraw stays, so there it redraws every 30 s."""
    import sys

    from golf.runtime import bar_interval

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert bar_interval() == 30.0 and bar_interval(2.0) == 30.0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert bar_interval() == 0.1 and bar_interval(2.0) == 2.0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert bar_interval(2.0) == 2.0
