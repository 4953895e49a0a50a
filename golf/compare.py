"""``golf compare``: ablations side by side (studies or single runs, the first one the baseline).

Per study: val_bpb per seed and stage, n, mean and sample std; against the baseline: the
difference of means with a 95% confidence interval (Welch–Satterthwaite degrees of freedom)
and Welch's two-sided t-test; the params keys that differ; tokens/s and artifact bytes. Where
a study and the baseline hold runs of the same seeds, each sharing its trained weights with the
baseline's run of its seed (one quantized a copy of the other's, ``copied_from.json``, and their
pre-quantization results are equal), also the paired t-test over seeds. The numbers are
golf.compare_tables'; here, the figures, the page and its files.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from golf.compare_tables import collect, data_mismatch, differing_keys, not_finite, stage_means, summary, text_mismatch
from golf.notebook_params import parameter_list
from golf.plots import STAGE_LABELS, read_metrics, train_rows
from golf.runs import CONFIG, STUDY_PLAN, RunDir
from golf.runtime import GolfError, atomic_write_text, read_json

log = logging.getLogger("golf")


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A summary (or runs) table as a reader takes it in: mean BPB to 4 decimals, a run's BPB, spreads and
    differences (signed) to 5, p to 2 digits, thousands grouped."""
    import numbers

    shown = table.astype(object)
    fmt = {"mean_bpb": "{:.4f}", "std_bpb": "{:.5f}", "diff_vs_baseline": "{:+.5f}", "ci95_low": "{:+.5f}",
           "ci95_high": "{:+.5f}", "welch_t": "{:.2f}", "welch_p": "{:.2g}", "tokens_per_s": "{:,.0f}",
           "bytes_model": "{:,.0f}", "bytes_total": "{:,.0f}", "paired_ci95_low": "{:+.5f}", "paired_ci95_high": "{:+.5f}",
           "paired_t": "{:.2f}", "paired_p": "{:.2g}", "val_loss": "{:.5f}", "val_bpb": "{:.5f}",
           "val_tokens": "{:,.0f}", "seed": "{:.0f}"}
    for col, f in fmt.items():
        if col in shown:
            shown[col] = [f.format(v) if isinstance(v, numbers.Real) and v == v else "–" for v in table[col]]
    return shown


def plot(runs: pd.DataFrame, names: list[str], stage: str, out_dir: Path):
    """Per-seed dots with each study's mean, and every run's training loss overlaid by study."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
    for i, name in enumerate(names):
        vals = runs.loc[runs["study"] == name, "val_bpb"].to_numpy(float)
        ax1.scatter(np.full(len(vals), i) + np.linspace(-0.08, 0.08, len(vals)), vals, color=f"C{i}", zorder=3)
        ax1.hlines(vals.mean(), i - 0.25, i + 0.25, color=f"C{i}", lw=2)
        for path in runs.loc[runs["study"] == name, "path"]:
            try:
                train = train_rows(read_metrics(path))
            except GolfError:
                continue
            ax2.plot(train["step"], train["train_loss"], color=f"C{i}", lw=1, alpha=0.7,
                     label=name if path == runs.loc[runs["study"] == name, "path"].iloc[0] else None)
    counts = runs["study"].value_counts()
    if len(names) <= 4:  # n=1: no spread
        ax1.set_xticks(range(len(names)), [f"{n}\n(n={counts.get(n, 0)})" for n in names], rotation=15)
    else:  # slanted, on one line each, so that long arm names do not run into each other
        ax1.set_xticks(range(len(names)), [f"{n} (n={counts.get(n, 0)})" for n in names], rotation=35,
                       ha="right", rotation_mode="anchor")
    ax1.set(ylabel=f"{STAGE_LABELS.get(stage, stage)} val BPB", title="per-seed result (bar = mean)")
    ax2.set(xlabel="step", ylabel="train loss (nats/token)", title="training loss, every run")
    if ax2.get_legend_handles_labels()[0]:  # no run logged a training loss: no legend, and no warning about one
        ax2.legend(fontsize=8)
    fig.tight_layout()
    out = out_dir / "compare.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return fig


def plot_differences(table: pd.DataFrame, stage: str, out_dir: Path):
    """Each study's difference from the baseline with its 95% interval, one row a study in the table's
    order: the ablation at a glance. The paired interval where the table has one (same trained weights),
    else Welch's; red where the study is worse for sure (interval above 0), green where better."""
    import matplotlib.pyplot as plt

    rows = table.iloc[1:]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.4))
    ys = np.arange(len(rows))[::-1]
    labels = []
    for y, (_, r) in zip(ys, rows.iterrows()):
        pairs = "paired_ci95_low" in r and pd.notna(r["paired_ci95_low"])
        low, high = (r["paired_ci95_low"], r["paired_ci95_high"]) if pairs else (r["ci95_low"], r["ci95_high"])
        color = "C3" if low > 0 else "C2" if high < 0 else "0.45"  # NaN (one run) compares False: grey
        if pd.notna(low):
            ax.hlines(y, low, high, color=color, lw=2.5)
        ax.plot(r["diff_vs_baseline"], y, "o", color=color, ms=6)
        labels.append(f"{r['study']} (n={r['n']}{', paired' if pairs else ''})")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ys, labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set(xlabel=f"{STAGE_LABELS.get(stage, stage)} val BPB − {table['study'].iloc[0]} (lower is better)",
           title="difference from the baseline, 95% interval")
    fig.tight_layout()
    fig.savefig(out_dir / "compare_diff.png", dpi=110, bbox_inches="tight")
    return fig


