"""The lab as a user meets it: JupyterLab with the golf kernel, notebooks under papermill from any
folder, parameters that are config keys, one root for paths, reports without code."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from golf.notebook_params import parameters_source
from conftest import run_papermill

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("train", "quantize", "ttt_eval", "seed_analysis", "compare")


def test_notebooks_are_stored_without_outputs_and_with_the_golf_kernel():
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "golf", name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: stored with outputs"


def test_parameters_cells_list_every_params_key_and_papermill_reads_them():
    """The stored cells are the generated ones, so papermill --help-notebook shows every key its
    command reads, with help: train every key, quantize and ttt_eval their stage's keys."""
    from papermill.translators import PythonTranslator

    from golf.config import config_keys
    from golf.config_stages import stage_keys
    from golf.notebook_params import NOTEBOOK_STAGES

    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert cell.source == parameters_source(name), f"{name}: run python -m golf.notebooks to regenerate"
        names = {p.name for p in PythonTranslator.inspect(cell)}
        if name in ("train", "quantize", "ttt_eval"):
            wanted = set(stage_keys(NOTEBOOK_STAGES[name]) if name in NOTEBOOK_STAGES else config_keys())
            assert wanted - {"seed"} <= names, f"{name}: papermill misses params keys"
            assert not names & (set(config_keys()) - wanted), f"{name}: offers keys its command can't apply"
    train = nbformat.read(REPO / "notebooks" / "train.ipynb", as_version=4)
    params = {p.name: p for p in PythonTranslator.inspect(train.cells[1])}
    assert params["iterations"].inferred_type_name == "int" and "step budget" in params["iterations"].help


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_jupyterlab_with_the_golf_kernel():
    if not (REPO / ".venv" / ".golf-installed").exists():
        pytest.skip("make lab needs the make-installed .venv")
    port, token = _free_port(), "golf-test-token"
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}", f"LAB_ARGS=--IdentityProvider.token={token}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, specs = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=2) as r:
                    specs = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert specs is not None, proc.stdout.read1(10_000).decode() if proc.poll() is not None else "no answer"
        assert "golf" in specs["kernelspecs"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as r:
            listed = {item["name"] for item in json.loads(r.read())["content"]}
        assert {"notebooks", "outputs", "params"} <= listed  # the file browser at the project root: reports open
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}", timeout=5) as r:
            listed = {item["name"] for item in json.loads(r.read())["content"]}
        assert {f"{n}.ipynb" for n in NOTEBOOKS} <= listed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# --- a project of our own: params/ and notebooks/, the demo params at test size ----------------

