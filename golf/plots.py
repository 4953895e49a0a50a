"""Figures and tables of one run folder, read from the files the run left (``golf.runs``).

Every function takes a run folder, saves what it draws under ``plots/`` or ``tables/`` and
returns it, so a notebook shows it and a report embeds the same file.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from golf.runs import CONFIG, STAGE_LABELS, RunDir  # noqa: F401  (STAGE_LABELS: the challenge logs' stage names)
from golf.runtime import GolfError, atomic_write_text, read_json


_WARNED: set = set()  # metrics files already warned about in this process


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The run's metrics rows; a line that is not JSON (the half-written last line of a killed run) is
    left out with one warning naming the file and its lines."""
    import json
    import logging

    path = RunDir(run_dir).metrics
    if not path.is_file():
        raise GolfError(f"{str(path)!r} does not exist: has the run trained?")
    rows, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = None
            bad.append(number)
        if isinstance(row, dict):
            rows.append(row)
        elif row is not None:
            bad.append(number)
    if bad and (str(path), len(bad)) not in _WARNED:
        _WARNED.add((str(path), len(bad)))
        logging.getLogger("golf").warning("%s: line(s) %s are not JSON objects (cut short by a killed run?): "
                                          "left out", path, ", ".join(map(str, bad[:5])))
    return pd.DataFrame(rows)


def read_run_config(run_dir: str | Path, name: str = CONFIG) -> dict:
    """A run's config.yaml (or ``name``) as a mapping ({} where there is none): :meth:`RunDir.config`."""
    return RunDir(run_dir).config(name)


TRAIN_COLUMNS = ["step", "train_loss", "lr_mult", "tokens_per_s", "step_ms", "looping", "peak_mem_mib", "train_ms"]


def train_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The logged training steps (none yet: an empty frame with their columns, so plots stay empty)."""
    if "train_loss" not in metrics:
        return pd.DataFrame(columns=TRAIN_COLUMNS)
    return metrics[metrics["train_loss"].notna()]


def live_val_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Validation of the live weights during training (the post-EMA row is a stage result)."""
    if "val_bpb" not in metrics:
        return metrics.iloc[:0]
    keep = metrics["val_bpb"].notna()
    if "stage" in metrics:
        keep &= metrics["stage"].isna()
    return metrics[keep]


def looping_step(run_dir: Path) -> int | None:
    """The step where depth recurrence switched on, from the run's own summary."""
    summary = read_json(RunDir(run_dir).summary) or {}
    return summary.get("looping_at_step")


def save_figure(fig, run_dir: str | Path, name: str) -> Path:
    out = RunDir(run_dir).plot(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def save_table(df: pd.DataFrame, run_dir: str | Path, name: str) -> Path:
    out = RunDir(run_dir).table(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, df.to_csv(index=False))
    return out


def _mark_looping(ax, x) -> None:
    if x is not None:
        ax.axvline(x, ls="--", c="gray", lw=1, label="looping on")
        ax.legend(loc="upper right", fontsize=8)


def plot_training(run_dir: str | Path):
    """Train loss against step and against wallclock, and live val BPB, with the looping step."""
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    m = read_metrics(run_dir)
    train, val = train_rows(m), live_val_rows(m)
    loop_at = looping_step(run_dir)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8))
    ax1.plot(train["step"], train["train_loss"], lw=1)
    ax1.set(xlabel="step", ylabel="train loss (nats/token)", title="training loss by step")
    _mark_looping(ax1, loop_at)
    if "train_ms" in train:
        ax2.plot(train["train_ms"] / 1000, train["train_loss"], lw=1)
        if loop_at is not None and (train["step"] >= loop_at).any():
            _mark_looping(ax2, train.loc[train["step"] >= loop_at, "train_ms"].iloc[0] / 1000)
    ax2.set(xlabel="training time (s)", ylabel="train loss (nats/token)", title="training loss by wallclock")
    if len(val):
        ax3.plot(val["step"], val["val_bpb"], marker="o")
    _mark_looping(ax3, loop_at)
    ax3.set(xlabel="step", ylabel="val BPB (live weights)", title="validation during training")
    fig.tight_layout()
    save_figure(fig, run_dir, "training.png")
    save_table(train, run_dir, "train_metrics.csv")
    return fig


def plot_schedule(run_dir: str | Path):
    """Learning-rate multiplier and Muon momentum, tokens/s and peak memory against step."""
    import matplotlib.pyplot as plt

    from golf.config import SECTION_OF, Config
    from golf.train import muon_momentum_at

    run_dir = Path(run_dir)
    train = train_rows(read_metrics(run_dir))
    cfg_values = read_run_config(run_dir)
    cfg = Config.from_flat({k: v for k, v in cfg_values.items() if k in SECTION_OF})  # an old run's removed keys aside
    loop_at = looping_step(run_dir)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.6))
    ax1.plot(train["step"], train["lr_mult"], label="LR multiplier")
    ax1.plot(train["step"], [muon_momentum_at(int(s), cfg) for s in train["step"]], label="Muon momentum")
    ax1.set(xlabel="step", ylabel="value", title="schedule", ylim=(0, 1.05))
    ax1.legend(fontsize=8)
    ax2.plot(train["step"], train["tokens_per_s"] / 1000, marker=".", lw=1)
    ax2.set(xlabel="step", ylabel="thousand tokens/s per rank", title="throughput")
    _mark_looping(ax2, loop_at)
    peak = pd.to_numeric(train.get("peak_mem_mib", pd.Series(index=train.index, dtype=float)), errors="coerce")
    ax3.plot(train["step"], peak, marker=".", lw=1)
    ax3.set(xlabel="step", ylabel="MiB", title="peak GPU memory")
    if not peak.notna().any():
        ax3.text(0.5, 0.5, "no GPU: not measured", ha="center", va="center", transform=ax3.transAxes, color="0.4")
        ax3.set(xticks=[], yticks=[])
    fig.tight_layout()
    save_figure(fig, run_dir, "schedule.png")
    return fig


