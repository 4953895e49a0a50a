"""`golf compare`: two tiny studies side by side; its statistics against scipy's."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from golf.cli import main as golf_main
from golf.compare import compare
from golf.compare_tables import welch
from golf.config import Config
from golf.runtime import GolfError

BASE = [1.2100, 1.2150, 1.2080, 1.2120]
ABLATION = [1.1990, 1.2040, 1.2010]


def _study(root: Path, name: str, bpbs: list[float], **keys) -> Path:
    """A study folder of finished runs, each with the files golf leaves (config, metrics, results)."""
    study = root / name
    for i, bpb in enumerate(bpbs):
        run = study / f"seed{i}"
        run.mkdir(parents=True)
        cfg = {**Config().to_dict(), "seed": i, **keys}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        rows = [{"step": s, "train_loss": 5.0 - 0.1 * s + 0.01 * i, "tokens_per_s": 1000.0 + i, "looping": s > 3,
                 "lr_mult": 1.0, "step_ms": 10.0, "peak_mem_mib": 0.0, "train_ms": 10.0 * s} for s in range(1, 8)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "train_summary.json").write_text(json.dumps({"steps": 7, "prequant_post_ema":
                                                            {"val_loss": 3.0, "val_bpb": bpb + 0.01}}))
        (run / "eval_ttt.json").write_text(json.dumps({"val_loss": bpb * 2.58, "val_bpb": bpb, "seconds": 1.0}))
        (run / "quant_budget.json").write_text(json.dumps({"model_bytes": 14_980_000 + i, "total": 15_000_000 + i,
                                                            "limit": 16_000_000}))
    return study


def test_welch_matches_scipy_and_its_interval_covers_the_difference():
    w = welch(np.array(ABLATION), np.array(BASE))
    ref = sps.ttest_ind(ABLATION, BASE, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic, rel=1e-12) and w["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert w["diff"] == pytest.approx(np.mean(ABLATION) - np.mean(BASE))
    ci = ref.confidence_interval(0.95)  # scipy's own Welch interval
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_golf_compare_writes_table_plot_and_html(tmp_path, capsys):
    base = _study(tmp_path, "baseline", BASE)
    abl = _study(tmp_path, "no-ema", ABLATION, ema_decay=0.9)
    out = tmp_path / "cmp"
    assert golf_main(["compare", str(base), str(abl), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ema_decay" in printed and str(out / "compare.html") in printed
    table = pd.read_csv(out / "compare.csv")
    assert list(table["study"]) == ["baseline", "no-ema"] and list(table["n"]) == [4, 3]
    row = table.set_index("study").loc["no-ema"]
    assert row["welch_p"] == pytest.approx(sps.ttest_ind(ABLATION, BASE, equal_var=False).pvalue, rel=1e-9)
    assert row["mean_bpb"] == pytest.approx(np.mean(ABLATION))
    assert row["std_bpb"] == pytest.approx(np.std(ABLATION, ddof=1))
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "compare_diff.png").stat().st_size > 5_000
    runs = pd.read_csv(out / "compare_runs.csv")
    assert len(runs) == 7 and runs["tokens_per_s"].notna().all() and runs["bytes_total"].notna().all()
    stages = pd.read_csv(out / "compare_stages.csv").set_index("study")  # every stage the runs reached, on one page
    stage_cols = [c for c in stages.columns if stages[c].ne("–").any()]
    assert len(stage_cols) == 2  # pre-quantization and TTT: the stages these runs have
    assert float(stages.loc["no-ema", stage_cols[0]]) == pytest.approx(np.mean(ABLATION) + 0.01, abs=1e-4)
    assert float(stages.loc["baseline", stage_cols[1]]) == pytest.approx(np.mean(BASE), abs=1e-4)

    class Page(HTMLParser):
        imgs, text = [], []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.imgs.append(dict(attrs)["src"])

        def handle_data(self, data):
            self.text.append(data)

    page = Page()
    page.feed((out / "compare.html").read_text())
    text = "".join(page.text)
    assert "ema_decay" in text and "Welch" in text and "Every stage" in text and "from golf" not in text
    assert len(page.imgs) == 2 and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert "<script src=" not in (out / "compare.html").read_text()  # readable offline


def test_compare_refuses_a_folder_without_runs(tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert golf_main(["compare", str(empty)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0] and err[0].startswith("golf: error:")


def test_without_the_report_libraries_the_tables_are_kept_and_one_line_says_why(tmp_path, capsys, monkeypatch):
    """A GPU host without the Jupyter stack (the study's compare on the device machines)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nbformat" else real(name, *a))
    base, abl = _study(tmp_path, "base", BASE), _study(tmp_path, "abl", ABLATION)
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.html").write_text("an earlier comparison's page")  # would contradict the new tables
    assert golf_main(["compare", str(base), str(abl), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs nbformat, not installed here" in err[0] and str(out) in err[0]
    assert {p.name for p in out.iterdir()} == {"compare.csv", "compare_runs.csv", "compare_stages.csv", "compare.png",
                                                  "compare_diff.png"}
    assert len(pd.read_csv(out / "compare.csv")) == 2


@pytest.mark.parametrize("stage", ["lora_ttt", "phased_ttt"])
def test_compare_reads_every_evaluation_mode_the_cli_offers(tmp_path, stage):
    base, abl = _study(tmp_path, "baseline", BASE), _study(tmp_path, "frontier", ABLATION, smear_gate=True)
    for study, bpbs in ((base, BASE), (abl, ABLATION)):
        for i, bpb in enumerate(bpbs):
            (study / f"seed{i}" / f"eval_{stage}.json").write_text(json.dumps({"val_loss": 1.0, "val_bpb": bpb - 0.1,
                                                                               "seconds": 1.0}))
    out = tmp_path / "cmp"
    assert golf_main(["compare", str(base), str(abl), "--stage", stage, "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv").set_index("study")
    assert table.loc["frontier", "mean_bpb"] == pytest.approx(np.mean(ABLATION) - 0.1)


def test_compare_of_runs_too_short_for_a_timed_step(tmp_path, capsys):
    """Runs whose only logged step is the first (no tok/s) and one without an artifact still compare."""
    base, abl = _study(tmp_path, "baseline", BASE), _study(tmp_path, "short", ABLATION)
    for run in abl.glob("seed*"):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        (run / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")  # step 1 is the compile, not timed
    (abl / "seed0" / "quant_budget.json").unlink()
    bound = json.loads((abl / "seed1" / "quant_budget.json").read_text())  # quantize used the code's upper bound
    (abl / "seed1" / "quant_budget.json").write_text(json.dumps({**bound, "total": 15_446_674, "code_bytes_exact": False}))
    out = tmp_path / "cmp"
    assert golf_main(["compare", str(base), str(abl), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "compare_runs.csv").set_index("run")
    assert runs.loc[[f"short/seed{i}" for i in range(3)], "tokens_per_s"].isna().all()
    assert pd.isna(runs.loc["short/seed0", "bytes_total"]) and runs.loc["baseline/seed0", "bytes_total"] == 15_000_000
    # a bound is no size: the artifact's bytes are shown, artifact + code only where counted exactly
    assert pd.isna(runs.loc["short/seed1", "bytes_total"]) and runs.loc["short/seed1", "bytes_model"] == 14_980_001
    assert pd.read_csv(out / "compare.csv").set_index("study").loc["short", "bytes_total"] == 15_000_002
    assert "upper bound" in (out / "compare.html").read_text()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "None" not in captured.out  # a missing tok/s prints <NA>
    assert pd.isna(pd.read_csv(out / "compare.csv").set_index("study").loc["short", "tokens_per_s"])


def test_compare_names_a_run_without_the_stage_and_a_folder_given_twice(tmp_path, capsys):
    base = _study(tmp_path, "baseline", BASE)
    run = base / "seed0"
    assert golf_main(["compare", str(run), str(base / "seed1"), "--stage", "sliding"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"golf evaluate --run-dir '{run}' --mode sliding" in err[0]
    assert golf_main(["compare", str(run), str(run), "--names", "a", "b"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "given more than once" in err[0]


def test_compare_never_writes_into_a_run_or_study_folder(tmp_path, capsys):
    base, abl = _study(tmp_path, "baseline", BASE), _study(tmp_path, "abl", ABLATION)
    run = base / "seed0"  # holds config.yaml: a run folder
    before = sorted(p.name for p in run.iterdir())
    assert golf_main(["compare", str(base), str(abl), "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a run folder" in err[0]
    assert sorted(p.name for p in run.iterdir()) == before
    out = tmp_path / "cmp"
    for _ in range(2):  # a comparison folder is redrawn in place
        assert golf_main(["compare", str(base), str(abl), "--out", str(out)]) == 0


def test_a_kernel_switch_that_could_not_run_is_marked_in_the_keys_table(tmp_path, capsys):
    base = _study(tmp_path, "baseline", BASE)
    asked = _study(tmp_path, "fused_on_cpu", ABLATION, fused_mlp=True, fused_ce=True)
    for run in asked.glob("seed*"):
        (run / "environment.json").write_text(json.dumps({"kernels_in_effect": {"fused_mlp": False,
                                                                                 "fused_ce": True}}))
    out = tmp_path / "cmp"
    assert golf_main(["compare", str(base), str(asked), "--out", str(out)]) == 0
    keys = compare([base, asked], out_dir=tmp_path / "cmp2")["keys"].set_index("key")
    assert keys.loc["fused_mlp", "fused_on_cpu"] == "True (not in effect: no CUDA/Triton)"
    assert keys.loc["fused_ce", "fused_on_cpu"] == True  # noqa: E712  (it ran: left as it was)


def test_a_fusion_switch_a_stage_left_aside_is_marked_for_that_stage(tmp_path):
    """fused_qkv trained, but LoRA TTT's adapted weights stood it aside: marked for that stage only."""
    base = _study(tmp_path, "baseline", BASE)
    asked = _study(tmp_path, "qkv", ABLATION, fused_qkv=True)
    for study in (base, asked):
        for run in study.glob("seed*"):
            (run / "environment.json").write_text(json.dumps({"kernels_in_effect": {"fused_qkv": study == asked}}))
            (run / "eval_lora_ttt.json").write_text(json.dumps({"val_loss": 3.0, "val_bpb": 1.1, "seconds": 1.0,
                                                                "kernels_in_effect": {"fused_qkv": False}}))
    lora = compare([base, asked], stage="lora_ttt", out_dir=tmp_path / "c1")["keys"].set_index("key")
    assert lora.loc["fused_qkv", "qkv"] == "True (not in effect in lora_ttt)"
    ttt = compare([base, asked], stage="ttt", out_dir=tmp_path / "c2")["keys"].set_index("key")
    assert ttt.loc["fused_qkv", "qkv"] == True  # noqa: E712  (eval_ttt.json records nothing against it)


def test_keys_set_at_quantize_are_the_artifacts_in_its_stages_not_in_prequant(tmp_path):
    """A run quantized with `golf quantize --set lqer_rank=0` (the study's quantization-only arm): its
    artifact's stages list lqer_rank as differing, the prequant stage (the same training) does not."""
    base = _study(tmp_path, "baseline", BASE, lqer_rank=4)
    requant = _study(tmp_path, "no-lqer", ABLATION, lqer_rank=4)
    for run in requant.glob("seed*"):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        (run / "quantize_config.yaml").write_text(yaml.safe_dump({**cfg, "lqer_rank": 0}))
    ttt = compare([base, requant], stage="ttt", out_dir=tmp_path / "c1")["keys"].set_index("key")
    assert ttt.loc["lqer_rank"].tolist() == [4, 0]
    assert compare([base, requant], stage="prequant", out_dir=tmp_path / "c2")["keys"].empty


def test_every_run_is_listed_by_seed_whatever_order_they_finished_in(tmp_path):
    import os

    study = _study(tmp_path, "s", BASE[:3])
    for age, run in enumerate(sorted(study.glob("seed*"))):  # seed0 finished last, seed2 first
        os.utime(run / "eval_ttt.json", (1e9 - age, 1e9 - age))
    runs = compare([study], out_dir=tmp_path / "c")["runs"]
    assert runs["seed"].tolist() == [0, 1, 2]


def test_the_reports_summary_reads_in_fixed_decimals(tmp_path):
    from golf.compare import readable

    table = compare([_study(tmp_path, "base", BASE), _study(tmp_path, "abl", ABLATION)], out_dir=tmp_path / "c")["summary"]
    shown = readable(table).set_index("study")
    assert shown.loc["base", "mean_bpb"] == f"{np.mean(BASE):.4f}" and shown.loc["base", "diff_vs_baseline"] == "–"
    assert shown.loc["abl", "diff_vs_baseline"] == f"{np.mean(ABLATION) - np.mean(BASE):+.5f}"
    assert shown.loc["abl", "bytes_total"] == f"{table.set_index('study').loc['abl', 'bytes_total']:,.0f}"
    html = (tmp_path / "c/compare.html").read_text()
    assert f"{np.mean(ABLATION) - np.mean(BASE):+.5f}" in html


def test_a_study_sharing_the_baselines_weights_gets_the_paired_test(tmp_path):
    """A quantization-only arm: each run quantized a copy of the baseline's run of its seed. Its small,
    steady shift is lost in Welch's test over the seed spread and found by the paired one."""
    shift = [0.0011, 0.0009, 0.0010, 0.0012]
    base = _study(tmp_path, "frontier", BASE)
    requant = _study(tmp_path, "no-lqer", [b + d for b, d in zip(BASE, shift)])
    for run in requant.glob("seed*"):
        (run / "copied_from.json").write_text(json.dumps({"run": f"/elsewhere/frontier/{run.name}", "arm": "frontier"}))
        (run / "train_summary.json").write_text((base / run.name / "train_summary.json").read_text())  # copied too
    other = _study(tmp_path, "retrained", [b + d for b, d in zip(BASE, shift)])  # the same numbers, own weights
    out = compare([base, requant, other], out_dir=tmp_path / "c")
    table = out["summary"].set_index("study")
    d = np.array(shift)
    res = sps.ttest_rel(np.array(BASE) + d, BASE)
    assert table.loc["no-lqer", "paired_p"] == pytest.approx(res.pvalue) and table.loc["no-lqer", "paired_p"] < 1e-3
    assert table.loc["no-lqer", "welch_p"] > 0.5, "Welch's test does not see it through the seed spread"
    half = sps.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert table.loc["no-lqer", "paired_ci95_low"] == pytest.approx(d.mean() - half)
    assert pd.isna(table.loc["retrained", "paired_p"]), "trained on its own: no pairing claimed"
    assert out["runs"].set_index("run").loc["no-lqer/seed0", "weights"] == "frontier/seed0"
    assert "paired t-test" in (tmp_path / "c/compare.html").read_text()
    # the differences figure: the paired interval (above 0: surely worse, red) where there is one, else Welch's
    ax = out["diff_figure"].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["no-lqer (n=4, paired)", "retrained (n=4)"]
    bars = {round(float(seg[0][1])): (seg[0][0], seg[1][0]) for seg in
            (s for c in ax.collections for s in c.get_segments())}  # y -> (low, high)
    assert bars[1] == pytest.approx((table.loc["no-lqer", "paired_ci95_low"], table.loc["no-lqer", "paired_ci95_high"]))
    assert bars[0] == pytest.approx((table.loc["retrained", "ci95_low"], table.loc["retrained", "ci95_high"]))
    colors = {round(float(c.get_segments()[0][0][1])): c.get_colors()[0][:3] for c in ax.collections}
    assert tuple(colors[1]) == pytest.approx(matplotlib.colors.to_rgb("C3"))  # worse for sure
    assert tuple(colors[0]) == pytest.approx(matplotlib.colors.to_rgb("0.45"))  # the interval spans 0


def test_an_evaluation_on_less_text_is_named_in_the_keys_and_warned_about(tmp_path, caplog):
    """One study evaluated with golf evaluate --set max_val_tokens=4096: its BPB covers other text. The
    key is listed as differing and the report and the log say the scored text differs."""
    base = _study(tmp_path, "full", BASE)
    short = _study(tmp_path, "short", ABLATION)
    for study, tokens, changes in ((base, 32640, {}), (short, 3968, {"max_val_tokens": 4096})):
        for run in study.glob("seed*"):
            result = json.loads((run / "eval_ttt.json").read_text())
            (run / "eval_ttt.json").write_text(json.dumps({**result, "n_tokens": tokens, "config_changes": changes}))
    with caplog.at_level("WARNING", logger="golf"):
        out = compare([base, short], out_dir=tmp_path / "c")
    keys = out["keys"].set_index("key")
    assert keys.loc["max_val_tokens", "short"] == 4096 and keys.loc["max_val_tokens", "full"] != 4096
    assert out["warnings"] and "32,640 tokens in full/seed0" in out["warnings"][0]
    assert "3,968 tokens in short/seed0" in out["warnings"][0]
    assert "different amounts of val text" in caplog.text
    assert "Warning:" in (tmp_path / "c/compare.html").read_text()
    same = compare([base, _study(tmp_path, "again", ABLATION)], out_dir=tmp_path / "c2")
    assert same["warnings"] == []



def test_no_pairing_where_seeds_repeat_differ_or_the_weights_do_not_match(tmp_path):
    base = _study(tmp_path, "base", BASE[:3])
    copies = _study(tmp_path, "copies", [b + 0.001 for b in BASE[:3]])
    for run in copies.glob("seed*"):
        (run / "copied_from.json").write_text(json.dumps({"run": f"/x/base/{run.name}"}))
        (run / "train_summary.json").write_text((base / run.name / "train_summary.json").read_text())
    assert pd.notna(compare([base, copies], out_dir=tmp_path / "c0")["summary"].loc[1, "paired_p"])
    twice = _study(tmp_path, "twice", BASE[:3])  # a baseline whose runs all say seed 1337 (golf train's default)
    for run in twice.glob("seed*"):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": 1337}))
    with pytest.raises(GolfError, match="holds seed 1337 in 3 runs"):  # no study at all, let alone pairs
        compare([twice, copies], out_dir=tmp_path / "c1")
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for name in ("seed0", "seed1"):  # seeds {0, 1} against the baseline's {0, 1, 2}: means over other seeds
        import shutil
        shutil.copytree(copies / name, fewer / name)
    assert "paired_p" not in compare([base, fewer], out_dir=tmp_path / "c2")["summary"]
    (copies / "seed2/train_summary.json").write_text(json.dumps({"prequant_post_ema": {"val_loss": 3.0, "val_bpb": 9.9}}))
    assert "paired_p" not in compare([base, copies], out_dir=tmp_path / "c3")["summary"], "retrained: not the same weights"


def test_a_study_without_the_stage_names_the_stages_it_has(tmp_path, capsys):
    base = _study(tmp_path, "baseline", BASE)
    assert golf_main(["compare", str(base), "--stage", "plain"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its runs have prequant, ttt" in err[0] and "--stage ttt" in err[0]


def test_runs_of_the_same_name_are_labelled_with_their_study(tmp_path):
    a, b = _study(tmp_path, "base", BASE[:2]), _study(tmp_path, "abl", ABLATION[:2])
    result = compare([a / "seed1", b / "seed1"], out_dir=tmp_path / "cmp")
    assert list(result["summary"]["study"]) == ["base/seed1", "abl/seed1"]
    result = compare([a / "seed0", b / "seed1"], out_dir=tmp_path / "cmp")
    assert list(result["summary"]["study"]) == ["seed0", "seed1"]
    x, y = _study(tmp_path / "x", "base", BASE[:2]), _study(tmp_path / "y", "base", ABLATION[:2])
    result = compare([x / "seed1", y / "seed1"], out_dir=tmp_path / "cmp")
    assert list(result["summary"]["study"]) == ["x/base/seed1", "y/base/seed1"]


def test_the_report_explains_the_difference_figure(tmp_path):
    result = compare([_study(tmp_path, "base", BASE), _study(tmp_path, "abl", ABLATION)], out_dir=tmp_path / "cmp")
    page = (result["out_dir"] / "compare.html").read_text()
    assert page.count("data:image/png;base64,") >= 2  # the difference figure and the per-seed one
    assert "Red: surely worse" in page and "else Welch" in page


def test_a_lab_folder_of_mixed_runs_is_no_study(tmp_path, monkeypatch, capsys):
    """outputs/lab's notebook runs are not a study: repeated seeds or mixed configs are refused in one
    line by compare and the seed analysis, and the notebooks' default never picks that folder."""
    from golf import notebooks

    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir(), (tmp_path / "notebooks").mkdir()
    base = _study(tmp_path / "outputs", "demo", BASE)
    lab = _study(tmp_path / "outputs", "lab", [1.3, 1.3, 1.3])
    for run in lab.iterdir():  # three Run Alls of the default: seed 42 each time
        (run / "config.yaml").write_text(yaml.safe_dump({**Config().to_dict(), "seed": 42}))
    assert golf_main(["compare", str(base), str(lab)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds seed 42 in 3 runs" in err and "counts each seed once" in err
    other = _study(tmp_path / "outputs" / "x", "mixed", [1.2, 1.25])
    cfg = yaml.safe_load((other / "seed1" / "config.yaml").read_text())
    (other / "seed1" / "config.yaml").write_text(yaml.safe_dump({**cfg, "iterations": 5}))
    with pytest.raises(GolfError, match=r"holds runs of 2 different configs \(seed0 and seed1 differ: iterations"):
        compare([base, other])
    with pytest.raises(GolfError, match="holds seed 42 in 3 runs"):
        notebooks.seed_analysis(str(lab))
    assert notebooks.pick_studies([], 2) == [base]  # the newest *studies*: lab is none
    # one seed each, one config: a study, and a run given alone is never checked against others
    assert golf_main(["compare", str(base), str(lab / "seed0")]) == 0


def test_compare_of_two_runs_prints_integers_and_links_the_reports(tmp_path, capsys):
    """golf compare RUN RUN: integer keys as integers, no numpy warning, the test named, each run's report
    linked from compare.html, and the tokens/s caveat."""
    import warnings

    a, b = _study(tmp_path, "a", BASE[:1], iterations=300), _study(tmp_path, "b", ABLATION[:1], iterations=500,
                                                                       ema_decay=0.9)
    (a / "seed0" / "report.html").write_text("<html></html>")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert golf_main(["compare", str(a / "seed0"), str(b / "seed0"), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "300.000" not in printed and " 300 " in printed + " " and "test: Welch's t-test" in printed
    page = (tmp_path / "c" / "compare.html").read_text()
    assert 'href="../a/seed0/report.html"' in page and "tokens/s is each run" in page and "no pair by itself" in page


def test_study_index_sorts_seeds_and_a_lab_folder_tests_one_config(tmp_path, monkeypatch, capsys):
    import os
    import time

    from golf import notebooks
    from golf.report import render_study_index

    monkeypatch.setenv("GOLF_HOME", str(tmp_path))
    (tmp_path / "params").mkdir(), (tmp_path / "notebooks").mkdir()
    lab = _study(tmp_path / "outputs", "lab", [1.30, 1.31, 1.32])
    for i, (run, seed, iters) in enumerate(zip(sorted(lab.iterdir()), [314, 42, 42], [None, None, 5])):
        cfg = {**yaml.safe_load((run / "config.yaml").read_text()), "seed": seed, **({"iterations": iters} if iters else {})}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        os.utime(run / "eval_ttt.json", (time.time() + i, time.time() + i))  # seed0 oldest, seed2 newest
    budget = json.loads((lab / "seed1" / "quant_budget.json").read_text())  # a bound: no total shown
    (lab / "seed1" / "quant_budget.json").write_text(json.dumps({**budget, "code_bytes_exact": False}))
    page = render_study_index(lab).read_text()
    assert page.index(">42<") < page.index(">314<") and "quantized, TTT" in page and "ttt_bpb" not in page
    assert ">14,980,001<" in page and ">15,000,000<" in page and ">None<" not in page and "14980001.0" not in page
    assert "Not one study" in page and "one per seed: seed2" in page
    study, table, _, _ = notebooks.seed_analysis()  # no study yet: the newest config's lab runs, one per seed
    assert study == lab and list(table["run"]) == ["seed2"] and "no study with ttt results yet" in capsys.readouterr().out


def test_a_golf_study_folder_compares_its_arms(tmp_path, capsys):
    """`golf compare STUDY` on a study of arms compares the arms, the plan's first as the baseline."""
    study = tmp_path / "st"
    _study(study, "base", BASE)
    _study(study, "no-ema", ABLATION, ema_decay=0.9)
    (study / "study.json").write_text(json.dumps({"arms": {"base": {}, "no-ema": {}}, "seeds": [0, 1, 2, 3]}))
    out = tmp_path / "cmp"
    assert golf_main(["compare", str(study), "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv")
    assert list(table["study"]) == ["base", "no-ema"] and list(table["n"]) == [4, 3]
    assert table.set_index("study").loc["no-ema", "mean_bpb"] == pytest.approx(np.mean(ABLATION))
    assert "is a study of 2 arms" in capsys.readouterr().err
    # an arm with no result yet is left out, said; a baseline without one is refused; no folder twice
    (study / "study.json").write_text(json.dumps({"arms": {"base": {}, "no-ema": {}, "late": {}}}))
    (study / "late").mkdir()
    assert golf_main(["compare", str(study), "--out", str(out)]) == 0
    assert list(pd.read_csv(out / "compare.csv")["study"]) == ["base", "no-ema"]
    assert "late have no ttt result yet, left out" in capsys.readouterr().err
    assert golf_main(["compare", str(study / "base"), str(study), "--out", str(out)]) == 1
    assert "more than once" in capsys.readouterr().err
    (study / "study.json").write_text(json.dumps({"arms": {"late": {}, "base": {}}}))
    assert golf_main(["compare", str(study), "--out", str(out)]) == 1
    assert "baseline arm 'late' has no run with a ttt result" in capsys.readouterr().err