def study_arms(folders: list[Path], stage: str) -> tuple[list[Path], list[str] | None]:
    """A ``golf study`` folder stands for its arms with a ``stage`` result (their folders, in the plan's
    order: the first, its baseline, must have one), named by arm, or STUDY/ARM among other folders; other
    folders stay. The names are None where no folder is such a study."""
    from golf.studies import study_runs

    out, names, any_arms = [], [], False
    for f in folders:
        plan = read_json(f / STUDY_PLAN) if (f / STUDY_PLAN).is_file() else None
        planned = list((plan or {}).get("arms") or {}) if isinstance(plan, dict) else []
        arms = [a for a in planned if (f / a).is_dir() and study_runs(f / a, stage)]
        if planned:
            if planned[0] not in arms:
                raise GolfError(f"study {str(f)!r}: its baseline arm {planned[0]!r} has no run with a {stage} "
                                f"result yet; finish it (the same golf study command), or compare another --stage")
            left = [a for a in planned if a not in arms]
            if left:
                log.warning("study %s: arm(s) %s have no %s result yet, left out", f, ", ".join(left), stage)
            any_arms = True
            log.info("%s is a study of %d arm%s: comparing %s (baseline %s)", f, len(planned),
                     "s" * (len(planned) != 1), ", ".join(arms), arms[0])
            out += [f / a for a in arms]
            names += arms if len(folders) == 1 else [f"{f.name}/{a}" for a in arms]
        else:
            out.append(f)
            names.append(f.name)
    return out, (names if any_arms and len(set(names)) == len(names) else None)


def close_figures(result: dict) -> None:
    """Close the figures ``compare`` returned (for a notebook to show) where nothing shows them."""
    import matplotlib.pyplot as plt

    for fig in (result["figure"], result["diff_figure"]):
        if fig is not None:
            plt.close(fig)


def default_names(folders: list[Path]) -> list[str]:
    """Each folder's name, with its parent's where two names are the same (two studies' seed1 runs)."""
    names = [f.name for f in folders]
    for depth in range(2, max(len(f.parts) for f in folders) + 1):
        if len(set(names)) == len(names):
            break
        names = [str(Path(*f.parts[-depth:])) if names.count(n) > 1 else n for f, n in zip(folders, names)]
    return names


DIFF_CAPTION = ("*Each line: a study's mean minus the baseline's, with its 95% interval: the paired t-test's where "
                "the study shares the baseline's trained weights seed by seed, else Welch's. Red: surely worse (the "
                "interval lies above 0); green: surely better (below 0); grey: the interval spans 0.*")


TEST_NOTE = ("The 95% interval and the two-sided p-value come from Welch's t-test over seeds (unequal variances): "
             "two trainings of one seed share their initialisation and data order but not their result, so a seed "
             "shared between studies is no pair by itself. Where a study's runs share the baseline's *trained "
             "weights* seed by seed (a quantization-only arm), the seeds' spread cancels exactly, and the paired "
             "t-test over seeds is used.")


BYTES_NOTE = ("bytes_model is the artifact; bytes_total adds the code of the run's exported train_gpt.py where "
              "golf quantize counted it exactly, and is blank where quantize used its upper bound (far under the "
              "limit): golf export-submission counts it.")


def throughput_note(runs: pd.DataFrame) -> str:
    """tokens/s is measured where and while each run trained: say so, and name the machines if they differ."""
    def machine(path: str) -> str:
        env = read_json(RunDir(path).environment) or {}
        gpus = env.get("gpus") or []
        return f"{len(gpus)}x {gpus[0]}" if gpus else f"CPU ({env.get('platform', 'unknown')})"

    machines = sorted({machine(p) for p in runs["path"]})
    note = ("tokens/s is each run's median over its timed steps, as measured on its machine under whatever else "
            "ran there (runs side by side share the CPUs and GPUs): compare it only between runs made alike.")
    if len(machines) > 1:
        note += f" These runs trained on {len(machines)} different machines: {'; '.join(machines)}."
    return note


