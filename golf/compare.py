"""``golf compare``: ablations side by side (studies or single runs, the first one the baseline).

Per study: val_bpb per seed and stage, n, mean and sample std; against the baseline: the
difference of means with a 95% confidence interval (Welch–Satterthwaite degrees of freedom)
and Welch's two-sided t-test; the params keys that differ; tokens/s and artifact bytes. Where
a study and the baseline hold runs of the same seeds, each sharing its trained weights with the
baseline's run of its seed (one quantized a copy of the other's, ``copied_from.json``, and their
pre-quantization results are equal), also the paired t-test over seeds.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from golf.notebook_params import parameter_list
from golf.plots import STAGE_LABELS, read_metrics, read_run_config, train_rows
from golf.runs import CONFIG, STUDY_PLAN, RunDir
from golf.studies import one_run_per_seed, stage_config, study_runs
from golf.runtime import GolfError, atomic_write_text, read_json

log = logging.getLogger("golf")


def welch(values: np.ndarray, baseline: np.ndarray, confidence: float = 0.95) -> dict:
    """Difference of means (values − baseline), its CI and Welch's two-sided t-test."""
    a, b = np.asarray(values, float), np.asarray(baseline, float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "ci_low": float("nan"), "ci_high": float("nan"), "t": float("nan"),
                "p": float("nan"), "df": float("nan")}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else float("nan")
    res = sps.ttest_ind(a, b, equal_var=False)
    half = float(sps.t.ppf(0.5 + confidence / 2, dof) * se) if se > 0 else 0.0
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "t": float(res.statistic),
            "p": float(res.pvalue), "df": float(dof)}


def _runs_of(folder: Path, stage: str) -> list[Path]:
    runs = study_runs(folder, stage)
    if not runs and RunDir(folder).config_file.is_file():  # a run, not evaluated in this mode yet
        make = "its training" if stage == "prequant" else f"golf evaluate --run-dir {str(folder)!r} --mode {stage}"
        raise GolfError(f"run {str(folder)!r} has no {stage} result yet: run {make} first, or compare another --stage")
    if not runs:
        from golf.stats import STAGES

        has = [s for s, marker in STAGES.items() if list(folder.glob(f"*/{marker}"))]
        if has:
            raise GolfError(f"{str(folder)!r} holds no run with a {stage} result; its runs have "
                            f"{', '.join(has)}: compare one of those (--stage {has[-1]}) or evaluate first")
        raise GolfError(f"{str(folder)!r} holds no run with a {stage} result: is it a golf study or run folder?")
    runs = one_run_per_seed(runs)
    if runs != [folder]:  # a study: the seeds of one config, each once
        from golf.stats import check_one_study

        check_one_study(folder, {run: stage_config(run, stage) for run in runs})
    return runs


def _tokens_per_s(run: Path) -> float | None:
    try:
        train = train_rows(read_metrics(run))
    except GolfError:
        return None
    rows = train[train["step"] > 1] if "step" in train else train
    return float(rows["tokens_per_s"].median()) if "tokens_per_s" in rows and len(rows) else None


def collect(folders: list[Path], names: list[str], stage: str) -> pd.DataFrame:
    """One row per run: study label, run, seed, the stage's loss and BPB, tok/s and artifact bytes."""
    from golf.stats import run_row

    rows = []
    for folder, name in zip(folders, names):
        own = []
        for run in _runs_of(folder, stage):
            r = run_row(run)
            own.append({"study": name, "run": f"{run.parent.name}/{run.name}", "seed": r.get("seed"),
                        "val_loss": r.get(f"{stage}_loss"), "val_bpb": r.get(f"{stage}_bpb"),
                        "tokens_per_s": _tokens_per_s(run), "bytes_total": r.get("bytes_total"),
                        "val_tokens": _scored_tokens(run, stage), "weights": _trained_weights(run),
                        "trained_bpb": r.get("prequant_bpb"), "path": str(run)})
        rows += sorted(own, key=lambda row: (row["seed"] is None, row["seed"] or 0))  # by seed, as one reads it
    return pd.DataFrame(rows)


def _scored_tokens(run: Path, stage: str) -> int | None:
    from golf.stats import STAGES

    result = read_json(run / STAGES[stage]) or {}
    return (result.get("prequant_post_ema") or {}).get("n_tokens") if stage == "prequant" else result.get("n_tokens")


def text_mismatch(runs: pd.DataFrame) -> str | None:
    """A warning when the runs scored different amounts of val text (max_val_tokens, eval_seq_len, other
    data): their BPBs then differ by the text as well as by the model."""
    counts = runs.dropna(subset=["val_tokens"]).groupby("val_tokens")["run"].apply(list)
    if len(counts) < 2:
        return None
    return ("the runs scored different amounts of val text, so their BPBs differ by the text too: "
            + "; ".join(f"{int(n):,} tokens in {', '.join(r[:3])}{' ...' if len(r) > 3 else ''}" for n, r in counts.items()))