class _Html(HTMLParser):
    """Tags with their attributes, and the text a reader sees (not the page's scripts and styles)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


@pytest.mark.slow
def test_every_notebook_runs_with_its_defaults_from_notebooks_and_from_elsewhere(lab_project, tmp_path):
    """Run All with defaults, kernel in notebooks/ (as JupyterLab starts it): train, quantize, evaluate,
    seed analysis and compare each succeed and leave their plots; then from another folder."""
    nb_dir = lab_project / "notebooks"
    for name in NOTEBOOKS:
        res = run_papermill(nb_dir / f"{name}.ipynb", tmp_path / f"{name}.out.ipynb", cwd=nb_dir)
        assert res.returncode == 0, f"{name}: {res.stderr[-2000:]}"
    run = lab_project / "outputs" / "lab" / "run-001"
    for plot in ("training.png", "schedule.png", "quant_error.png", "eval_bpb.png"):
        assert (run / "plots" / plot).is_file(), plot
    assert json.loads((run / "eval_ttt.json").read_text())["val_bpb"] > 0
    assert (lab_project / "outputs" / "lab" / "index.html").is_file()
    assert list((lab_project / "outputs" / "compare").glob("compare-*/compare.html"))
    assert not list(nb_dir.glob("*.csv")) and not (nb_dir / "outputs").exists()  # nothing stray beside them

    # the rendered run report: no code, no progress-bar text, the headline table, embedded PNGs
    page = _Html()
    page.feed((run / "report.html").read_text())
    text = "".join(page.text)
    assert "Headline" in text and "quantized_ttt" in text and "bytes" in text
    classes = " ".join(a.get("class") or "" for _, a in page.tags)
    assert "jp-Editor" not in classes and "highlight" not in classes and "jp-InputPrompt" not in classes
    assert "nb.train(" not in text and "import" not in text
    assert not re.search(r"\d+%( of budget)?\|", text) and "\x1b[" not in text and "it/s]" not in text
    assert not [a for t, a in page.tags if t == "script" and a.get("src")]  # nothing loaded from the web
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)

    # from another folder, the root given by GOLF_HOME; a params key by name: -p iterations 4
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_papermill(nb_dir / "train.ipynb", elsewhere / "t.ipynb", cwd=elsewhere, env_home=lab_project,
                     iterations=4)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Passed unknown parameter" not in res.stderr
    second = lab_project / "outputs" / "lab" / "run-002"  # a fresh numbered folder each Run All
    assert json.loads((second / "train_summary.json").read_text())["steps"] == 4
    assert yaml.safe_load((second / "config.yaml").read_text())["iterations"] == 4
    # the rest pick the run just trained; list parameters given as papermill -p text, in both forms
    as_text = {"ttt_eval": {"modes": "plain ttt"},
               "compare": {"studies": "[outputs/lab/run-001, outputs/lab/run-002]", "names": "first second"}}
    for name in NOTEBOOKS[1:]:
        res = run_papermill(nb_dir / f"{name}.ipynb", elsewhere / f"{name}.ipynb", cwd=elsewhere, env_home=lab_project,
                         **as_text.get(name, {}))
        assert res.returncode == 0, f"{name} from elsewhere: {res.stderr[-2000:]}"
    assert json.loads((second / "eval_ttt.json").read_text())["val_bpb"] > 0
    assert not (second / "eval_sliding.json").exists()  # modes "plain ttt": two modes, not nine letters
    newest = max((lab_project / "outputs" / "compare").glob("compare-*"), key=lambda p: p.stat().st_mtime)
    assert list(pd.read_csv(newest / "compare.csv")["study"]) == ["first", "second"]
    assert (second / "report.html").is_file() and (second / "plots" / "eval_bpb.png").is_file()
    assert not (elsewhere / "outputs").exists()  # everything went under the project root


@pytest.mark.parametrize("given, expected", [
    ("[outputs/a, 'outputs/b c']", ["outputs/a", "outputs/b c"]),  # YAML list text (papermill -p)
    ("ema_decay=0 'x=a b'", ["ema_decay=0", "x=a b"]),  # split as a shell does, like --set
    ("outputs/demo", ["outputs/demo"]), ("", []), (None, []), ("[]", []),
    (["a", 2], ["a", "2"]), (("plain", "ttt"), ["plain", "ttt"]), (7, ["7"]),  # papermill: -p names 7
])
def test_list_parameters_accept_papermill_text(given, expected):
    from golf.notebook_params import parameter_list

    assert parameter_list(given, "studies") == expected


@pytest.mark.parametrize("given", ["[a, [b]]", "[a, b", "'unclosed", {"a": 1}])
def test_a_list_parameter_that_is_no_list_is_one_error_naming_it(given):
    from golf.config import ConfigError
    from golf.notebook_params import parameter_list

    with pytest.raises(ConfigError, match="parameter 'studies'"):
        parameter_list(given, "studies")


def test_an_unknown_notebook_key_is_an_error_naming_it(lab_project, tmp_path):
    before = sorted((lab_project / "outputs").glob("lab/run-*"))
    res = run_papermill(lab_project / "notebooks" / "train.ipynb", tmp_path / "t.ipynb", cwd=tmp_path,
                     env_home=lab_project, overrides=["no_such_key=1"])
    assert res.returncode != 0 and "no_such_key" in res.stderr
    assert sorted((lab_project / "outputs").glob("lab/run-*")) == before  # refused before a folder was made


def test_plots_and_report_of_a_run_with_no_training_steps(tmp_path):
    """iterations=0 (warm-up only, or the initial model) is a run too: its figures are empty, not errors."""
    from golf.plots import plot_schedule, plot_training
    from golf.report import render_run_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "val_loss": 6.9, "val_bpb": 3.9, "looping": false}\n')
    (run / "config.yaml").write_text("seed: 1\n")
    (run / "train_summary.json").write_text(json.dumps({"steps": 0, "train_ms": 0.0, "prequant_post_ema":
                                                        {"val_loss": 6.9, "val_bpb": 3.9}}))
    plot_training(run)
    plot_schedule(run)
    page = render_run_report(run).read_text()
    assert "pre-quantization post-ema" in page and (run / "plots" / "training.png").is_file()
