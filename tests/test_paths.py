"""One rule for paths, and run folders that are never trained into twice (issue 12, items 2 and 5)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from golf.cli import PATH_ARGS, _resolve_path_args, build_parser
from golf.cli import main as golf_main
from golf.paths import project_root, resolve
from golf.runs import LOCK as RUN_LOCK, new_run_dir
from golf.runs import RunDir


def claim_run_dir(path):
    return RunDir(path).claim()


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root (params/, notebooks/) and a working folder outside it, the current folder."""
    proj = tmp_path / "proj"
    (proj / "params").mkdir(parents=True)
    (proj / "notebooks").mkdir()
    shutil.copy(REPO / "params" / "record.yaml", proj / "params" / "mine.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("GOLF_HOME", raising=False)
    return proj, elsewhere


def test_the_root_is_found_from_inside_the_project_and_from_golf_home(project, monkeypatch):
    proj, elsewhere = project
    monkeypatch.chdir(proj / "notebooks")  # a Jupyter kernel's folder
    assert project_root() == proj.resolve()
    assert resolve("params/mine.yaml") == proj.resolve() / "params" / "mine.yaml"
    monkeypatch.chdir(elsewhere)
    assert project_root() == REPO  # outside any project: the checkout golf is imported from
    monkeypatch.setenv("GOLF_HOME", str(proj))
    assert project_root() == proj.resolve()
    assert resolve("/abs/x") == Path("/abs/x") and resolve("~/x") == Path.home() / "x"


@pytest.mark.parametrize("argv, attr", [
    (["train", "--params", "params/mine.yaml", "--run-dir", "outputs/x/r"], "run_dir"),
    (["train", "--params", "params/mine.yaml", "--outputs", "outs"], "outputs"),
    (["model-info", "--params", "params/mine.yaml"], "params"),
    (["quantize", "--run-dir", "outputs/x/r"], "run_dir"),
    (["evaluate", "--run-dir", "outputs/x/r", "--mode", "plain"], "run_dir"),
    (["run", "--params", "params/mine.yaml", "--seeds", "1", "--outputs", "outs"], "outputs"),
    (["export-submission", "--run-dir", "r", "--out", "sub"], "out"),
    (["data", "prepare", "--corpus", "c", "--out", "data/d"], "out"),
    (["data", "prepare", "--corpus", "c", "--out", "d", "--tokenizer", "tok.model"], "tokenizer"),
    (["data", "check", "data/d"], "dir"),
    (["compare", "outputs/a", "outputs/b"], "studies"),
])
def test_every_path_option_resolves_against_the_project_root(project, monkeypatch, argv, attr):
    proj, _ = project
    monkeypatch.setenv("GOLF_HOME", str(proj))
    args = build_parser().parse_args(argv)
    _resolve_path_args(args)
    values = getattr(args, attr)
    for value in values if isinstance(values, list) else [values]:
        assert Path(value).is_absolute() and Path(value).is_relative_to(proj.resolve()), (attr, value)
    assert {"params", "run_dir", "outputs", "out", "dir", "tokenizer"} <= set(PATH_ARGS)


def test_params_and_data_paths_inside_a_params_file_use_the_same_root(project, monkeypatch, capsys):
    from golf.config import load_config

    proj, _ = project
    monkeypatch.setenv("GOLF_HOME", str(proj))
    assert golf_main(["model-info", "--params", "params/mine.yaml"]) == 0  # the file exists only in proj
    cfg = load_config("params/mine.yaml", ["data_dir=data/here", "tokenizer_path=tok/t.model"])
    assert cfg.data_dir == str(proj.resolve() / "data" / "here")
    assert cfg.tokenizer_path == str(proj.resolve() / "tok" / "t.model")
    capsys.readouterr()
    assert golf_main(["model-info", "--params", "params/none.yaml"]) == 1
    assert str(proj.resolve() / "params" / "none.yaml") in capsys.readouterr().err


# --- run folders ---------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("files, says", [
    ({"config.yaml": "seed: 1\n", "metrics.jsonl": '{"step": 1}\n'}, "interrupted run"),
    ({"model.pt": "x"}, "finished run"),
    ({"final_model.int6.ptz": "x", "eval_plain.json": "{}"}, "interrupted run"),
    ({RUN_LOCK: "999999999", "config.yaml": "seed: 1\n"}, "interrupted run"),
    ({RUN_LOCK: str(os.getpid())}, "in use"),
])
def test_golf_train_refuses_a_folder_that_holds_a_run(tmp_path, capsys, demo_data, files, says):
    from conftest import tiny_params

    params = tiny_params(tmp_path, demo_data, iterations=1)
    run = tmp_path / "run"
    run.mkdir()
    for name, text in files.items():
        (run / name).write_text(text)
    before = _snapshot(run)
    rc = golf_main(["train", "--params", str(params), "--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and says in err[0] and str(run) in err[0]
    assert _snapshot(run) == before  # nothing the earlier run left was changed or lost


def test_run_dir_that_is_a_file_is_one_clear_line(tmp_path, capsys, demo_data):
    from conftest import tiny_params

    target = tmp_path / "afile"
    target.write_text("mine")
    params = tiny_params(tmp_path, demo_data, iterations=1)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0] and target.read_text() == "mine"


def test_a_claim_is_exclusive_and_fresh_folders_are_numbered(tmp_path):
    a = new_run_dir(tmp_path, "study")
    b = new_run_dir(tmp_path, "study")
    assert (a.name, b.name) == ("run-001", "run-002")
    assert (a / RUN_LOCK).read_text() == str(os.getpid())
    from golf.runtime import GolfError

    with pytest.raises(GolfError, match="in use"):
        claim_run_dir(a)  # a second training into the same folder, while the first runs


def test_a_wheel_install_outside_any_project_finds_the_bundled_params_and_notebooks(tmp_path, monkeypatch):
    """pip install . puts notebooks/ and params/ under PREFIX/share/golf (pyproject's data-files)."""
    import golf.paths as paths
    from golf.config import load_config

    prefix = tmp_path / "prefix"
    for kind in ("params", "notebooks"):
        (prefix / "share" / "golf" / kind).mkdir(parents=True)
    shutil.copy(REPO / "params" / "demo.yaml", prefix / "share" / "golf" / "params" / "demo.yaml")
    (prefix / "share" / "golf" / "notebooks" / "train.ipynb").write_text("{}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("GOLF_HOME", raising=False)
    monkeypatch.setattr(paths, "_CHECKOUT", tmp_path / "site-packages")
    monkeypatch.setattr(paths.sys, "prefix", str(prefix))
    assert project_root() == work.resolve()
    cfg = load_config("params/demo.yaml")
    assert cfg.data_dir == str(work.resolve() / "outputs" / "demo_data")  # outputs stay with the user
    assert paths.bundled("notebooks", "train.ipynb") == prefix / "share" / "golf" / "notebooks" / "train.ipynb"


def test_commands_work_from_the_folder_above_a_clone_named_golf(tmp_path):
    """The checkout is on sys.path (make install's golf-checkout.pth): a folder named golf in the current
    folder (a clone's parent) is not taken for the package, by python -m golf nor by a kernel's import."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "golf").symlink_to(repo, target_is_directory=True)  # `git clone .../golf` seen from above
    env = {k: v for k, v in os.environ.items() if k not in ("GOLF_HOME", "PYTHONPATH")}
    for cmd in ([sys.executable, "-m", "golf", "model-info", "--params", str(repo / "params/demo.yaml")],
                [sys.executable, "-c", "from golf import notebooks as nb; print(nb.train.__name__)"]):
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "train"
