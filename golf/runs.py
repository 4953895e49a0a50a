"""The run folder, golf's central contract: the files a run holds, its stages, its status and its lock.

Every module reads and writes a run through :class:`RunDir` (one folder per run);
no other module spells a run file's name. A run is written in stages: ``golf train`` (config.yaml,
environment.json, train.log, metrics.jsonl, model.pt, train_summary.json), ``golf quantize`` (the
artifact and quant_budget.json), ``golf evaluate`` (one ``eval_<mode>.json`` a mode), and the report
(report.html, plots/, tables/). A lock file marks a training under way; one left behind by a process
that is gone marks an interrupted run, which is kept as it is and never trained into again.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from golf.config import EVAL_MODES
from golf.runtime import GolfError, _pid_alive

# --- the files of a run --------------------------------------------------------------------------
CONFIG = "config.yaml"  # the resolved config training ran with (golf.config.save_config)
RUN_INFO = "run.json"  # how golf train was called: params file, overrides, world size
ENVIRONMENT = "environment.json"  # code version, library versions, GPUs, data and tokenizer hashes
CODE_DIFF = "code.diff"  # git diff HEAD of the code training ran, when it differs from its commit
TRAIN_LOG = "train.log"
METRICS = "metrics.jsonl"  # one JSON line per logged step
MODEL = "model.pt"  # the post-EMA weights
SUMMARY = "train_summary.json"  # training's result: steps, prequant eval, model.pt's sha256
ARTIFACT = "final_model.int6.ptz"  # the quantized, compressed model (the submission's bytes)
QUANT_BUDGET = "quant_budget.json"  # the artifact's bytes, sha256 and fit to the budget
QUANTIZE_CONFIG = "quantize_config.yaml"  # the settings that made the artifact
QUANTIZE_LOG = "quantize.log"
REPORT = "report.html"
CONSOLE = "console.log"  # a notebook's children's full console
COPIED_FROM = "copied_from.json"  # a study arm's copy of its twin's trained run: where from
LOCK = ".golf.lock"  # holds the pid of the training under way
PLOTS, TABLES = "plots", "tables"
RUN_NOTEBOOKS = ("train", "quantize", "ttt_eval")  # executed copies of the run notebooks
STUDY_PLAN = "study.json"  # a study folder's plan (golf.study)
COMPARE_DIR = "compare"  # a multi-arm study's comparison, beside its arms



def eval_name(mode: str, raw: bool = False) -> str:
    """``eval_<mode>.json`` (of the artifact), ``eval_<mode>_raw.json`` (of model.pt)."""
    return f"eval_{mode}{'_raw' if raw else ''}.json"


def eval_log_name(mode: str, raw: bool = False) -> str:
    """``eval_<mode>.log``, ``eval_<mode>_raw.log``: the log beside each result."""
    return f"eval_{mode}{'_raw' if raw else ''}.log"


# The stage table: stage -> (result file, the challenge logs' label, openai/parameter-golf).
STAGES: dict[str, tuple[str, str]] = {
    "prequant": (SUMMARY, "pre-quantization post-ema"),
    "plain": (eval_name("plain"), "quantized"),
    "sliding": (eval_name("sliding"), "quantized_sliding_window"),
    **{m: (eval_name(m), f"quantized_{m}") for m in EVAL_MODES if m not in ("plain", "sliding")},
}
STAGE_FILES = {stage: name for stage, (name, _) in STAGES.items()}
STAGE_LABELS = {stage: label for stage, (_, label) in STAGES.items()}
# Files that make a folder a golf run: a folder holding any of them is never trained into again.
RUN_FILES = (CONFIG, METRICS, TRAIN_LOG, ENVIRONMENT, SUMMARY, MODEL, ARTIFACT, QUANT_BUDGET)
# What golf train leaves in a run folder (and hessians_rank*.pt): what a twin arm copies.
TRAINED_FILES = (MODEL, CONFIG, RUN_INFO, ENVIRONMENT, TRAIN_LOG, METRICS, SUMMARY)
# Files made from the artifact: moved aside (superseded/NNN/) beside a new one, results and their logs.
DERIVED_FROM_ARTIFACT = (QUANT_BUDGET, QUANTIZE_CONFIG, f"{TABLES}/quant_tensors.csv",
                         *(eval_name(m) for m in EVAL_MODES), *(eval_log_name(m) for m in EVAL_MODES))
LINKED_FILES = (TRAIN_LOG, QUANTIZE_LOG, *(eval_log_name(m) for m in ("plain", "sliding", "ttt")), CONSOLE, CONFIG,
                ENVIRONMENT, METRICS, *(f"{n}.ipynb" for n in RUN_NOTEBOOKS))  # what a report links
HEAVY_SUFFIXES = (".pt", ".ptz")  # weights, Hessians, artifacts: rebuilt by rerunning, too big to move


class RunDir:
    """One run folder: its files' paths, its config, its status, its lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    # paths of the run's files
    config_file = property(lambda self: self.path / CONFIG)
    run_info = property(lambda self: self.path / RUN_INFO)
    environment = property(lambda self: self.path / ENVIRONMENT)
    code_diff = property(lambda self: self.path / CODE_DIFF)
    train_log = property(lambda self: self.path / TRAIN_LOG)
    metrics = property(lambda self: self.path / METRICS)
    model = property(lambda self: self.path / MODEL)
    summary = property(lambda self: self.path / SUMMARY)
    artifact = property(lambda self: self.path / ARTIFACT)
    quant_budget = property(lambda self: self.path / QUANT_BUDGET)
    quantize_config = property(lambda self: self.path / QUANTIZE_CONFIG)
    quantize_log = property(lambda self: self.path / QUANTIZE_LOG)
    report = property(lambda self: self.path / REPORT)
    console = property(lambda self: self.path / CONSOLE)
    copied_from = property(lambda self: self.path / COPIED_FROM)
    lock = property(lambda self: self.path / LOCK)

    def eval_result(self, mode: str, raw: bool = False) -> Path:
        return self.path / eval_name(mode, raw)

    def eval_log(self, mode: str, raw: bool = False) -> Path:
        return self.path / eval_log_name(mode, raw)

    def result(self, stage: str) -> Path:
        """The file holding ``stage``'s result (the stage table; any eval mode)."""
        return self.path / STAGE_FILES.get(stage, eval_name(stage))

    def plot(self, name: str) -> Path:
        return self.path / PLOTS / name

    def table(self, name: str) -> Path:
        return self.path / TABLES / name

    def notebook(self, name: str) -> Path:
        return self.path / f"{name}.ipynb"

    def hessians(self, rank: int) -> Path:
        return self.path / f"hessians_rank{rank}.pt"

    def hessian_files(self) -> list[Path]:
        return sorted(self.path.glob("hessians_rank*.pt"))

    # what the run holds
    def config(self, name: str = CONFIG) -> dict[str, Any]:
        """The run's config.yaml (or ``name``) as a mapping ({} where there is none); a damaged one is a
        GolfError naming it."""
        import yaml

        path = self.path / name
        if not path.is_file():
            return {}
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise GolfError(f"{str(path)!r} is not valid YAML ({type(exc).__name__}): the run folder is damaged "
                            f"(golf wrote {name} as YAML key: value lines)") from None
        if not isinstance(values, dict):
            raise GolfError(f"{str(path)!r} is not a mapping of key: value: the run folder is damaged")
        return values

    def files(self) -> list[str]:
        """The golf files the folder holds (empty for a fresh folder)."""
        found = [n for n in RUN_FILES if (self.path / n).exists()]
        return found + sorted(p.name for p in self.path.glob("eval_*.json"))

    def lock_owner(self) -> tuple[int, bool]:
        """The pid in the lock (0 where there is none, or it holds no pid yet) and whether that process
        is alive: a live one is training here, a dead one left an interrupted run."""
        text = self.lock.read_text().strip() if self.lock.is_file() else ""
        pid = int(text) if text.isdigit() else 0
        return pid, bool(pid) and _pid_alive(pid)

    def in_use(self) -> bool:
        """A live golf process holds the lock (or has just made it and not yet written its pid)."""
        pid, alive = self.lock_owner()
        return alive or (not pid and self.lock.is_file() and time.time() - self.lock.stat().st_mtime < 60)

    def evaluated(self, modes: tuple[str, ...] | list[str] = ("ttt",)) -> bool:
        return all(self.eval_result(m).is_file() for m in modes)

    def status(self) -> str:
        """'in use', 'interrupted' (a training that did not end: a lock with no process, or files without
        model.pt), 'evaluated' (some eval result), 'quantized', 'trained' or 'empty'."""
        if not self.path.is_dir():
            return "empty"
        if self.lock.exists():
            return "in use" if self.in_use() else "interrupted"
        if any(self.eval_result(m).is_file() for m in EVAL_MODES):
            return "evaluated"
        if self.artifact.is_file():
            return "quantized"
        if self.model.is_file():
            return "trained"
        return "interrupted" if self.files() else "empty"

    # claim and release
    def check_free(self) -> None:
        """Refuse, in one line, a folder that cannot become a new run folder: a file, a study folder, a
        folder in use or holding a run (finished or interrupted). Claims nothing (:meth:`claim` does)."""
        run_dir = self.path
        fresh = "train into a new folder (omit --run-dir for a fresh one)"
        if run_dir.exists() and not run_dir.is_dir():
            raise GolfError(f"run folder {str(run_dir)!r} is a file; expected a folder (or a path that does not exist)")
        runs = sorted(p.parent.name for p in run_dir.glob(f"*/{CONFIG}")) if run_dir.is_dir() else []
        if (run_dir / STUDY_PLAN).is_file() or runs:
            held = f"runs ({', '.join(runs[:3])})" if runs else STUDY_PLAN
            raise GolfError(f"run folder {str(run_dir)!r} is a study folder (it holds {held}): a run goes into a "
                            f"folder of its own, e.g. {str(run_dir / 'run-new')!r}")
        if self.lock.exists():
            pid, alive = self.lock_owner()
            if alive:
                raise GolfError(f"run folder {str(run_dir)!r} is in use by a running golf process (pid {pid})")
            raise GolfError(f"run folder {str(run_dir)!r} holds an interrupted run (its process {pid or '?'} is "
                            f"gone); it is kept as it is: {fresh}")
        found = self.files() if run_dir.is_dir() else []
        if found:
            what = "a finished run" if MODEL in found else "an interrupted run"
            raise GolfError(f"run folder {str(run_dir)!r} holds {what} ({', '.join(found[:3])}); a run folder is "
                            f"never trained into twice: {fresh}")

    def claim(self) -> "RunDir":
        """Make the folder this process's run folder, or refuse with one line saying why.

        A lock file (O_EXCL, holding our pid) keeps two trainings out of one folder; a folder that
        already holds golf files (a finished run, or one that was interrupted) is never trained into
        again, so its config, metrics and model always belong together. :meth:`release` removes the
        lock when training ends; a lock left behind marks an interrupted run.
        """
        self.check_free()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:  # another process claimed it since the check
            self.check_free()
            raise GolfError(f"run folder {str(self.path)!r} is in use by another golf process") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        found = self.files()
        if found:
            self.lock.unlink()
            what = "a finished run" if MODEL in found else "an interrupted run"
            raise GolfError(f"run folder {str(self.path)!r} holds {what} ({', '.join(found[:3])}); a run folder "
                            "is never trained into twice: train into a new folder (omit --run-dir for a fresh one)")
        return self

    def release(self) -> None:
        """Training finished: drop the lock, the folder is now a finished run."""
        self.lock.unlink(missing_ok=True)


