"""What the notebooks call: child-process launches, plots, tables, papermill studies, reports.

Notebooks stay thin (a ``parameters`` cell, calls into here, plots); torchrun runs outside the
Jupyter kernel as a child process (STYLE.md rules 3-4).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pandas as pd

from golf.runtime import GolfError, atomic_write_text

log = logging.getLogger("golf")

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
RUN_NOTEBOOKS = ("train", "quantize", "ttt_eval")


# --- child processes ---------------------------------------------------------------------------

def golf_command(args: list[str], nproc: int = 1) -> list[str]:
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "golf", *args]
    return [sys.executable, "-m", "golf", *args]


def launch_golf(args: list[str], nproc: int = 1, echo: bool = True) -> None:
    """Run ``golf ARGS`` (under torchrun when nproc > 1), streaming its output; raise if it fails."""
    cmd = golf_command(args, nproc)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=REPO_ROOT) as proc:
        for line in proc.stdout:
            tail.append(line)
            if echo:
                print(line, end="", flush=True)
    if proc.returncode != 0:
        raise GolfError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{''.join(tail)}")


# --- tables and plots --------------------------------------------------------------------------

def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise GolfError(f"{str(path)!r} does not exist: has the run trained?")
    return pd.read_json(path, lines=True)


def _save(fig, run_dir: Path, name: str) -> Path:
    out = Path(run_dir) / "plots" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def save_table(df: pd.DataFrame, run_dir: str | Path, name: str) -> Path:
    out = Path(run_dir) / "tables" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, df.to_csv(index=False))
    return out


def plot_training(run_dir: str | Path):
    """Train loss and val BPB against step, with the step where looping switched on."""
    import matplotlib.pyplot as plt

    m = read_metrics(run_dir)
    train = m[m["train_loss"].notna()] if "train_loss" in m else m.iloc[:0]
    live_val = m["val_bpb"].notna() if "val_bpb" in m else pd.Series(False, index=m.index)
    if "stage" in m:  # the post-EMA row is a stage result, not a point of the live-weights curve
        live_val &= m["stage"].isna()
    val = m[live_val]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax1.plot(train["step"], train["train_loss"], lw=1)
    ax1.set(xlabel="step", ylabel="train loss (nats)", title="training loss")
    if "looping" in train and train["looping"].astype(bool).any():
        ax1.axvline(train.loc[train["looping"].astype(bool), "step"].iloc[0], ls="--", c="gray", label="looping on")
        ax1.legend()
    ax2.plot(val["step"], val["val_bpb"], marker="o")
    ax2.set(xlabel="step", ylabel="val BPB", title="validation (live weights)")
    fig.tight_layout()
    _save(fig, Path(run_dir), "training.png")
    save_table(train, run_dir, "train_metrics.csv")
    return fig


def quant_tables(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_dir = Path(run_dir)
    budget = json.loads((run_dir / "quant_budget.json").read_text())
    tensors = pd.read_csv(run_dir / "tables" / "quant_tensors.csv")
    keys = ["model_bytes", "code_bytes", "total", "limit", "headroom", "fits", "n_pruned", "hessian_s", "gptq_s",
            "serialize_s"]
    budget_df = pd.DataFrame([(k, budget.get(k)) for k in keys], columns=["quantity", "value"])
    save_table(budget_df, run_dir, "quant_budget.csv")
    return budget_df, tensors


def plot_quant_error(run_dir: str | Path):
    import matplotlib.pyplot as plt

    _, tensors = quant_tables(run_dir)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    ax.bar(range(len(tensors)), tensors["rel_error"], color=["C1" if b == 8 else "C0" for b in tensors["bits"]])
    ax.set(xlabel="tensor (blue int6 matrices, orange int8 embedding)", ylabel="‖W−Ŵ‖/‖W‖",
           title="GPTQ relative reconstruction error")
    fig.tight_layout()
    _save(fig, Path(run_dir), "quant_error.png")
    return fig


def eval_table(run_dir: str | Path) -> pd.DataFrame:
    """Stage-labelled results, as the challenge's logs label them."""
    from golf.stats import run_row

    run_dir = Path(run_dir)
    row = run_row(run_dir)
    labels = {"prequant": "pre-quantization post-ema", "plain": "quantized",
              "sliding": "quantized_sliding_window", "ttt": "quantized_ttt"}
    rows = []
    for stage, label in labels.items():
        if f"{stage}_bpb" in row:
            secs = None
            if stage != "prequant":
                secs = json.loads((run_dir / f"eval_{stage}.json").read_text()).get("seconds")
            rows.append({"stage": label, "val_loss": row[f"{stage}_loss"], "val_bpb": row[f"{stage}_bpb"],
                         "seconds": secs})
    df = pd.DataFrame(rows)
    save_table(df, run_dir, "eval_summary.csv")
    return df


