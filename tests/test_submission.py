"""The submission's train_gpt.py (golf.submission): only the code its params reach, minified, and the
whole pipeline as the challenge runs it (torchrun, no arguments, settings inside the file)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_params

from golf.config import load_config
from golf.submission import code_bytes, left_out, reached_sources, train_gpt_source

REPO = Path(__file__).resolve().parent.parent
# Measured at 2026-12-07 (bench/submission_bytes.py): record.yaml 51,988 bytes (plain, sliding, ttt),
# frontier.yaml 59,893 (plain, sliding, phased_ttt); the target is 20,000 (the record's own script:
# 19,760), not reached: these are upper bounds that keep it from growing back.
CODE_BYTES_BOUND = {"record.yaml": (("plain", "sliding", "ttt"), 53_000),
                    "frontier.yaml": (("plain", "sliding", "phased_ttt"), 61_000)}


def test_code_bytes_of_the_record_and_the_frontier():
    for name, (modes, bound) in CODE_BYTES_BOUND.items():
        cfg = load_config(REPO / "params" / name)
        assert code_bytes(cfg, modes) <= bound, name
        modules = set(reached_sources(cfg, modes))
        assert not modules & {"caseops", "corpora", "tokenizer", "notebooks", "study", "submission"}
        assert {"train", "quant", "evaluate", "pipeline", "cli"} <= modules
        assert ("lora_ttt" in modules) == (name == "frontier.yaml")  # phased TTT is LoRA TTT's
        assert ("kernels" in modules) == (name == "frontier.yaml")  # fused_ce


def test_the_walk_follows_the_switches():
    cfg = load_config(REPO / "params/record.yaml")
    assert {"lora_ttt", "kernels"} <= left_out(cfg)
    assert "lora_ttt" in reached_sources(cfg, ("plain", "phased_ttt"))
    assert "kernels" in reached_sources(cfg.replace(fused_mlp=True))
    cli = reached_sources(cfg)["cli"]
    assert "run_submission" in cli and "build_parser" not in cli and "cmd_study" not in cli  # no help text
    # describe_keys reads the keys' groups from Config's comments, which minifying removes: never reached
    assert "describe_keys" not in reached_sources(cfg)["config"]


def test_exported_train_gpt_runs_the_pipeline_under_torchrun(tmp_path, demo_data):
    """From an empty folder, as the challenge runs a record: 2 gloo ranks train, quantize and score
    plain, sliding and TTT; the data path is the embedded one; the unpacked code leaves TMPDIR."""
    params = tiny_params(tmp_path, demo_data, iterations=4, val_loss_every=0, max_val_tokens=2048,
                         gptq_calibration_batches=1, grad_accum_total=2)
    cfg = load_config(params)
    folder, tmp = tmp_path / "record", tmp_path / "tmp"
    folder.mkdir()
    tmp.mkdir()
    script = folder / "train_gpt.py"
    script.write_text(train_gpt_source(cfg))
    assert script.stat().st_size == code_bytes(cfg)
    env = {k: v for k, v in os.environ.items() if k != "GOLF_HOME"}
    env.update(TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train_gpt.py"], capture_output=True, text=True, cwd=folder, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    final = [line for line in out.stdout.splitlines() if line.startswith("final val_bpb ")]
    assert len(final) == 1, out.stdout
    run = folder / "outputs" / "submission" / "run-001"
    results = {m: json.loads((run / f"eval_{m}.json").read_text()) for m in ("plain", "sliding", "ttt")}
    assert float(final[0].split()[-1]) == round(results["ttt"]["val_bpb"], 8)
    assert all(math.isfinite(r["val_bpb"]) and 0 < r["val_bpb"] < 20 for r in results.values())
    budget = json.loads((run / "quant_budget.json").read_text())
    assert budget["code_bytes"] == script.stat().st_size
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert not list(tmp.rglob("golf.zip"))  # each rank's unpacked code went at exit (torchrun keeps its own)