def not_finite(runs: pd.DataFrame, stage: str) -> str | None:
    """A warning for runs whose result is NaN or infinite (a diverged training, a damaged file): shown
    as missing, not a number to compare."""
    from golf.stats import run_row

    values = {r: run_row(Path(p)).get(f"{stage}_bpb") for r, p in zip(runs.get("run", []), runs.get("path", []))}
    bad = [r for r, v in values.items() if isinstance(v, float) and not np.isfinite(v)]
    if not bad:
        return None
    return (f"val_bpb is not a finite number in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} (a diverged "
            "training or a damaged result file): shown as missing, left out of the means and tests")


def data_mismatch(keys: pd.DataFrame) -> str | None:
    """A warning when the runs were trained or scored with other data or tokenizers."""
    differ = [k for k in ("tokenizer_sha256", "data_sha256") if k in set(keys.get("key", []))]
    if not differ:
        return None
    return (f"the runs used different {' and '.join('tokenizers' if k.startswith('tok') else 'data' for k in differ)}"
            " (see the keys that differ): their BPBs are not measured on the same text")


def _trained_weights(run: Path) -> str:
    """Which training made the run's weights: its own (``STUDY/RUN``) or, for a copy of another run's
    (``copied_from.json``), that run's, named the same way wherever the folders now lie."""
    source = read_json(RunDir(run).copied_from) or {}
    trained = Path(source["run"]) if "run" in source else run
    return f"{trained.parent.name}/{trained.name}"


