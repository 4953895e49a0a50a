"""Rendered reports: one HTML file per run, per study and per comparison, no code in them.

A report is a notebook made of the run's own files (its results, tables and the figures its
notebooks saved under ``plots/``), rendered by nbconvert without inputs, images embedded. It
reads files only, so ``golf run``, a direct papermill run and a Run All in JupyterLab render
the same page. Headline first, then figures, then links to the logs and executed notebooks.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.util
import platform
from pathlib import Path
from typing import Any

import pandas as pd

from golf.config import EVAL_MODES, differences_from_record
from golf.plots import STAGE_LABELS, eval_table, read_metrics, read_run_config, train_rows
from golf.runs import CONFIG, LINKED_FILES, PLOTS, REPORT, STUDY_PLAN, RunDir
from golf.runtime import GolfError, atomic_write_text, read_json

RUN_FIGURES = [  # (file under plots/, caption)
    ("training.png", "Training loss by step and by wallclock, and validation BPB of the live weights; the dashed "
                     "line is the step where depth recurrence switched on."),
    ("schedule.png", "LR multiplier and Muon momentum, throughput per rank (one device each) and peak GPU memory."),
    ("eval_bpb.png", "BPB of each stage that ran, one bar each: after EMA (pre-quantization), then the "
                     "quantized artifact by each scoring mode evaluated."),
    ("quant_error.png", "Relative GPTQ reconstruction error of each quantized tensor."),
]


# --- notebook pieces ---------------------------------------------------------------------------

def require_report_libs(written: str = "") -> None:
    """One line naming what is missing, not a traceback, where the report's libraries are not installed
    (a bare GPU host, say); ``written``: what was made before the report, so the line can say so."""
    missing = [m for m in ("nbformat", "nbconvert") if importlib.util.find_spec(m) is None]
    if missing:
        raise GolfError(f"the HTML report needs {' and '.join(missing)}, not installed here (environment.yml; "
                        f"pip install {' '.join(missing)})"
                        + (f"; {written}" if written else ""))


def _md(text: str):
    import nbformat

    return nbformat.v4.new_markdown_cell(text)


def _output_cell(data: dict[str, str]):
    import nbformat

    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    return cell


def _table(df: pd.DataFrame, index: bool = False):
    return _output_cell({"text/html": df.to_html(index=index, border=0, classes="dataframe", na_rep="–",
                                                 float_format=lambda v: f"{v:.5g}")})


def _figure(path: Path):
    return _output_cell({"image/png": base64.b64encode(path.read_bytes()).decode()})


def _links(folder: Path, names: list[str]) -> str:
    present = [n for n in names if (folder / n).exists()]
    return " · ".join(f"[{html.escape(n)}]({html.escape(n)})" for n in present) or "none"


def render(cells: list, out_path: Path, title: str) -> Path:
    """Render cells to one self-contained HTML file without inputs or prompts."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["title"] = title
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            extra_template_basedirs=[str(Path(__file__).parent / "templates")],
                            template_name="golf_report")
    exporter.log.setLevel("ERROR")  # not a warning per figure about alt text
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(out_path, body)
    return out_path


# --- one run -----------------------------------------------------------------------------------

def _phase_throughput(train: pd.DataFrame, looping: bool) -> float | None:
    if "tokens_per_s" not in train or "looping" not in train:
        return None
    rows = train[(train["looping"].astype(bool) == looping) & (train["step"] > 1)]
    return float(rows["tokens_per_s"].median()) if len(rows) else None