def plot_eval(run_dir: str | Path):
    import matplotlib.pyplot as plt

    df = eval_table(run_dir)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(df["stage"], df["val_bpb"])
    lo = df["val_bpb"].min()
    ax.set_ylim(lo - 0.05 * abs(lo), df["val_bpb"].max() * 1.01)
    ax.set(ylabel="val BPB", title="BPB by stage")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    _save(fig, Path(run_dir), "eval_bpb.png")
    return fig


def plot_seeds(df: pd.DataFrame, out_dir: str | Path, stage: str = "ttt"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(df["seed"].astype(str), df[f"{stage}_bpb"])
    ax.axhline(df[f"{stage}_bpb"].mean(), ls="--", c="gray", label="mean")
    ax.set(xlabel="seed", ylabel=f"{stage} val BPB", title="per-seed result")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "seed_analysis.png", dpi=110, bbox_inches="tight")
    return fig


# --- papermill studies -------------------------------------------------------------------------

def _new_dir(base: Path, name: str) -> Path:
    """``base/name``, or ``name-2``, ``name-3``… if taken: nothing finished is overwritten."""
    path, n = base / name, 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    path.mkdir(parents=True)
    return path


def execute_notebook(name: str, out_path: Path, parameters: dict, kernel: str | None = None) -> Path:
    import papermill as pm

    src = NOTEBOOK_DIR / f"{name}.ipynb"
    if not src.is_file():
        raise GolfError(f"notebook {str(src)!r} does not exist")
    pm.execute_notebook(str(src), str(out_path), parameters=parameters, cwd=str(REPO_ROOT),
                        kernel_name=kernel or "python3", progress_bar=False, log_output=True)
    return out_path


def render_html(notebooks: list[Path], out_path: Path, title: str) -> Path:
    """One HTML report of the executed notebooks, in order."""
    import nbformat
    from nbconvert import HTMLExporter

    merged = nbformat.v4.new_notebook()
    merged.metadata = nbformat.read(notebooks[0], as_version=4).metadata
    merged.metadata["title"] = title
    for path in notebooks:
        merged.cells.append(nbformat.v4.new_markdown_cell(f"---\n# {path.stem}"))
        merged.cells.extend(nbformat.read(path, as_version=4).cells)
    body, _ = HTMLExporter().from_notebook_node(merged)
    atomic_write_text(out_path, body)
    return out_path


def run_seed(params_file: str, seed: int, study_dir: Path, overrides: list[str], nproc: int = 1,
             kernel: str | None = None) -> Path:
    """Train → quantize → evaluate one seed through the notebooks; returns the run folder."""
    run_dir = _new_dir(study_dir, f"seed{seed}")
    common = {"run_dir": str(run_dir), "nproc": nproc}
    executed = []
    for name in RUN_NOTEBOOKS:
        params = dict(common)
        if name == "train":
            params.update(params_file=params_file, seed=seed, overrides=list(overrides))
        out = run_dir / f"{name}.ipynb"
        executed.append(execute_notebook(name, out, params, kernel))
    render_html(executed, run_dir / "report.html", f"golf run {run_dir.name}")
    return run_dir


def run_study(params_file: str, seeds: list[int], study: str | None = None, overrides: list[str] | None = None,
              outputs: str = "outputs", kernel: str | None = None, nproc: int = 1) -> Path:
    """``golf run``: every seed through the run notebooks, then the seed analysis notebook."""
    from golf.config import load_config

    overrides = list(overrides or [])
    load_config(params_file, overrides)  # fail on a bad key before any work
    study_dir = _new_dir(Path(outputs), study or Path(params_file).stem)
    log.info("study folder %s", study_dir)
    run_dirs = [run_seed(params_file, s, study_dir, overrides, nproc, kernel) for s in seeds]
    out = study_dir / "seed_analysis.ipynb"
    execute_notebook("seed_analysis", out, {"study_dir": str(study_dir),
                                            "run_dirs": [str(d) for d in run_dirs]}, kernel)
    return render_html([out], study_dir / "seed_analysis.html", f"golf study {study_dir.name}")
