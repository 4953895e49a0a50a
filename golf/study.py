"""Studies: arms x seeds, each run trained, quantized and evaluated through the notebooks, then compared.

``golf run`` is a study of one arm (its seeds straight in the study folder, then the seed analysis
and the index page); ``golf study`` runs several arms, each in ``STUDY/ARM/seedS``, then ``golf
compare`` of the arms (the first is the baseline) into ``STUDY/compare``. One plan file,
``study.json``, holds each arm's params file, overrides and resolved config (``config_sha256``): a
study run again with other settings is refused, new seeds and arms may be added.

The parts: the plan, its checks and twin arms (golf.study_plan); one (arm, seed) job and the resume
rule (golf.study_job); where jobs run, this machine's GPUs or Ray (golf.study_executors); the archive
of a study folder (golf.study_archive). ``python -m golf.study JOB_JSON`` runs one job in a child
process (LocalExecutor's workers side by side).
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from golf.runs import COMPARE_DIR, STUDY_PLAN, seed_dirs
from golf.runtime import GolfError, atomic_write_json
from golf.study_archive import archive_study, restore_study
from golf.study_executors import LocalExecutor
from golf.study_job import finished, finished_run, run_job
from golf.study_plan import Arm, Study

log = logging.getLogger("golf")


def run_study(params_file: str, seeds: list[int], study: str | None = None, overrides: list[str] | None = None,
              outputs: str = "outputs", kernel: str | None = None, nproc: int = 1) -> tuple[Path, list[str]]:
    """``golf run``: a study of one arm, its seeds in the study folder, then the seed analysis and the
    study index. Returns the index page and the failure lines."""
    from golf.notebooks import _kernels_quiet, execute_notebook
    from golf.paths import resolve, resolve_params_file
    from golf.report import render_study_index

    params_path = resolve_params_file(params_file)
    st = Study(resolve(outputs) / (study or params_path.stem), [Arm(params_path.stem, str(params_path))],
               list(seeds), list(overrides or []), None, nproc, kernel, flat=True)
    configs = st.check()
    st.claim(configs)
    log.info("study folder %s", st.folder)
    with _kernels_quiet(st.folder / "kernels.log") as console:
        results = st.run(LocalExecutor(console=console), configs)
        reasons = [f"seed {r['seed']} failed: {r['error']}" for r in results if r["status"] == "failed"]
        ran = {r["seed"]: Path(r["run"]) for r in results if r["status"] in ("kept", "done")}
        seeds = json.loads((st.folder / STUDY_PLAN).read_text())["seeds"]  # this call's and earlier calls'
        # the analysis covers every finished seed of the study, in the seeds' order
        run_dirs = [d for d in (ran.get(s) or finished_run(st.folder, s, st.modes) for s in seeds) if d is not None]
        atomic_write_json(st.folder / STUDY_PLAN, {**st.plan, "seeds": seeds, "failures": reasons})
        failures = failed_runs(results)
        if run_dirs:
            try:
                execute_notebook("seed_analysis", st.folder / "seed_analysis.ipynb",
                                 {"study_dir": str(st.folder), "run_dirs": [str(d) for d in run_dirs]}, kernel)
            except GolfError as exc:
                failures.append(f"seed analysis failed: {exc}")
        return render_study_index(st.folder), failures


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def failed_runs(results: list[dict]) -> list[str]:
    """The one closing line for the runs that failed (none: []). Each failure's reason was said once
    already, in its run's FAILED line (``golf.study_plan.say``), and is not repeated here."""
    failed = [f"{r['arm']} seed {r['seed']}" for r in results if r["status"] == "failed"]
    if not failed:
        return []
    return [f"{len(failed)} of {len(results)} runs failed ({', '.join(failed)}): the reason of each is in its "
            "FAILED line above; the same command starts each again in a fresh folder"]


def run_arms(st: Study, executor_for, archive: Path | None = None, restore: Path | None = None,
             stop_taking_after: float = 0) -> tuple[Path | None, list[str]]:
    """``golf study``: every (arm, seed), then ``golf compare`` of the arms with finished runs into
    ``STUDY/compare``. ``executor_for``: makes the executor once the checks passed. Returns the
    comparison page (None when the baseline has no finished run) and the failure lines."""
    from golf.compare import close_figures, compare

    if restore is not None:
        restore_study(restore, st.folder)
    configs = st.check()
    st.claim(configs)
    executor = executor_for()
    log.info("study %s: %s x %s on %s", st.folder, _count(len(st.arms), "arm"), _count(len(st.seeds), "seed"),
             executor.describe())
    pack = (lambda: archive_study(archive, st.folder, st.modes)) if archive else None
    with contextlib.ExitStack() as stack:
        if isinstance(executor, LocalExecutor) and len(executor.groups) == 1 and st.notebooks:
            # runs here, in turn: each run's stage and progress on one line, as golf run shows them
            from golf.notebooks import _kernels_quiet

            executor.console = stack.enter_context(_kernels_quiet(st.folder / "kernels.log"))
        results = st.run(executor, configs, stop_taking_after, after_each=pack)
    failures = failed_runs(results)
    ready = [a.name for a in st.arms if any(finished(d, st.modes, st.notebooks)
                                            for s in st.seeds for d in seed_dirs(st.arm_dir(a), s))]
    page = None
    if st.arms[0].name in ready:
        try:
            result = compare([st.arm_dir(a) for a in st.arms if a.name in ready], names=ready,
                             stage=(st.modes or ["ttt"])[0], out_dir=st.folder / COMPARE_DIR)
            close_figures(result)  # saved with the page; none is shown here
            page = st.folder / COMPARE_DIR / "compare.html"
        except GolfError as exc:
            failures.append(f"compare failed: {exc}")
    elif not any(r["status"] == "not started" for r in results):
        failures.append(f"compare not run: the baseline arm {st.arms[0].name!r} has no finished run")
    if pack:
        packed, left = pack()
        log.info("archive %s: %d finished runs (%d unfinished left out)", archive, packed, left)
    return page, failures


if __name__ == "__main__":  # python -m golf.study JOB_JSON: one job in a child process (LocalExecutor)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run_job(json.loads(sys.argv[1]))))
