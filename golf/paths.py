"""One rule for paths: a relative path names a file under the project root.

The project root is the folder holding ``params/`` and ``notebooks/``. It is found the same way
in the CLI, a Jupyter kernel (whose folder is ``notebooks/``) and the child processes golf
starts, whatever the current directory:

1. ``GOLF_HOME``, if set (golf sets it for every child it starts);
2. else the nearest folder, from the current one upwards, holding ``params/`` and ``notebooks/``;
3. else the source checkout golf is imported from (an editable install);
4. else the current folder (a wheel install used outside any checkout: the bundled notebooks
   and params are then read from the installed copies, see :func:`bundled`).

On the command line, a path written from the current folder (``./x``, ``../x``) means that file, as
in a shell, and so does one that exists there only (:func:`resolve_typed`).

Usage::

    resolve("params/demo.yaml")        # -> /path/to/project/params/demo.yaml, from any folder
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HOME_VAR = "GOLF_HOME"
_CHECKOUT = Path(__file__).resolve().parent.parent


def _is_project(folder: Path) -> bool:
    return (folder / "params").is_dir() and (folder / "notebooks").is_dir()


def project_root() -> Path:
    home = os.environ.get(HOME_VAR)
    if home:
        return Path(home).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if _is_project(folder):
            return folder
    if _is_project(_CHECKOUT):
        return _CHECKOUT
    return here


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: ``~`` expanded, relative paths taken from the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def relative_hint(given: str | os.PathLike) -> str:
    """For a "does not exist" error: how a relative path was read (empty for an absolute one)."""
    if Path(given).expanduser().is_absolute():
        return ""
    return f" (a relative path starts at the project root, {project_root()}; give an absolute path for one elsewhere)"


def bundled(kind: str, name: str) -> Path:
    """``notebooks/NAME`` or ``params/NAME``: the project's copy, else the one a wheel installed."""
    own = project_root() / kind / name
    if own.exists():
        return own
    installed = Path(sys.prefix) / "share" / "golf" / kind / name
    return installed if installed.exists() else own


def resolve_params_file(path: str | os.PathLike) -> Path:
    """A params file by the one rule; ``params/NAME`` missing from the project is the bundled one."""
    p = resolve(path)
    rel = Path(path)
    if not p.exists() and not rel.is_absolute() and rel.parts[:1] == ("params",) and len(rel.parts) == 2:
        return bundled("params", rel.name)
    return p


def resolve_typed(path: str, params: bool = False, read: bool = True) -> tuple[Path, str | None]:
    """A path typed on the command line: one that starts with ``./`` or ``../`` names a file from the
    current folder, as a shell reads it, and so does a path golf ``read``s that exists there only (a place
    golf writes to keeps the one rule); any other relative path follows the one rule. Returns the path and,
    where the current folder holds another file of that name, a note saying which one is read."""
    if path.startswith(("./", "../")) or path in (".", ".."):
        return Path(os.path.abspath(path)), None
    chosen = resolve_params_file(path) if params else resolve(path)
    here = Path(path).expanduser()
    if not here.is_absolute() and here.exists() and os.path.abspath(here) != os.path.abspath(chosen):
        if read and not chosen.exists():  # only the current folder has what is read: no doubt which is meant
            return Path(os.path.abspath(here)), None
        return chosen, (f"{path} is {'read from' if read else 'written under'} the project root ({chosen}), not "
                        f"the current folder: give ./{path} for the one here")
    return chosen, None


def outputs_root() -> Path:
    return project_root() / "outputs"


def child_env() -> dict[str, str]:
    """The environment of a child golf process: the same root, unbuffered output."""
    return {**os.environ, HOME_VAR: str(project_root()), "PYTHONUNBUFFERED": "1"}
