"""The tables ``golf compare`` draws: one row a run, per study n, mean and std of val_bpb with Welch's
test against the baseline (paired over seeds where they share trained weights), the stage means, the
keys that differ, and the warnings about what the runs were measured on. golf.compare renders them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from golf.plots import STAGE_LABELS, read_metrics, train_rows
from golf.runs import RunDir
from golf.studies import one_run_per_seed, stage_config, study_runs
from golf.runtime import GolfError, read_json


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
                        "tokens_per_s": _tokens_per_s(run), "bytes_model": r.get("bytes_model"),
                        "bytes_total": r.get("bytes_total"),
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
        tps, model, size = (col.median() if col.notna().any() else pd.NA
                            for col in (sub["tokens_per_s"], sub["bytes_model"], sub["bytes_total"]))
        row = {"study": name, "n": len(vals), "mean_bpb": vals.mean(),
               "std_bpb": vals.std(ddof=1) if len(vals) > 1 else float("nan"),
               "tokens_per_s": round(tps) if pd.notna(tps) else pd.NA,
               "bytes_model": int(model) if pd.notna(model) else pd.NA,
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
