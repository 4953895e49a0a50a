"""JupyterLab that leaves the checkout clean: the tracked notebooks are saved without outputs or run metadata.

``make lab`` installs :func:`strip_on_save` as the contents manager's pre-save hook
(``--FileContentsManager.pre_save_hook=golf.lab.strip_on_save``). A notebook saved into the project's ``notebooks/`` folder keeps its
cells' sources and tags only: no outputs, execution counts, widget state or Lab's metadata, so Run All
and autosave leave ``git status`` as it was (runs then record ``git_dirty: false``). The results are in
the run folders and their ``report.html``; notebooks saved elsewhere are left as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

KEPT_CELL_METADATA = ("tags",)  # papermill finds the parameters cell by its tag


def is_tracked_notebook(os_path: str | Path) -> bool:
    """A notebook of the project's own ``notebooks/`` folder (the ones git tracks)."""
    from golf.paths import project_root

    return Path(os_path).resolve().parent == (project_root() / "notebooks").resolve()


def strip_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook as the repository stores it: sources and tags, no outputs or run metadata (in place)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell["metadata"] = {k: v for k, v in (cell.get("metadata") or {}).items() if k in KEPT_CELL_METADATA and v}
    meta = nb.get("metadata") or {}
    nb["metadata"] = {**({"kernelspec": meta["kernelspec"]} if "kernelspec" in meta else {}),
                      "language_info": {"name": (meta.get("language_info") or {}).get("name", "python")}}
    return nb


def strip_on_save(model: dict[str, Any], path: str, contents_manager: Any = None, **kwargs: Any) -> None:
    """Jupyter's pre-save hook: strip a tracked notebook before it is written."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    root = getattr(contents_manager, "root_dir", ".")
    if is_tracked_notebook(Path(root) / path.lstrip("/")):
        strip_notebook(model["content"])
