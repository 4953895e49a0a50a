"""One (arm, seed) job as a worker runs it, by one resume rule: a seed with a finished run is kept; a run
killed or failed is kept as it is, and the seed starts again in a fresh folder (``seedS-2`` ...), never the
old one (from the old one's trained weights where its training ended). A twin arm's job links its lead's
trained run (``copied_from.json``), then quantizes and evaluates."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from golf.runs import RUN_NOTEBOOKS, TRAINED_FILES, RunDir, claim_seed, fresh_seed_dir, release_seed, seed_dirs
from golf.runtime import GolfError, atomic_write_json

log = logging.getLogger("golf")


@dataclass
class Job:
    """One (arm, seed) as a worker runs it; plain data, so it travels to a subprocess or a Ray worker."""
    arm: str
    seed: int
    arm_dir: str
    params: str
    overrides: list[str]
    modes: list[str] | None  # None: the ttt_eval notebook's own modes (golf run)
    nproc: int = 1
    kernel: str | None = None
    notebooks: bool = True  # False: golf train / quantize / evaluate without Jupyter (a bare GPU host)
    source: str | None = None  # a twin's trained run to copy instead of training
    quant_changes: list[str] = field(default_factory=list)
    deadline: float = 0.0  # wall time after which the job does not start (0: none)
    label: str = ""


def finished(run_dir: Path, modes: list[str] | None, notebooks: bool = True) -> bool:
    """Every mode evaluated (and, through the notebooks, the report rendered)."""
    run = RunDir(run_dir)
    return run.evaluated(modes or ["ttt"]) and (run.report.is_file() or not notebooks)


def finished_run(arm_dir: Path, seed: int, modes, notebooks: bool = True) -> Path | None:
    done = [d for d in seed_dirs(arm_dir, seed) if finished(d, modes, notebooks)]
    return done[-1] if done else None


def copy_trained_run(source: Path, run_dir: Path, arm: str) -> None:
    """What training wrote in ``source`` into the fresh ``run_dir``, linked where the filesystem allows (a
    copy cut short is a kept run)."""
    for item in [*(source / n for n in TRAINED_FILES), *RunDir(source).hessian_files()]:
        if item.is_file():
            try:  # a hard link: a trained run is never written again, and a record-size model.pt is large
                os.link(item, run_dir / item.name)
            except OSError:  # another filesystem, or one without links
                shutil.copy2(item, run_dir / item.name)
    origin = json.loads(RunDir(source).copied_from.read_text()) if RunDir(source).copied_from.is_file() else {}
    atomic_write_json(RunDir(run_dir).copied_from, {"run": origin.get("run", str(source)),
                                                    "arm": origin.get("arm", arm),
                                                    "via": str(source) if origin else None})


def _trained(run_dir: Path) -> bool:
    """Training ended in ``run_dir`` (its model and summary written, no lock), and trained it there: what
    it trained can be reused. A twin's folder is not: its config.yaml is its lead's, quantization keys too."""
    run = RunDir(run_dir)
    return (run.status() in ("trained", "quantized", "evaluated") and run.model.is_file() and run.summary.is_file()
            and not run.copied_from.exists())


def trained_earlier(earlier: list[Path]) -> Path | None:
    """The newest of a seed's earlier folders whose training ended there: a retry reuses it, also through a
    retry that reused it and was killed in turn (that folder holds links, not a training of its own)."""
    return next((d for d in reversed(earlier) if _trained(d)), None)


def run_job(job: Job | dict, console=None) -> dict:
    """One (arm, seed) by the resume rule: a finished run is kept, else a fresh folder is trained (or
    gets a copy of the twin's trained run), quantized and evaluated. Returns what happened."""
    job = Job(**job) if isinstance(job, dict) else job
    arm_dir = Path(job.arm_dir)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    kept = finished_run(arm_dir, job.seed, job.modes, job.notebooks)
    if kept:
        return {"status": "kept", "run": str(kept), "gpus": gpus}
    if job.deadline and time.time() > job.deadline:
        return {"status": "not started", "run": None, "gpus": gpus}
    holder = claim_seed(arm_dir, job.seed)
    if holder:  # another golf process (a second `golf run` of this study) is running this seed
        return {"status": "in use", "run": None, "error": f"run by process {holder}, left to it", "gpus": gpus}
    try:
        kept = finished_run(arm_dir, job.seed, job.modes, job.notebooks)  # it may have ended while we looked
        if kept:
            return {"status": "kept", "run": str(kept), "gpus": gpus}
        return _run_fresh(job, arm_dir, gpus, console)
    finally:
        release_seed(arm_dir, job.seed)


def _run_fresh(job: Job, arm_dir: Path, gpus: str | None, console) -> dict:
    from golf.launch import launch_golf
    from golf.notebooks import run_seed

    earlier = seed_dirs(arm_dir, job.seed)
    run_dir = fresh_seed_dir(arm_dir, job.seed)
    run = RunDir(run_dir)
    if earlier:  # the resume rule: the unfinished run stays as it is, the seed starts again beside it
        trained = trained_earlier(earlier) if job.source is None else None
        source = trained or (Path(job.source) if job.source else None)  # a twin's: its lead arm's run
        log.info("seed %d%s: %s kept as it was left (%s); starting again in %s%s", job.seed, job.label,
                 earlier[-1].name, RunDir(earlier[-1]).status(), run_dir.name,
                 "" if source is None else " from its trained weights" if source == earlier[-1]
                 else f" from {source.name}'s trained weights" if source.parent == arm_dir
                 else f" from {source.parent.name}/{source.name}'s trained weights")
        if trained is not None:  # a training ended: quantize and evaluate again what it trained, as a twin would
            job.source = str(trained)
    t0 = time.perf_counter()
    try:
        if job.source is not None:
            copy_trained_run(Path(job.source), run_dir, job.arm)
        steps = RUN_NOTEBOOKS if job.source is None else RUN_NOTEBOOKS[1:]
        if job.notebooks:  # each step's line and progress on the console, trained here or not
            run_seed(job.params, job.seed, run_dir, job.overrides, job.nproc, job.kernel, console=console,
                     label=job.label, modes=job.modes, steps=steps, quant_changes=job.quant_changes)
        else:
            for step in steps:
                if step == "train":
                    launch_golf(["train", "--params", job.params, "--run-dir", str(run_dir), "--set",
                                 f"seed={job.seed}", *job.overrides], job.nproc, run.console, echo=False)
                elif step == "quantize":
                    launch_golf(["quantize", "--run-dir", str(run_dir), "--modes", *(job.modes or ["ttt"]),
                                 *(["--set", *job.quant_changes] if job.quant_changes else [])],
                                job.nproc, run.console, echo=False)
                else:
                    launch_golf(["evaluate", "--run-dir", str(run_dir), "--mode", *(job.modes or ["ttt"])],
                                job.nproc, run.console, echo=False)
    except GolfError as exc:
        return {"status": "failed", "run": str(run_dir), "error": str(exc), "gpus": gpus}
    return {"status": "done", "run": str(run_dir), "seconds": round(time.perf_counter() - t0, 1), "gpus": gpus}