def headline(run_dir: Path) -> pd.DataFrame:
    """The run in one table: training, every stage's result, the artifact against the limit."""
    summary = read_json(RunDir(run_dir).summary) or {}
    rows: list[tuple[str, str]] = []
    if summary:
        rows.append(("steps", f"{summary.get('steps'):,}"))
        rows.append(("training time", f"{summary.get('train_ms', 0) / 1000:.1f} s"))
        if summary.get("looping_at_step") is not None:
            rows.append(("depth recurrence from step", f"{summary['looping_at_step']:,}"))
    try:
        train = train_rows(read_metrics(run_dir))
    except GolfError:
        train = pd.DataFrame()
    for looping, phase in ((False, "plain"), (True, "looped")):
        tps = _phase_throughput(train, looping)
        if tps is not None:
            rows.append((f"tokens/s per rank, {phase} phase (median)", f"{tps:,.0f}"))
    if summary.get("peak_mem_mib"):
        rows.append(("peak GPU memory", f"{summary['peak_mem_mib']:,.0f} MiB"))
    for _, r in eval_table(run_dir).iterrows():
        secs = f", {r['seconds']:.1f} s" if pd.notna(r["seconds"]) else ""
        rows.append((f"{r['stage']}", f"val_bpb {r['val_bpb']:.5f} · val_loss {r['val_loss']:.5f}{secs}"))
    budget = read_json(RunDir(run_dir).quant_budget)
    if budget:
        limit, total = budget["limit"], budget["total"]
        exact = budget.get("code_bytes_exact", True)  # else the code bytes are an upper bound
        at_most, at_least = ("", "") if exact else ("at most ", "at least ")
        rows.append(("artifact + code", f"{at_most}{total:,} of {limit:,} bytes · "
                                        f"headroom {at_least}{limit - total:,} bytes "
                                        f"({100 * (limit - total) / limit:.2f}%) · "
                                        f"{'fits' if budget.get('fits') else 'OVER THE LIMIT'}"))
    return pd.DataFrame(rows, columns=["", "value"])


def run_header(run_dir: Path) -> str:
    """Markdown: run id, date, commit, machine, world size, params file, keys that differ from the record."""
    run = RunDir(run_dir)
    env = read_json(run.environment) or {}
    run_info = read_json(run.run_info) or {}
    cfg = read_run_config(run_dir)
    def described(made: dict) -> str:
        return (made.get("git_commit") or "no commit") + (" (with uncommitted changes)" if made.get("git_dirty") else "")

    commit = described(env)
    stages = {stage: read_json(path) or {} for stage, path in
              (("quant_budget", run.quant_budget), *((f"eval_{m}", run.eval_result(m)) for m in EVAL_MODES))}
    later = {stage: described(made) for stage, made in stages.items()
             if made.get("git_commit") is not None and described(made) != commit}
    if later:  # a stage that ran on other code than training: say which
        commit += "; other code for " + ", ".join(f"{stage}: {c}" for stage, c in later.items())
    gpus = env.get("gpus") or []
    machine = f"{len(gpus)} x {gpus[0]}" if gpus else "CPU"
    lines = [
        f"# Run `{run_dir.parent.name}/{run_dir.name}`",
        "",
        "| | |", "|---|---|",
        f"| date | {env.get('time', '–')} |",
        f"| commit | `{commit}` |",
        f"| machine | {machine} · {env.get('platform', platform.platform())} · torch {env.get('torch', '–')} |",
        f"| world size | {env.get('world_size', '–')} |",
        f"| params file | `{run_info.get('params_file', '–')}` |",
        f"| overrides | `{' '.join(run_info.get('set') or []) or 'none'}` |",
        f"| seed | {cfg.get('seed', '–')} |",
        f"| data | `{cfg.get('data_dir', '–')}` |",
    ]
    diffs = {k: v for k, v in differences_from_record(cfg or {}).items() if k != "seed"}
    if diffs:
        rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(repr(v))}</td>"
                       f"<td>{html.escape(repr(b))}</td></tr>" for k, (b, v) in diffs.items())
        lines += ["", f"<details><summary><b>{len(diffs)} params keys differ from the record's values</b> "
                      f"({', '.join(list(diffs)[:6])}{', …' if len(diffs) > 6 else ''})</summary>",
                  f"<table><tr><th>key</th><th>this run</th><th>record</th></tr>{rows}</table></details>"]
    else:
        lines += ["", "Every params key has the record's value."]
    return "\n".join(lines)