# --- numbered folders ---------------------------------------------------------------------------

def new_numbered_dir(base: str | Path, prefix: str = "run") -> Path:
    """Create and return ``base/prefix-NNN``, one past the highest number there (race-free mkdir)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.rsplit("-", 1)[1]) for p in base.glob(f"{prefix}-*") if p.name.rsplit("-", 1)[1].isdigit()]
    n = max(taken, default=0) + 1
    while True:
        path = base / f"{prefix}-{n:03d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def new_run_dir(root: str | Path, study: str = "default") -> Path:
    """Create and claim a fresh numbered run folder ``root/study/run-NNN``."""
    return RunDir(new_numbered_dir(Path(root) / study)).claim().path


def seed_dirs(study_dir: Path, seed: int) -> list[Path]:
    """A study's folders of ``seed``: ``seedS``, then the retries ``seedS-2``, ``seedS-3`` ..., in order."""
    pat = re.compile(rf"seed{seed}(-\d+)?$")
    dirs = [p for p in study_dir.iterdir() if p.is_dir() and pat.match(p.name)] if study_dir.is_dir() else []
    return sorted(dirs, key=lambda p: int(p.name.rsplit("-", 1)[1]) if "-" in p.name else 1)


def _seed_claim(study_dir: Path, seed: int) -> Path:
    return study_dir / f".seed{seed}.claim"


def claim_seed(study_dir: Path, seed: int) -> int | None:
    """Take a study's seed for this process before it picks the seed's folder (an exclusive create, so two
    studies never both start it): None, or the pid of the live process that holds it. A claim whose
    process is gone is taken over; :func:`release_seed` drops it."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = _seed_claim(study_dir, seed)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                return pid
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return None
    return None


def release_seed(study_dir: Path, seed: int) -> None:
    _seed_claim(study_dir, seed).unlink(missing_ok=True)


def fresh_seed_dir(study_dir: Path, seed: int) -> Path:
    """Create the seed's next folder: ``seedS`` the first time, ``seedS-N`` after a run that is kept."""
    study_dir.mkdir(parents=True, exist_ok=True)
    n = len(seed_dirs(study_dir, seed)) + 1
    while True:
        path = study_dir / (f"seed{seed}" if n == 1 else f"seed{seed}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
