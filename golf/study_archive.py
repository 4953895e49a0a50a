"""A study folder packed into one archive and unpacked again (``golf study --archive / --restore``), for
machines that keep nothing between calls: the plan, the comparison and the finished runs, no weights.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from golf.runs import HEAVY_SUFFIXES
from golf.runtime import GolfError
from golf.study_job import finished


def archive_study(path: Path, study_dir: Path, modes) -> tuple[int, int]:
    """Pack the plan, the comparison and the finished runs (no weights or artifacts) of ``study_dir``
    into ``path`` (atomically). Returns (finished runs packed, unfinished runs left out)."""
    root = study_dir.parent
    packed = left = 0
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for f in sorted(study_dir.rglob("*")):
                if not f.is_file() or f.suffix in HEAVY_SUFFIXES:
                    continue
                run = next((p for p in f.relative_to(study_dir).parents if p.name.startswith("seed")), None)
                if run is not None and not finished(study_dir / run, modes, notebooks=False):
                    continue
                info = tar.gettarinfo(f, arcname=str(f.relative_to(root)))
                # a twin's linked file as a file of its own (restore takes plain files only)
                info.type, info.linkname, info.size = tarfile.REGTYPE, "", f.stat().st_size
                with open(f, "rb") as fh:
                    tar.addfile(info, fh)
            runs = [p for p in study_dir.rglob("seed*") if p.is_dir()]
            packed = sum(finished(p, modes, notebooks=False) for p in runs)
            left = len(runs) - packed
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return packed, left


def restore_study(path: Path, study_dir: Path) -> None:
    """Unpack an archive of :func:`archive_study` beside ``study_dir``; refuse one of another study, or
    one that would overwrite a file here."""
    if not path.is_file():
        raise GolfError(f"--restore {str(path)!r}: no such file")
    root = study_dir.parent
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if not parts or parts[0] != study_dir.name or ".." in parts or not (m.isfile() or m.isdir()):
                raise GolfError(f"--restore {str(path)!r}: {m.name!r} is not a file of study {study_dir.name!r}")
            if m.isfile() and (root / m.name).exists():
                raise GolfError(f"--restore {str(path)!r}: {root / m.name} exists here already; restore into an "
                                "outputs folder without it")
        tar.extractall(root, members=members, filter="data")