def quant_tables(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The budget as a labelled table (bytes with thousands separators) and the per-tensor errors."""
    run_dir = Path(run_dir)
    budget = read_json(RunDir(run_dir).quant_budget)
    if budget is None:
        raise GolfError(f"{str(RunDir(run_dir).quant_budget)!r} does not exist: has the run been quantized?")
    tensors = pd.read_csv(RunDir(run_dir).table("quant_tensors.csv"))
    limit, total = budget.get("limit"), budget.get("total")
    rows = [("compressed model", f"{budget.get('model_bytes', 0):,} bytes"),
            ("code", f"{'' if budget.get('code_bytes_exact', True) else 'at most '}{budget.get('code_bytes', 0):,} bytes"),
            ("total", f"{total:,} bytes"),
            ("limit", f"{limit:,} bytes"),
            ("headroom", f"{limit - total:,} bytes ({100 * (limit - total) / limit:.2f}% of the limit)"),
            ("fits", "yes" if budget.get("fits") else "NO"),
            ("entries pruned to fit", f"{budget.get('n_pruned', 0):,}")]
    rows += [(f"{k[:-2]} time", f"{v:.1f} s") for k, v in budget.items() if k.endswith("_s") and v is not None]
    budget_df = pd.DataFrame(rows, columns=["quantity", "value"])
    save_table(budget_df, run_dir, "quant_budget.csv")
    return budget_df, tensors


def plot_quant_error(run_dir: str | Path):
    """Per-tensor GPTQ relative reconstruction error, each bar named by its tensor."""
    import matplotlib.pyplot as plt

    _, tensors = quant_tables(run_dir)
    name_col = "name" if "name" in tensors else tensors.columns[0]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.2 * len(tensors) + 1)))
    colors = ["C1" if b == 8 else "C0" for b in tensors.get("bits", [6] * len(tensors))]
    ax.barh(tensors[name_col].astype(str), tensors["rel_error"], color=colors)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="relative error ‖W−Ŵ‖/‖W‖ (blue int6, orange int8)", title="GPTQ reconstruction error by tensor")
    fig.tight_layout()
    save_figure(fig, Path(run_dir), "quant_error.png")
    return fig


def eval_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per stage that has a result: loss, BPB and seconds, labelled as the challenge logs."""
    run_dir = Path(run_dir)
    rows = []
    prequant = (read_json(RunDir(run_dir).summary) or {}).get("prequant_post_ema")
    for stage, label in STAGE_LABELS.items():
        res = prequant if stage == "prequant" else read_json(RunDir(run_dir).result(stage))
        if res:
            rows.append({"stage": label, "val_loss": res["val_loss"], "val_bpb": res["val_bpb"],
                         "seconds": res.get("seconds")})
    df = pd.DataFrame(rows, columns=["stage", "val_loss", "val_bpb", "seconds"])
    save_table(df, run_dir, "eval_summary.csv")
    return df


def plot_eval(run_dir: str | Path):
    """BPB of each stage on an axis from zero, each bar labelled with its value."""
    import matplotlib.pyplot as plt

    df = eval_table(run_dir)
    bpb = pd.to_numeric(df["val_bpb"], errors="coerce")
    finite = bpb.where(bpb.abs() < float("inf"))  # NaN or inf: no bar, a note instead
    fig, ax = plt.subplots(figsize=(8, 0.6 * max(len(df), 1) + 1.2))
    bars = ax.barh(df["stage"], finite.fillna(0), color="C2")
    ax.bar_label(bars, labels=[f"{v:.4f}" if v == f else f"{v} (not plotted)" for v, f in zip(bpb, finite)],
                 padding=3, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(finite.max() * 1.18, 0.1) if finite.notna().any() else 1)
    missing = int(finite.isna().sum())
    ax.set(xlabel="val BPB (lower is better)", title="BPB by stage" + (f" ({missing} not a finite number: "
                                                                       "not plotted)" if missing else ""))
    fig.tight_layout()
    save_figure(fig, Path(run_dir), "eval_bpb.png")
    return fig


def plot_seeds(df: pd.DataFrame, out_dir: str | Path, stage: str = "ttt"):
    """Each seed's BPB for one stage, with the mean; saved as ``seed_analysis.png`` in the study."""
    import matplotlib.pyplot as plt

    col = f"{stage}_bpb"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(df["seed"].astype(str), df[col], zorder=3)
    ax.axhline(df[col].mean(), ls="--", c="gray", label=f"mean {df[col].mean():.4f}")
    ax.set(xlabel="seed", ylabel=f"{STAGE_LABELS.get(stage, stage)} val BPB", title="per-seed result")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "seed_analysis.png", dpi=110, bbox_inches="tight")
    return fig
