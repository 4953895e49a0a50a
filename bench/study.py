"""A seeded study of several params files through golf's own CLI, spread over the GPUs of one machine (issue 16).

    python bench/study.py --arms record=params/record.yaml frontier=params/frontier.yaml \\
        --seeds 42 314 1337 --gpus 0 1 --prefix fs --set iterations=160 --log bench/results/x.jsonl
    python bench/study.py --arms frontier=params/frontier.yaml "no-smear=params/frontier.yaml smear_gate=false" ...

An arm is ``NAME=PARAMS`` and, after spaces, its own ``KEY=VALUE`` overrides (an ablation).

Every (arm, seed) is one job: ``golf train`` into ``OUTPUTS/PREFIX-ARM/seedS``, ``golf quantize``,
then ``golf evaluate`` in each ``--modes``. A worker per GPU takes the next job that can start (seed-major, so an
interrupted study still holds whole seeds of every arm); each job runs alone on its GPU
(``CUDA_VISIBLE_DEVICES``). Steps whose output exists are skipped, so running the command again
resumes it, as long as each arm's params, overrides and modes are the ones it started with (kept in
``OUTPUTS/PREFIX-plan.json``; seeds and new arms may be added). A training that was killed, or
failed, is moved aside to ``seedS.interrupted-N`` (kept) and trained again. Each finished step appends a line (arm, seed, step, seconds, rc) to ``--log``; a
failed step stops that job and the others go on. At the end ``golf compare`` of the arms (the
first is the baseline) writes its tables and compare.html, and a summary names what is missing or
failed; the exit status is 1 if a step or the compare failed.

A study can move between machines that keep nothing (the device tool's): ``--archive FILE`` packs
the finished runs (weights and artifacts left out), the plan, the log and the compare into one
.tar.gz, and ``--restore FILE`` unpacks it before the jobs are queued, so finished runs are skipped
and unfinished ones start again in fresh folders. ``--stop-taking-after SECONDS`` starts no new job
after that time, so a call with a time limit ends on whole runs.

Arms that differ only in quantization keys (``golf quantize --set`` ones) are trained once a seed:
a job whose twin's run of that seed was started before it (or trained here earlier) waits for that
training, copies the trained run (``copied_from.json`` says from where) and quantizes it with its
own keys, so the arms share their weights and differ by the quantization alone. Where no twin has
or is getting weights (one restored from another machine has none), the job trains itself. ``--lead-arms`` queues the named arms'
jobs (all seeds) before the others', e.g. the two arms of the main comparison.

This is what ``golf run`` does, minus the notebooks: the GPU machine has no Jupyter stack. On a CPU,
``--gpus cpu`` runs the jobs one after another (e.g. with params/frontier_demo.yaml).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from golf.paths import outputs_root, resolve
from golf.runs import LOCK as RUN_LOCK


def _golf(args: list[str], gpu: str, console: Path, cpus: list[int] | None = None) -> tuple[int, float]:
    """``golf ARGS`` on ``gpu`` (an index, or 'cpu'), pinned to ``cpus`` if given; (exit status, seconds)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if gpu != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = gpu
    t0 = time.perf_counter()
    with console.open("a") as out:
        out.write(f"\n$ golf {' '.join(args)}{f'   # on CPUs {cpus[0]}-{cpus[-1]}' if cpus else ''}\n")
        out.flush()
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []  # not preexec_fn: workers are threads
        rc = subprocess.call([*pin, sys.executable, "-m", "golf", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    return rc, time.perf_counter() - t0


def cpu_shares(workers: int) -> list[list[int] | None]:
    """Each worker's own block of this process's CPUs, so that jobs side by side do not each start a
    thread per core (four such on one host made a CPU SVD 100 times slower); None where it can't."""
    if workers < 2 or not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return [None] * workers
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < workers:
        return [None] * workers
    return [cpus[k * len(cpus) // workers:(k + 1) * len(cpus) // workers] for k in range(workers)]


def parse_arm(text: str) -> tuple[str, str, list[str]]:
    """``"NAME=PARAMS [KEY=VALUE ...]"`` -> (name, params file, the arm's own overrides)."""
    head, *sets = text.split()
    name, params = head.split("=", 1)
    return name, params, sets


FAILED: list[dict] = []  # this call's failed steps, for the summary and the exit status


def _log_step(log: Path, lock: threading.Lock, **line) -> None:
    line["time"] = time.strftime("%H:%M:%S")
    with lock:
        if line.get("rc"):
            FAILED.append(line)
        with log.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


@dataclass
class Training:
    """One job's training: ``done`` is set once its run has weights or never will; ``ok`` whether it
    trained (or had trained) to the end."""
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


@dataclass
class Twin:
    """A run trained with this job's training config: ``run`` (another arm's, same seed), whose
    ``training`` says when it has weights to copy."""
    arm: str
    run: Path
    training: Training


TRAINED_FILES = ("model.pt", "config.yaml", "run.json", "environment.json", "train.log", "metrics.jsonl",
                 "train_summary.json")  # and hessians_rank*.pt: what golf train leaves in a run folder


def copy_trained_run(source: Path, run_dir: Path, arm: str) -> None:
    """Copy what training wrote in ``source`` to ``run_dir``, through a temporary folder so a cut-off
    copy leaves no half run. Named files only: the twin's own quantize may be writing beside them."""
    tmp = run_dir.with_name(run_dir.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for item in [*(source / n for n in TRAINED_FILES), *sorted(source.glob("hessians_rank*.pt"))]:
        if item.is_file():
            shutil.copy2(item, tmp / item.name)
    origin = json.loads((source / "copied_from.json").read_text()) if (source / "copied_from.json").is_file() else {}
    # the training that made the weights, also for a copy of a copy
    (tmp / "copied_from.json").write_text(json.dumps({"run": origin.get("run", str(source)), "arm": origin.get("arm", arm),
                                                      "via": str(source) if origin else None}) + "\n")
    tmp.rename(run_dir)


def run_job(arm: str, params: str, seed: int, run_dir: Path, sets: list[str], modes: list[str], gpu: str,
            log: Path, lock: threading.Lock, twin: Twin | None = None, training: Training | None = None,
            cpus: list[int] | None = None) -> None:
    """One (arm, seed): train (or copy ``twin``'s trained run), quantize, evaluate each mode, skipping
    the steps whose output exists, each step pinned to ``cpus``. ``training`` is this job's, for the
    jobs that may copy it."""
    training = training or Training()
    try:
        _run_steps(arm, params, seed, run_dir, sets, modes, gpu, log, lock, twin, training, cpus)
    finally:
        training.done.set()


def quantization_changes(trained_run: Path, params: str, sets: list[str], seed: int) -> list[str] | None:
    """``KEY=VALUE`` for each key in which this job's config differs from the one ``trained_run`` was
    trained with, if all are keys only quantization reads (so its weights serve this job); None otherwise."""
    from golf.config import load_config

    mine = load_config(params, [f"seed={seed}", *sets]).to_dict()  # as golf train gets them
    theirs = load_config(trained_run / "config.yaml", []).to_dict()
    differ = [k for k in mine if mine[k] != theirs.get(k)]
    if not set(differ) <= quantization_only_keys(theirs):
        return None
    return [f"{k}={_as_override(mine[k])}" for k in differ]


def quantization_only_keys(config: dict) -> set[str]:
    """The keys of ``config`` that training never reads: the quantization group's, less the calibration
    batches when training collects the Hessians itself (``fix_gptq_in_budget``)."""
    from golf.config import stage_keys

    keys = set(stage_keys("quantize", own_only=True))
    return keys - {"gptq_calibration_batches"} if config.get("fix_gptq_in_budget") else keys


def interrupted_training(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot be trained into: 'in use' (a live golf process holds it), 'interrupted'
    (a training that did not finish: golf train refuses such a folder), or None (absent, or trained)."""
    from golf.runs import RunDir
    run_lock_owner = lambda d: RunDir(d).lock_owner()  # noqa: E731

    if not run_dir.is_dir() or (run_dir / "model.pt").is_file():
        return None
    pid, alive = run_lock_owner(run_dir)
    lock = run_dir / RUN_LOCK
    if alive or (not pid and lock.is_file() and time.time() - lock.stat().st_mtime < 60):
        return "in use"  # (no pid yet: just claimed, its pid is being written)
    return "interrupted" if any(run_dir.iterdir()) else None


def move_aside(run_dir: Path) -> Path:
    """Rename an interrupted run to ``seedS.interrupted-N`` beside it (kept, never trained into again)."""
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.interrupted-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    return aside


def _run_steps(arm, params, seed, run_dir, sets, modes, gpu, log, lock, twin, training, cpus) -> None:
    quant_sets: list[str] = []
    if finished(run_dir, modes):  # maybe restored without its weights: nothing to redo
        training.ok = (run_dir / "model.pt").is_file()
        return
    state = interrupted_training(run_dir)
    if state == "in use":
        _log_step(log, lock, arm=arm, seed=seed, step=f"train ({run_dir} is in use by another golf process; if "
                  f"none runs, remove {run_dir / RUN_LOCK})", seconds=0, rc=1, gpu=gpu)
        return
    if state == "interrupted":  # a killed training: kept beside, and this job starts it again
        aside = move_aside(run_dir)
        _log_step(log, lock, arm=arm, seed=seed, step=f"train (interrupted run moved to {aside.name}; training again)",
                  seconds=0, rc=0, gpu=gpu)
    if twin is not None and not run_dir.exists():
        twin.training.done.wait()
        changes = quantization_changes(twin.run, params, sets, seed) if twin.training.ok else None
        if changes is not None:
            t0 = time.perf_counter()
            try:
                copy_trained_run(twin.run, run_dir, twin.arm)
            except OSError as exc:
                _log_step(log, lock, arm=arm, seed=seed, step=f"train (copy from {twin.arm} failed: {exc})",
                          seconds=round(time.perf_counter() - t0, 1), rc=1, gpu=gpu)
                return
            _log_step(log, lock, arm=arm, seed=seed, step=f"train (copied from {twin.arm})",
                      seconds=round(time.perf_counter() - t0, 1), rc=0, gpu=gpu)
        # else: the twin's training failed: this arm trains itself
    if (run_dir / "copied_from.json").is_file():  # also when resumed after the copy
        changes = quantization_changes(run_dir, params, sets, seed)
        if changes is None:  # the arm's training keys changed since the copy: its weights are not this arm's
            _log_step(log, lock, arm=arm, seed=seed, step=f"quantize (the copy in {run_dir} was trained with "
                      "other keys: remove it)", seconds=0, rc=1, gpu=gpu)
            return
        quant_sets = ["--set", *changes] if changes else []
    steps = [("train", ["train", "--params", params, "--run-dir", str(run_dir), "--set", f"seed={seed}", *sets],
              run_dir / "model.pt"),
             ("quantize", ["quantize", "--run-dir", str(run_dir), *quant_sets], run_dir / "final_model.int6.ptz")]
    steps += [(f"evaluate {m}", ["evaluate", "--run-dir", str(run_dir), "--mode", m], run_dir / f"eval_{m}.json")
              for m in modes]
    console = run_dir.parent / f"{run_dir.name}.console.log"
    for name, args, done in steps:
        if done.exists():
            if name == "train":
                training.ok = True
                training.done.set()
            continue
        rc, seconds = _golf(args, gpu, console, cpus)
        _log_step(log, lock, arm=arm, seed=seed, step=name, seconds=round(seconds, 1), rc=rc, gpu=gpu)
        if name == "train":
            training.ok = rc == 0
            training.done.set()
        if rc != 0:
            return


def training_twins(arms: list[tuple[str, str, list[str]]], sets: list[str]) -> dict[str, list[str]]:
    """{arm: the other arms whose resolved config differs from its own only in keys training never
    reads}, in the arms' order: trained once, their weights serve all of them."""
    from golf.config import load_config

    resolved = {name: load_config(params, sets + own).to_dict() for name, params, own in arms}
    names = [name for name, _, _ in arms]
    return {name: [e for e in names if e != name and {k for k in resolved[e] if resolved[e][k] != resolved[name][k]}
                   <= quantization_only_keys(resolved[e])] for name in names}


def _as_override(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


HEAVY_SUFFIXES = (".pt", ".ptz")  # weights, Hessians, artifacts: rebuilt by rerunning, too big to move


def finished(run_dir: Path, modes: list[str]) -> bool:
    """Every step's last output is there: each mode's evaluation."""
    return all((run_dir / f"eval_{m}.json").is_file() for m in modes)


def archive_study(path: Path, root: Path, prefix: str, arms: list[str], modes: list[str]) -> tuple[int, int]:
    """Pack the study's finished runs (without HEAVY_SUFFIXES files), its plan, log and compare into
    ``path`` (written atomically). ``arms``: every arm of the study (the plan's). Returns (finished runs
    packed, unfinished runs left out)."""
    packed = left = 0
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in ("plan.json", "study.jsonl", "compare", "compare.console.log"):
                if (root / f"{prefix}-{name}").exists():
                    tar.add(root / f"{prefix}-{name}", arcname=f"{prefix}-{name}")
            for arm in sorted(set(arms)):
                folder = root / f"{prefix}-{arm}"
                if not folder.is_dir():
                    continue
                for run in sorted(p for p in folder.iterdir() if p.is_dir()):
                    if not finished(run, modes):
                        left += 1
                        continue
                    packed += 1
                    for f in sorted(run.rglob("*")):
                        if f.is_file() and f.suffix not in HEAVY_SUFFIXES:
                            tar.add(f, arcname=str(f.relative_to(root)), recursive=False)
                    console = folder / f"{run.name}.console.log"
                    if console.is_file():
                        tar.add(console, arcname=str(console.relative_to(root)))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return packed, left


def restore_study(path: Path, root: Path, prefix: str) -> str | None:
    """Unpack an archive of ``archive_study`` into ``root``; a problem line if it is not one of this
    study's or would overwrite a file that is here."""
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            if not m.name.startswith(f"{prefix}-") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                return f"{path}: {m.name!r} is not a file of study {prefix!r}"
            if m.isfile() and (root / m.name).exists():
                return f"{path}: {root / m.name} exists here already; restore into an outputs folder without it"
        tar.extractall(root, members=members, filter="data")
    return None


def compare_finished(root: Path, prefix: str, arms: list[str], modes: list[str], part_way: bool = False) -> int:
    """``golf compare`` of the arms that have a finished run (a study part-way through compares what it
    has); none when the baseline (the first arm) has none, which is an error (1) unless the study is
    ``part_way`` (jobs left for a later call). Returns the exit status."""
    ready = [a for a in arms if (root / f"{prefix}-{a}").is_dir()
             and any(finished(r, modes) for r in (root / f"{prefix}-{a}").iterdir() if r.is_dir())]
    waiting = [a for a in arms if a not in ready]
    if arms[0] not in ready:
        print(f"golf compare: not run: the baseline arm {arms[0]!r} has no finished run"
              f"{' yet' if part_way else ' (see its console log)'}", flush=True)
        return 0 if part_way else 1
    args = ["compare", *[str(root / f"{prefix}-{a}") for a in ready], "--names", *ready, "--stage", modes[0],
            "--out", str(root / f"{prefix}-compare")]
    rc, _ = _golf(args, "cpu", root / f"{prefix}-compare.console.log")
    reason = ""
    if rc:  # golf's one-line reason: the last line this call wrote (after its "$ golf" header), if any
        lines = (root / f"{prefix}-compare.console.log").read_text(errors="replace").strip().splitlines()
        after = lines[max((i for i, line in enumerate(lines) if line.startswith("$ golf")), default=-1) + 1:]
        reason = f": {after[-1]}" if after else ""
    note = f"; arms with no finished run yet: {', '.join(waiting)}" if waiting else ""
    print(f"golf compare: rc {rc} ({root / f'{prefix}-compare'}){reason}{note}", flush=True)
    return rc


def check_arms(arms: list[tuple[str, str, list[str]]], sets: list[str], modes: list[str]) -> str | None:
    """A problem line if an arm's params and overrides do not load or a mode is unknown: before any job
    starts, so a typo in the last arm does not cost the GPU time of the others."""
    from golf.config import EVAL_MODES, load_config
    from golf.runtime import GolfError

    unknown = [m for m in modes if m not in EVAL_MODES]
    if unknown:
        return f"unknown --modes {unknown}; golf evaluate has {list(EVAL_MODES)}"
    for name, params, own in arms:
        try:
            load_config(params, sets + own)
        except (GolfError, ValueError, OSError) as exc:
            return f"arm {name!r}: {exc}"
    return None


def check_data(arms: list[tuple[str, str, list[str]]], sets: list[str], todo: set[str]) -> str | None:
    """A problem line if the data of an arm in ``todo`` (one with a seed left to run) is missing or does
    not belong to its tokenizer, as golf train would find at its start: before any job, so the first
    job's failure is not repeated by every other."""
    from golf.config import load_config
    from golf.data import check_data_binding
    from golf.runtime import GolfError

    checked: set[tuple] = set()
    for name, params, own in arms:
        if name not in todo:
            continue
        try:
            cfg = load_config(params, sets + own)
            data = (cfg.data_dir, cfg.tokenizer_path, cfg.vocab_size)
            if data not in checked:
                check_data_binding(cfg, ("train", "val"))
                checked.add(data)
        except (GolfError, ValueError, OSError) as exc:
            return f"arm {name!r}: {exc}"
    return None


def check_plan(path: Path, arms: list[tuple[str, str, list[str]]], sets: list[str], modes: list[str]) -> str | None:
    """Record each arm's settings; a problem line if an arm of an earlier run of this study had others."""
    plan = json.loads(path.read_text()) if path.is_file() else {}
    for name, params, own in arms:
        spec = {"params": params, "set": sets + own, "modes": modes}
        if plan.get(name, spec) != spec:
            return (f"arm {name!r} of this study ran with {plan[name]}, not {spec}: finished steps would be kept "
                    f"as they are; use another --prefix (or remove {path.parent}/{path.name.split('-plan')[0]}-{name})")
        plan[name] = spec
    path.write_text(json.dumps(plan, indent=1))
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="+", required=True, metavar='"NAME=PARAMS [KEY=VALUE ...]"',
                    help="each arm: a name, its params file and its own overrides; the first is the baseline")
    ap.add_argument("--seeds", nargs="+", type=int, required=True, help="seed values, one run per arm and seed")
    ap.add_argument("--gpus", nargs="+", default=["0"], help="GPU indices, one worker each; 'cpu' for none")
    ap.add_argument("--prefix", default="study", help="study folders are OUTPUTS/PREFIX-ARM")
    ap.add_argument("--set", nargs="*", action="extend", default=[],
                    help="KEY=VALUE for every arm's training (may be given more than once; later values win)")
    ap.add_argument("--modes", nargs="+", default=["ttt"], help="golf evaluate modes (the first is compared)")
    ap.add_argument("--log", default=None, help="JSON lines of finished steps (default OUTPUTS/PREFIX-study.jsonl)")
    ap.add_argument("--restore", metavar="ARCHIVE", help="first unpack a study archive of --archive into OUTPUTS")
    ap.add_argument("--archive", metavar="ARCHIVE",
                    help="after every job and at the end, pack the finished runs (no weights or artifacts), "
                         "plan, log and compare here")
    ap.add_argument("--lead-arms", nargs="+", default=[], metavar="ARM",
                    help="queue these arms' jobs, every seed, before the others' (which go seed by seed)")
    ap.add_argument("--stop-taking-after", type=float, default=0, metavar="SECONDS",
                    help="start no new job after this many seconds; a started job runs to its end (0: no limit)")
    args = ap.parse_args()

    arms = [parse_arm(a) for a in args.arms]
    root = outputs_root()
    t_start = time.monotonic()
    log = resolve(args.log) if args.log else root / f"{args.prefix}-study.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    problem = check_arms(arms, args.set, args.modes)
    unknown = [a for a in args.lead_arms if a not in [n for n, _, _ in arms]]
    if not problem and unknown:
        problem = f"--lead-arms {unknown} are not arms of this study"
    if not problem and args.restore:
        archive = resolve(args.restore)
        problem = (restore_study(archive, root, args.prefix) if archive.is_file()
                   else f"--restore {archive}: no such file")
    todo = {name for name, _, _ in arms for seed in args.seeds
            if not finished(root / f"{args.prefix}-{name}" / f"seed{seed}", args.modes)}
    problem = problem or check_data(arms, args.set, todo)
    problem = problem or check_plan(root / f"{args.prefix}-plan.json", arms, args.set, args.modes)
    if problem:
        print(f"study.py: error: {problem}", file=sys.stderr)
        return 1
    twins = training_twins(arms, args.set)
    groups = {tuple(n for n in twins if n == name or n in others) for name, others in twins.items() if others}
    for group in sorted(groups):
        print(f"arms {', '.join(map(repr, group))} differ only in keys training never reads: each seed is trained "
              "once for them, the others quantize a copy of that run", flush=True)
    # seed-major, so a study cut short holds whole seeds; --lead-arms' jobs first
    order = sorted(((seed, arm) for seed in args.seeds for arm in arms), key=lambda job: job[1][0] not in args.lead_arms)
    trainings = {(name, seed): Training() for seed, (name, _, _) in order}
    taken: set[tuple[str, int]] = set()  # jobs a worker has started: only those are waited for

    def twin_of(name: str, seed: int) -> Twin | None:
        for other in twins[name]:
            run = root / f"{args.prefix}-{other}" / f"seed{seed}"
            if (other, seed) in taken:  # it has, or is getting, weights unless it came back without them
                if (run / "model.pt").is_file() or not finished(run, args.modes):
                    return Twin(other, run, trainings[(other, seed)])
            elif (run / "model.pt").is_file() and not (run / RUN_LOCK).exists():  # trained to its end here earlier
                done = Training(ok=True)
                done.done.set()
                return Twin(other, run, done)
        return None

    pending = []  # jobs not yet taken, in order; taken under the lock
    for seed, (name, params, own) in order:
        study = root / f"{args.prefix}-{name}"
        study.mkdir(parents=True, exist_ok=True)
        pending.append((name, params, own, seed, study / f"seed{seed}"))
    lock = threading.Lock()
    to_run = sum(not finished(job[-1], args.modes) for job in pending)
    print(f"study {args.prefix}: {len(pending)} jobs ({len(arms)} arms x {len(args.seeds)} seeds), {to_run} to run, "
          f"{len(pending) - to_run} finished earlier; on {', '.join(args.gpus)}", flush=True)
    started = [0]  # jobs with work to do that a worker has taken, for "job k of N"
    every_arm = sorted(json.loads((root / f"{args.prefix}-plan.json").read_text()))  # earlier calls' arms too

    def archive() -> None:
        packed, left = archive_study(resolve(args.archive), root, args.prefix, every_arm, args.modes)
        print(f"archive: {resolve(args.archive)}: {packed} finished runs; {left} unfinished left out", flush=True)

    def worker(gpu: str, cpus: list[int] | None) -> None:
        while True:
            if args.stop_taking_after and time.monotonic() - t_start > args.stop_taking_after:
                return
            with lock:
                if not pending:
                    return
                # the first job that can start now; one whose twin is still training waits its turn,
                # unless every job left does (then this worker waits for that training)
                k = next((i for i, job in enumerate(pending) if (t := twin_of(job[0], job[3])) is None
                          or t.training.done.is_set() or job[-1].exists()), 0)
                name, params, own, seed, run_dir = pending.pop(k)
                taken.add((name, seed))
                twin = twin_of(name, seed)
                if not finished(run_dir, args.modes):
                    started[0] += 1
                    print(f"job {started[0]} of {to_run}: {name} seed {seed} on {'CPU' if gpu == 'cpu' else 'GPU ' + gpu}",
                          flush=True)
            try:
                run_job(name, params, seed, run_dir, args.set + own, args.modes, gpu, log, lock,
                        twin=twin, training=trainings[(name, seed)], cpus=cpus)
            except Exception as exc:  # a file system error, say: this job fails, the worker goes on
                _log_step(log, lock, arm=name, seed=seed, step=f"job stopped: {type(exc).__name__}: {exc}",
                          seconds=0, rc=1, gpu=gpu)
            if args.archive:  # after every job, so a call cut off by its time limit keeps what finished
                with lock:
                    archive()

    threads = [threading.Thread(target=worker, args=(g, c)) for g, c in zip(args.gpus, cpu_shares(len(args.gpus)))]
    for t in threads:
        t.start()
        time.sleep(2)  # staggered: the first compile of each arm is not raced by its twin
    for t in threads:
        t.join()
    not_started = [job for job in pending if not finished(job[-1], args.modes)]
    if not_started:
        print(f"--stop-taking-after: {len(not_started)} jobs not started (run the command again to go on)", flush=True)
    rc = compare_finished(root, args.prefix, [n for n, _, _ in arms], args.modes, part_way=bool(not_started))
    if args.archive:
        archive()
    print(summary(root, args.prefix, arms, args.seeds, args.modes, time.monotonic() - t_start), flush=True)
    return 1 if FAILED or rc else 0


def summary(root: Path, prefix: str, arms, seeds: list[int], modes: list[str], seconds: float) -> str:
    """What the study holds now, per arm, this call's failures, and where the comparison is."""
    lines = [f"study {prefix}: {seconds / 60:.1f} min; finished runs per arm (of {len(seeds)} seeds):"]
    for name, _, _ in arms:
        done = [s for s in seeds if finished(root / f"{prefix}-{name}" / f"seed{s}", modes)]
        lines.append(f"  {name:<16} {len(done)}" + ("" if len(done) == len(seeds) else
                                                     f"   missing seeds {[s for s in seeds if s not in done]}"))
    for f in FAILED:
        lines.append(f"  FAILED: {f['arm']} seed {f['seed']}: {f['step']} (rc {f['rc']}; "
                     f"{root / (prefix + '-' + f['arm'])}/seed{f['seed']}.console.log)")
    report = root / f"{prefix}-compare" / "compare.html"
    lines.append(f"  comparison: {report}" if report.is_file() else f"  comparison: none ({report} was not written)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