def render_run_report(run_dir: str | Path) -> Path:
    """``RUN/report.html`` from the run's files; stages not run yet are simply absent."""
    run_dir = Path(run_dir)
    require_report_libs()
    cells = [_md(run_header(run_dir)), _md("## Headline"), _table(headline(run_dir))]
    for name, caption in RUN_FIGURES:
        if RunDir(run_dir).plot(name).is_file():
            cells += [_figure(RunDir(run_dir).plot(name)), _md(f"*{caption}*")]
    quant = RunDir(run_dir).table("quant_budget.csv")
    if quant.is_file():
        cells += [_md("## Artifact budget"), _table(pd.read_csv(quant))]
    cells.append(_md("## Files\n" + _links(run_dir, LINKED_FILES)))
    return render(cells, RunDir(run_dir).report, f"golf run {run_dir.name}")


def build_run_report(run_dir: str | Path) -> Path:
    """Every figure and table the run's files allow, then ``report.html``: what the notebooks make step
    by step, at once, for a run made from the command line (``golf report``)."""
    import matplotlib.pyplot as plt

    from golf.plots import plot_eval, plot_quant_error, plot_schedule, plot_training

    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise GolfError(f"{str(run_dir)!r} is not a golf run folder (no {CONFIG})")
    read_run_config(run_dir)  # a damaged one: one line, before any figure is drawn
    makers = []
    if run.metrics.is_file():
        makers += [plot_training, plot_schedule]
    if run.quant_budget.is_file() and run.table("quant_tensors.csv").is_file():
        makers.append(plot_quant_error)
    if not eval_table(run_dir).empty:
        makers.append(plot_eval)
    for make in makers:
        plt.close(make(run_dir))
    require_report_libs(f"the figures are in {str(run_dir / PLOTS)!r}" if makers else "")
    return render_run_report(run_dir)


# --- one study ---------------------------------------------------------------------------------

TEST_WORDS = {
    "ttest_vs_sota_minus_margin": "one-sided t-test: is the mean loss below the #1493 SOTA minus 0.005 nats "
                                  "(the challenge's bar for a new record)?",
    "ttest_vs_sota": "one-sided t-test: is the mean loss below the #1493 SOTA at all?",
    "welch_vs_reference_with_margin": "Welch's t-test: are these seeds at least 0.005 nats better than the "
                                      "logged #1533 seeds?",
    "welch_vs_reference": "Welch's t-test: are these seeds better than the logged #1533 seeds?",
}


def tests_table(summary: dict) -> pd.DataFrame:
    """The challenge's significance tests of a seed summary (golf.stats.summarize), in words."""
    rows = [{"test": TEST_WORDS[k], "t": v["t"], "p": v["p"]} for k, v in summary.items() if k in TEST_WORDS]
    return pd.DataFrame(rows, columns=["test", "t", "p"])


def corpus_of(run_dir: Path) -> str:
    """The corpus a run trained on, from its data folder's prepare.json (official shards: FineWeb)."""
    cfg = read_run_config(run_dir)
    prep = read_json(Path(cfg.get("data_dir", "")) / "prepare.json") if cfg.get("data_dir") else None
    return str(prep.get("corpus")) if prep and prep.get("corpus") else "fineweb"


INDEX_COLUMNS = {"steps": "steps", "prequant_bpb": "val BPB, pre-quant", "plain_bpb": "quantized",
                 "sliding_bpb": "quantized, sliding", "ttt_bpb": "quantized, TTT", "ttt_loss": "TTT loss (nats)",
                 "bytes_model": "artifact bytes", "bytes_total": "artifact + code bytes", "report": "report"}