def paired(differences: np.ndarray, confidence: float = 0.95) -> dict:
    """The paired two-sided t-test of per-seed differences (study − baseline) and the CI of their mean."""
    d = np.asarray(differences, float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return {"t": float("nan"), "p": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    res = sps.ttest_1samp(d, 0.0)
    half = float(sps.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"t": float(res.statistic), "p": float(res.pvalue), "ci_low": d.mean() - half, "ci_high": d.mean() + half}


def _paired_differences(sub: pd.DataFrame, base: pd.DataFrame) -> np.ndarray | None:
    """Per-seed val_bpb differences when the two studies hold runs of the same seeds, one a seed each,
    that share their trained weights (the same training named, and the same pre-quantization result);
    None otherwise."""
    mine, theirs = sub.set_index("seed"), base.set_index("seed")
    for idx in (mine.index, theirs.index):
        if len(idx) < 2 or not idx.is_unique or idx.isna().any():
            return None
    if set(mine.index) != set(theirs.index):
        return None
    theirs = theirs.loc[mine.index]
    same = (mine["weights"] == theirs["weights"]) & (mine["trained_bpb"] == theirs["trained_bpb"])
    if not same.all():
        return None
    return (mine["val_bpb"].astype(float) - theirs["val_bpb"].astype(float)).to_numpy()


def summary(runs: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Per study: n, mean and std of val_bpb, and the difference to the first study with CI and p."""
    base = runs.loc[runs["study"] == names[0], "val_bpb"].to_numpy(float)
    rows = []
    for name in names:
        vals = runs.loc[runs["study"] == name, "val_bpb"].to_numpy(float)
        sub = runs[runs["study"] == name]
        tps, size = (col.median() if col.notna().any() else pd.NA for col in (sub["tokens_per_s"], sub["bytes_total"]))
        row = {"study": name, "n": len(vals), "mean_bpb": vals.mean(),
               "std_bpb": vals.std(ddof=1) if len(vals) > 1 else float("nan"),
               "tokens_per_s": round(tps) if pd.notna(tps) else pd.NA,
               "bytes_total": int(size) if pd.notna(size) else pd.NA}  # NA as in the runs table, not None
        if name != names[0]:
            w = welch(vals, base)
            row.update({"diff_vs_baseline": w["diff"], "ci95_low": w["ci_low"], "ci95_high": w["ci_high"],
                        "welch_t": w["t"], "welch_p": w["p"]})
            d = _paired_differences(sub, runs[runs["study"] == names[0]])
            if d is not None:  # the same weights, seed by seed: the seeds' spread cancels
                pt = paired(d)
                row.update({"paired_ci95_low": pt["ci_low"], "paired_ci95_high": pt["ci_high"],
                            "paired_t": pt["t"], "paired_p": pt["p"]})
        rows.append(row)
    return pd.DataFrame(rows)


def stage_means(runs: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Per study, the mean val BPB of its compared runs at every stage they reached (n where fewer runs)."""
    from golf.stats import run_row

    rows = []
    for name in names:
        found = [run_row(Path(p)) for p in runs.loc[runs["study"] == name, "path"]]
        row = {"study": name}
        for stage, label in STAGE_LABELS.items():
            vals = [r[f"{stage}_bpb"] for r in found if r.get(f"{stage}_bpb") is not None]
            if vals:
                mean = f"{sum(vals) / len(vals):.4f}"
                row[label] = mean if len(vals) == len(found) else f"{mean} (n={len(vals)})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A summary (or runs) table as a reader takes it in: mean BPB to 4 decimals, a run's BPB, spreads and
    differences (signed) to 5, p to 2 digits, thousands grouped."""
    import numbers

    shown = table.astype(object)
    fmt = {"mean_bpb": "{:.4f}", "std_bpb": "{:.5f}", "diff_vs_baseline": "{:+.5f}", "ci95_low": "{:+.5f}",
           "ci95_high": "{:+.5f}", "welch_t": "{:.2f}", "welch_p": "{:.2g}", "tokens_per_s": "{:,.0f}",
           "bytes_total": "{:,.0f}", "paired_ci95_low": "{:+.5f}", "paired_ci95_high": "{:+.5f}",
           "paired_t": "{:.2f}", "paired_p": "{:.2g}", "val_loss": "{:.5f}", "val_bpb": "{:.5f}",
           "val_tokens": "{:,.0f}", "seed": "{:.0f}"}
    for col, f in fmt.items():
        if col in shown:
            shown[col] = [f.format(v) if isinstance(v, numbers.Real) and v == v else "–" for v in table[col]]
    return shown


def _measured_on(run: Path, stage: str) -> dict:
    """What a stage's number was measured with besides the params: the tokenizer's sha256 (the stage's
    own record, else the training's) and the training data's (``data_manifest_sha256``)."""
    from golf.stats import STAGES

    env = read_json(RunDir(run).environment) or {}
    result = (read_json(run / STAGES[stage]) or {}) if stage != "prequant" else {}
    tok = result.get("tokenizer_sha256") or env.get("tokenizer_sha256")
    return {"tokenizer_sha256": tok[:12] if tok else None, "data_sha256": env.get("data_manifest_sha256")}


def differing_keys(folders: list[Path], names: list[str], stage: str) -> pd.DataFrame:
    """The params keys (seed aside), data and tokenizer whose values differ between the studies, read
    from every run: a study whose runs disagree shows ``mixed: a / b``."""
    all_runs = {name: _runs_of(folder, stage) for folder, name in zip(folders, names)}
    first_runs = {name: runs[0] for name, runs in all_runs.items()}
    configs = {name: [{**stage_config(run, stage), **_measured_on(run, stage)} for run in runs]
               for name, runs in all_runs.items()}
    keys = sorted({k for cs in configs.values() for c in cs for k in c} - {"seed", "compile_cache_dir"})

    def shown(cs: list[dict], key: str):
        values = list(dict.fromkeys(repr(c.get(key)) for c in cs))
        return cs[0].get(key) if len(values) == 1 else "mixed: " + " / ".join(values)

    rows = []
    for k in keys:
        row = {"key": k, **{name: shown(cs, k) for name, cs in configs.items()}}
        values = [row[name] for name in configs]
        if len({repr(v) for v in values}) > 1 or any(str(v).startswith("mixed: ") for v in values):
            rows.append(row)
    for row in rows:  # a fusion switch asked for that did nothing (no CUDA, or not in this stage): say so
        for name, run in first_runs.items():
            if row[name] is not True:
                continue
            trained = (read_json(RunDir(run).environment) or {}).get("kernels_in_effect", {})
            if trained.get(row["key"]) is False:
                row[name] = "True (not in effect: no CUDA/Triton)"
            elif _stage_kernels(Path(run), stage).get(row["key"]) is False:
                row[name] = f"True (not in effect in {stage})"
    return pd.DataFrame(rows, columns=["key", *names], dtype=object)  # 300 stays 300 beside 0.997


def _stage_kernels(run: Path, stage: str) -> dict:
    """``kernels_in_effect`` as the compared stage's own result recorded it ({} where it has none)."""
    from golf.stats import STAGES

    result = read_json(run / STAGES[stage]) if stage != "prequant" else None
    return (result or {}).get("kernels_in_effect", {})


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
    twice = sorted({str(f) for f in folders if folders.count(f) > 1})
    if twice:
        raise GolfError(f"{twice[0]!r} is given more than once: each folder is one study or run to compare")
    names = parameter_list(names, "names") or default_names(folders)
    if len(names) != len(folders) or len(set(names)) != len(names):
        raise GolfError(f"need one distinct name per folder, got names {names} for {len(folders)} folders")
    runs = collect(folders, names, stage)
    keys = differing_keys(folders, names, stage)
    warnings = [w for w in (text_mismatch(runs), data_mismatch(keys), not_finite(runs, stage)) if w]
    for w in warnings:
        log.warning("%s", w)
    # a run too short for a timed step has no tok/s, a run without an artifact no size: NaN, not an error
    runs["tokens_per_s"] = pd.to_numeric(runs["tokens_per_s"], errors="coerce").round().astype("Int64")
    runs["bytes_total"] = pd.to_numeric(runs["bytes_total"], errors="coerce").astype("Int64")
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
             _md("*" + throughput_note(runs) + "*"),
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