def _linked_runs(runs: pd.DataFrame, out: Path):
    """The every-run table, each run linked to its report.html (relative to the comparison's folder)."""
    import html
    import os

    from golf.report import _output_cell

    shown = readable(runs.drop(columns=["path", "trained_bpb", *(
        ["weights"] if (runs["weights"] == runs["run"]).all() else [])]))
    shown = shown.apply(lambda col: col.map(lambda v: html.escape(v) if isinstance(v, str) else v))
    shown["report"] = [f'<a href="{html.escape(os.path.relpath(RunDir(p).report, out))}">report</a>'
                       if RunDir(p).report.is_file() else "–" for p in runs["path"]]
    return _output_cell({"text/html": shown.to_html(index=False, escape=False, border=0, classes="dataframe",
                                                    na_rep="–")})


def compare(folders: list[str | Path], names: list[str] | None = None, stage: str = "ttt",
            out_dir: str | Path | None = None) -> dict:
    """Compare studies (or runs); writes ``compare.csv``, ``compare_runs.csv``, ``compare_stages.csv``, ``compare.png``,
    ``compare_diff.png`` (with more than one study) and
    ``compare.html`` into ``out_dir`` (default ``outputs/compare/compare-NNN``) and returns the tables."""
    from golf.paths import outputs_root, resolve
    from golf.report import _figure, _md, _table, render, require_report_libs
    from golf.runs import new_numbered_dir

    if stage not in STAGE_LABELS:
        raise GolfError(f"stage must be one of {sorted(STAGE_LABELS)}, got {stage!r}")
    folders = [resolve(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
    if not folders:
        raise GolfError("give at least one study or run folder to compare")
    for f in folders:
        if not f.is_dir():
            raise GolfError(f"{str(f)!r} is not a folder: give study or run folders")
    given = len(folders)
    folders, arm_names = study_arms(folders, stage)
    twice = sorted({str(f) for f in folders if folders.count(f) > 1})
    if twice:
        raise GolfError(f"{twice[0]!r} is given more than once (a golf study folder stands for its arms): each "
                        "folder is one study or run to compare")
    names = parameter_list(names, "names") or arm_names or default_names(folders)
    if len(names) != len(folders) or len(set(names)) != len(names):
        arms = f" (the {given} given, a golf study's arms counted one each)" if len(folders) != given else ""
        raise GolfError(f"need one distinct name per folder, got names {names} for {len(folders)} folders{arms}")
    runs = collect(folders, names, stage)
    keys = differing_keys(folders, names, stage)
    warnings = [w for w in (text_mismatch(runs), data_mismatch(keys), not_finite(runs, stage)) if w]
    for w in warnings:
        log.warning("%s", w)
    # a run too short for a timed step has no tok/s, a run without an artifact no size: NaN, not an error
    runs["tokens_per_s"] = pd.to_numeric(runs["tokens_per_s"], errors="coerce").round().astype("Int64")
    for col in ("bytes_model", "bytes_total"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("Int64")
    table = summary(runs, names)
    out = resolve(out_dir) if out_dir else new_numbered_dir(outputs_root() / "compare", "compare")
    for marker, what in ((CONFIG, "a run"), (STUDY_PLAN, "a study")):
        if (out / marker).exists():  # a comparison is redrawn in place, a run or study is never written into
            raise GolfError(f"--out {str(out)!r} is {what} folder; give golf compare a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", table.to_csv(index=False))
    atomic_write_text(out / "compare_runs.csv", runs.drop(columns=["path", "trained_bpb"]).to_csv(index=False))
    stages = stage_means(runs, names)
    atomic_write_text(out / "compare_stages.csv", stages.to_csv(index=False))
    fig = plot(runs, names, stage, out)
    diff_fig = plot_differences(table, stage, out) if len(names) > 1 else None
    try:
        require_report_libs(f"the tables and figures (compare*.csv, compare*.png) are in {str(out)!r}")
    except GolfError:
        (out / "compare.html").unlink(missing_ok=True)  # an earlier page beside these tables would contradict them
        raise
    title = " vs ".join(names) if len(names) <= 3 else f"{len(names)} studies against {names[0]}"
    cells = [_md(f"# Comparison: {title}\n\nStage: {STAGE_LABELS[stage]}. Baseline: **{names[0]}**. "
                 "Differences are (study − baseline) in val BPB, lower is better. " + TEST_NOTE
                 + (" Here the paired_ columns give it." if "paired_p" in table else "")),
             *[_md(f"**Warning:** {w}") for w in warnings],
             _md("*" + throughput_note(runs) + " " + BYTES_NOTE + "*"),
             _table(readable(table)), *([_figure(out / "compare_diff.png"), _md(DIFF_CAPTION)] if diff_fig else []),
             _figure(out / "compare.png"),
             _md("## Every stage\n\nMean val BPB of the same runs at each stage they reached (the test above is "
                 f"for {STAGE_LABELS[stage]} alone)."), _table(stages),
             _md("## Params keys, data and tokenizer that differ"),
             _table(keys) if len(keys) else _md("None: the studies ran the same config (seeds aside)."),
             _md("## Every run"), _linked_runs(runs, out)]
    render(cells, out / "compare.html", f"golf compare: {title}")
    return {"summary": table, "runs": runs, "keys": keys, "out_dir": out, "figure": fig, "diff_figure": diff_fig,
            "warnings": warnings}