def render_study_index(study_dir: str | Path, stage: str = "ttt") -> Path:
    """``STUDY/index.html``: every run linked, the seed table, the tests in words, #1533's seeds beside."""
    from golf.stats import PR1533_TTT_BPB, PR1533_TTT_LOSS, collect_runs, summarize

    study_dir = Path(study_dir)
    require_report_libs()
    runs = sorted((p.parent for p in study_dir.glob(f"*/{CONFIG}")), key=lambda p: p.name)
    record = read_json(study_dir / STUDY_PLAN) or {}
    cells = [_md(f"# Study `{study_dir.name}`\n\nparams `{record.get('params_file', '–')}` · overrides "
                 f"`{' '.join(record.get('overrides', [])) or 'none'}` · seeds {record.get('seeds', '–')} · "
                 f"rendered {_dt.datetime.now().isoformat(timespec='seconds')}")]
    for line in record.get("failures", []):
        cells.append(_md(f"**Failed:** {html.escape(line)}"))
    if not runs:
        cells.append(_md("No run has trained yet."))
        return render(cells, study_dir / "index.html", f"golf study {study_dir.name}")
    df = collect_runs(runs)
    df = df.assign(_seed=pd.to_numeric(df["seed"], errors="coerce")).sort_values(["_seed", "run"]).drop(columns="_seed")
    df["report"] = [f'<a href="{r}/{REPORT}">report</a>' if RunDir(study_dir / r).report.exists()
                    else "–" for r in df["run"]]
    cols = [c for c in ["run", "seed", "steps", "prequant_bpb", "plain_bpb", "sliding_bpb", "ttt_bpb",
                        "ttt_loss", "bytes_model", "bytes_total", "report"] if c in df]
    shown = df[cols].rename(columns=INDEX_COLUMNS)
    if "seed" in df:
        shown["seed"] = [str(int(v)) if pd.notna(v) else "–" for v in df["seed"]]
    for col in ("bytes_model", "bytes_total"):  # whole bytes, grouped; none (no artifact, or a bound) a dash
        if col in df:
            shown[INDEX_COLUMNS[col]] = [f"{int(v):,}" if v is not None and pd.notna(v) else "–" for v in df[col]]
    cells += [_md("## Runs"), _output_cell({"text/html": shown.to_html(index=False, escape=False, border=0,
                                                                       na_rep="–", float_format="{:.5f}".format)})]
    from golf.studies import check_study, newest_config_runs, study_runs

    scored = study_runs(study_dir, stage)
    try:
        check_study(study_dir, scored, stage)
    except GolfError as exc:  # a folder of mixed runs (outputs/lab): test the newest run's config only
        scored = newest_config_runs(scored, stage)
        cells.append(_md(f"**Not one study:** {html.escape(str(exc).split('; a study')[0])}. The tests below take the "
                         f"runs of the newest run's config, one per seed: {', '.join(r.name for r in scored)}."))
        df = df[df["run"].isin([r.name for r in scored])]
    corpus = sorted({corpus_of(r) for r in runs})
    on_fineweb = corpus == ["fineweb"]
    ref = pd.DataFrame({"seed": [42, 314, 999, 1337, 7], "ttt_bpb": PR1533_TTT_BPB, "ttt_loss": PR1533_TTT_LOSS})
    note = "" if on_fineweb else (f"\n\n**These are FineWeb figures; this study ran on {', '.join(corpus)}, so "
                                  "the tests below only show the format, not a result.**")
    cells += [_md("## The record's logged seeds (#1533, 8xH100, FineWeb)" + note),
              _table(ref.rename(columns=INDEX_COLUMNS))]
    summary = summarize(df, stage)
    if summary.get("n", 0):
        cells.append(_md(f"## Tests on the {STAGE_LABELS.get(stage, stage)} losses (n = {summary['n']})\n\n"
                         f"mean BPB {summary['mean_bpb']:.5f}, sample std "
                         f"{'– (one seed)' if summary['n'] < 2 else format(summary['std_bpb_sample'], '.5f')}; "
                         f"mean loss {summary['mean_loss']:.5f} nats."))
        cells.append(_table(tests_table(summary)))
        cells.append(_md("A p-value below 0.01 is what the challenge asks of a new record; with fewer than two "
                         "seeds no test is possible (nan)."))
    if (study_dir / "seed_analysis.png").is_file():
        cells.append(_figure(study_dir / "seed_analysis.png"))
    cells.append(_md("## Files\n" + _links(study_dir, ["seed_analysis.csv", "seed_analysis.ipynb", STUDY_PLAN])))
    return render(cells, study_dir / "index.html", f"golf study {study_dir.name}")


