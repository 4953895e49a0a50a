"""JupyterLab leaves the checkout clean (issue 35 item 4): a tracked notebook saved after Run All is
stored as committed, so git status stays empty and runs record git_dirty false."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def _as_lab_leaves_it(nb: dict) -> dict:
    """The notebook after Run All in JupyterLab: outputs, counts, Lab's cell and notebook metadata."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb["cells"]):
        cell["metadata"].update({"execution": {"iopub.status.busy": "2026-01-01T00:00:00Z"}, "scrolled": True})
        if cell["cell_type"] == "code":
            cell["execution_count"] = i
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "run folder: outputs/lab/run-001\n"},
                               {"output_type": "display_data", "metadata": {},
                                "data": {"text/plain": "train  6/6 [00:03<00:00]"}}]
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2", "mimetype": "text/x-python",
                                       "codemirror_mode": {"name": "ipython", "version": 3}}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_lab_saves_of_the_tracked_notebooks_keep_the_checkout_clean(tmp_path, monkeypatch):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    proj = tmp_path / "golf"  # a checkout of the working tree as it is now
    files = _git(REPO, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for name in files:
        if (REPO / name).is_file():
            (proj / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, proj / name)
    _git(proj, "init", "-q")
    _git(proj, "add", "-A")
    _git(proj, "commit", "-qm", "checkout")
    monkeypatch.setenv("GOLF_HOME", str(proj))
    cm = FileContentsManager(root_dir=str(proj), pre_save_hook="golf.lab.strip_on_save")  # as make lab sets it
    (proj / "scratch").mkdir()
    for name in ("train", "compare"):
        ran = _as_lab_leaves_it(nbformat.read(proj / "notebooks" / f"{name}.ipynb", as_version=4))
        for path in (f"notebooks/{name}.ipynb", f"scratch/{name}.ipynb"):
            cm.save({"type": "notebook", "format": "json", "content": copy.deepcopy(ran)}, path)
    assert _git(proj, "status", "--porcelain", "notebooks/") == ""
    kept = nbformat.read(proj / "scratch" / "train.ipynb", as_version=4)  # a notebook elsewhere is left alone
    assert any(c.get("outputs") for c in kept.cells) and "widgets" in kept.metadata
    out = subprocess.run([sys.executable, "-c", "from golf.runtime import code_version; print(code_version())"],
                         cwd=proj, capture_output=True, text=True, check=True)  # the copy's golf, as a run records
    assert "'git_dirty': False" in out.stdout
