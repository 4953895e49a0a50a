"""Studies: arms x seeds, each run trained, quantized and evaluated through the notebooks, then compared.

``golf run`` is a study of one arm (its seeds straight in the study folder, then the seed analysis
and the index page); ``golf study`` runs several arms, each in ``STUDY/ARM/seedS``, then ``golf
compare`` of the arms (the first is the baseline) into ``STUDY/compare``. One plan file,
``study.json``, holds each arm's params file, overrides and resolved config (``config_sha256``): a
study run again with other settings is refused, new seeds and arms may be added.

One resume rule: a seed with a finished run is kept; a run that was killed or failed is kept as it is
and that seed starts again in a fresh folder (``seedS-2``, ``seedS-3`` ...), never in the old one.

Twin arms: arms whose configs differ only in keys training never reads (quantization keys) train once
a seed; the others quantize a copy of that trained run (``copied_from.json`` says whose), so they share
their weights and differ by the quantization alone, which ``golf compare`` then tests paired.

Runs go to an executor: :class:`LocalExecutor` (one worker per group of ``nproc`` GPUs, CPU runs one
at a time) or :class:`RayExecutor` (each run a Ray task asking for ``nproc`` GPUs; Ray picks the node
and sets ``CUDA_VISIBLE_DEVICES``). Either way a run is :func:`run_job`, in the process that holds its GPUs.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

from golf.runs import (COPIED_FROM, HEAVY_SUFFIXES, RUN_NOTEBOOKS, STUDY_PLAN, TRAINED_FILES, RunDir, claim_seed,
                       fresh_seed_dir, release_seed, seed_dirs)
from golf.runtime import GolfError, atomic_write_json

log = logging.getLogger("golf")
COMPARE_DIR = "compare"  # a multi-arm study's comparison, beside its arms


@dataclass(frozen=True)
class Arm:
    """One arm: a name, its params file and its own overrides (after the study's common ones)."""
    name: str
    params: str
    overrides: tuple[str, ...] = ()


def parse_arm(text: str) -> Arm:
    """``"NAME=PARAMS [KEY=VALUE ...]"`` -> Arm; bad text is one GolfError line."""
    head, *sets = text.split() or [""]
    name, _, params = head.partition("=")
    if not name or not params or not name.replace("-", "").replace("_", "").isalnum():
        raise GolfError(f"--arms {text!r}: an arm is NAME=PARAMS [KEY=VALUE ...] (NAME: letters, digits, - and _)")
    return Arm(name, params, tuple(sets))


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
    """What training wrote in ``source`` into the fresh ``run_dir`` (a copy cut short is a kept run)."""
    for item in [*(source / n for n in TRAINED_FILES), *RunDir(source).hessian_files()]:
        if item.is_file():
            shutil.copy2(item, run_dir / item.name)
    origin = json.loads(RunDir(source).copied_from.read_text()) if RunDir(source).copied_from.is_file() else {}
    atomic_write_json(RunDir(run_dir).copied_from, {"run": origin.get("run", str(source)),
                                                    "arm": origin.get("arm", arm),
                                                    "via": str(source) if origin else None})


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
    from golf.notebooks import execute_notebook, run_seed

    run_dir = fresh_seed_dir(arm_dir, job.seed)
    run = RunDir(run_dir)
    t0 = time.perf_counter()
    try:
        if job.source is None and job.notebooks:
            run_seed(job.params, job.seed, run_dir, job.overrides, job.nproc, job.kernel, console=console,
                     label=job.label, modes=job.modes)
        else:
            if job.source is not None:
                copy_trained_run(Path(job.source), run_dir, job.arm)
            for step in (RUN_NOTEBOOKS if job.source is None else RUN_NOTEBOOKS[1:]):
                if job.notebooks:
                    params = {"run_dir": str(run_dir), "nproc": job.nproc}
                    params.update({"overrides": job.quant_changes} if step == "quantize" else
                                  {"modes": job.modes} if step == "ttt_eval" and job.modes else {})
                    execute_notebook(step, run.notebook(step), params, job.kernel)
                elif step == "train":
                    launch_golf(["train", "--params", job.params, "--run-dir", str(run_dir), "--set",
                                 f"seed={job.seed}", *job.overrides], job.nproc, run.console, echo=False)
                elif step == "quantize":
                    launch_golf(["quantize", "--run-dir", str(run_dir),
                                 *(["--set", *job.quant_changes] if job.quant_changes else [])],
                                job.nproc, run.console, echo=False)
                else:
                    for mode in job.modes or ["ttt"]:
                        launch_golf(["evaluate", "--run-dir", str(run_dir), "--mode", mode], job.nproc,
                                    run.console, echo=False)
    except GolfError as exc:
        return {"status": "failed", "run": str(run_dir), "error": str(exc), "gpus": gpus}
    return {"status": "done", "run": str(run_dir), "seconds": round(time.perf_counter() - t0, 1), "gpus": gpus}


# --- executors ----------------------------------------------------------------------------------

class LocalExecutor:
    """One worker per group of ``nproc`` GPUs of this machine (``gpus``: indices; None or ['cpu']: one
    worker that sees what this process sees). A lone worker runs each job here, in turn (golf's status
    line on ``console``); workers side by side run each job in a child process that sees only its GPUs
    (CUDA_VISIBLE_DEVICES), from daemon threads, so an interrupt ends the study at once."""

    def __init__(self, gpus: list[str] | None = None, nproc: int = 1, console=None):
        import queue

        if gpus and gpus != ["cpu"] and len(gpus) < nproc:
            raise GolfError(f"--gpus {' '.join(gpus)}: a run takes --nproc {nproc} GPUs, more than given")
        self.groups = ([gpus[k:k + nproc] for k in range(0, len(gpus) - nproc + 1, nproc)]
                       if gpus and gpus != ["cpu"] else [[]])
        self.console = console
        self.free: queue.Queue = queue.Queue()
        for g in self.groups:
            self.free.put(g)

    def describe(self) -> str:
        return "this machine" if self.groups == [[]] else "GPUs " + " | ".join(",".join(g) for g in self.groups)

    def submit(self, job: Job) -> Future:
        import threading

        future: Future = Future()

        def work() -> None:
            try:
                future.set_result(self._run(job))
            except BaseException as exc:  # noqa: BLE001 - handed to the study, which reports it
                future.set_exception(exc)

        if len(self.groups) == 1:
            if self.groups[0]:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.groups[0])  # kernels and children inherit it
            future.set_result(run_job(job, self.console))  # here, in turn: an interrupt stops it as golf run does
        else:
            threading.Thread(target=work, daemon=True).start()
        return future

    def _run(self, job: Job) -> dict:
        group = self.free.get()
        try:
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(group))
            out = subprocess.run([sys.executable, "-m", "golf.study", json.dumps(asdict(job))], env=env,
                                 capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            if out.returncode or not lines:
                return {"status": "failed", "run": None, "gpus": env["CUDA_VISIBLE_DEVICES"],
                        "error": (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]}
            return json.loads(lines[-1])
        finally:
            self.free.put(group)

    def shutdown(self) -> None:
        pass


def _ray_job(job: dict) -> dict:  # a Ray task: Ray has set CUDA_VISIBLE_DEVICES to this task's GPUs
    logging.basicConfig(level=logging.WARNING)
    return run_job(job)


class RayExecutor:
    """Each (arm, seed) a Ray task asking for ``nproc`` GPUs (none for CPU runs); Ray places it on a node
    with free GPUs and sets CUDA_VISIBLE_DEVICES. ``address``: a cluster's (``ray start --head``), or
    'local' for a Ray started in this process (``init`` passes e.g. num_gpus to it). The study folder
    must be on a filesystem every node shares (or see --archive / --restore). Ray's own logs stay off
    the console."""

    def __init__(self, address: str, nproc: int = 1, gpus: bool = True, **init):
        try:
            import ray
        except ImportError:
            raise GolfError("--ray needs Ray: pip install 'golf[ray]' (or pip install ray)") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, log_to_driver=False,
                         include_dashboard=False, logging_level=logging.ERROR, **init)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise GolfError(f"--ray {address}: no Ray cluster could be reached ({str(exc).splitlines()[0]})") from None
        self.remote = ray.remote(num_gpus=nproc if gpus else 0, num_cpus=1, max_retries=0)(_ray_job)

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        return f"Ray ({int(res.get('GPU', 0))} GPUs, {int(res.get('CPU', 0))} CPUs)"

    def submit(self, job: Job) -> Future:
        return self.remote.remote(asdict(job)).future()

    def shutdown(self) -> None:
        pass  # a Ray started here ends with this process; a cluster's stays up


# --- the study ----------------------------------------------------------------------------------

def quantization_only_keys(config: dict) -> set[str]:
    """The keys training never reads: the quantization group's, less the calibration batches when
    training collects the Hessians itself (``fix_gptq_in_budget``)."""
    from golf.config_stages import stage_keys

    keys = set(stage_keys("quantize", own_only=True))
    return keys - {"gptq_calibration_batches"} if config.get("fix_gptq_in_budget") else keys


def _as_override(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class Study:
    """Arms x seeds in ``folder``. ``flat``: one arm whose seeds lie in ``folder`` itself (golf run)."""
    folder: Path
    arms: list[Arm]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    modes: list[str] | None = None
    nproc: int = 1
    kernel: str | None = None
    notebooks: bool = True
    lead_arms: list[str] = field(default_factory=list)
    flat: bool = False

    def arm_dir(self, arm: Arm) -> Path:
        return self.folder if self.flat else self.folder / arm.name

    def configs(self) -> dict[str, dict]:
        """Each arm's resolved config; a bad key or value is one GolfError naming the arm."""
        from golf.config import ConfigError, load_config, parse_overrides
        from golf.paths import resolve_params_file

        out = {}
        for arm in self.arms:
            sets = [*self.overrides, *arm.overrides]
            try:
                if "seed" in parse_overrides(sets):
                    raise GolfError("params key 'seed' is set by --seeds, not by --set: give the seeds as --seeds 42 314 ...")
                out[arm.name] = load_config(resolve_params_file(arm.params), sets)
            except (ConfigError, GolfError) as exc:
                raise GolfError(str(exc) if self.flat else f"arm {arm.name!r}: {exc}") from None
        return out

    def check(self) -> dict[str, dict]:
        """Everything checked before any folder is made: seeds, arms, modes, data, the kernel."""
        from golf.config import EVAL_MODES
        from golf.config_rules import RANGES
        from golf.notebooks import _preflight, check_kernel

        if len(set(self.seeds)) != len(self.seeds):
            raise GolfError(f"--seeds names a seed twice ({' '.join(map(str, self.seeds))}): each seed is one run")
        bad = [s for s in self.seeds if s not in RANGES["seed"]]
        if bad:
            raise GolfError(f"--seeds: {bad[0]} is not a seed; expected whole numbers in {RANGES['seed']}")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise GolfError(f"--arms names an arm twice ({' '.join(names)})")
        unknown = [a for a in self.lead_arms if a not in names]
        if unknown:
            raise GolfError(f"--lead-arms {unknown} are not arms of this study")
        wrong = [m for m in self.modes or [] if m not in EVAL_MODES]
        if wrong:
            raise GolfError(f"--modes: unknown mode {wrong[0]!r}; golf evaluate has {', '.join(EVAL_MODES)}")
        cfgs = self.configs()
        checked = set()
        for arm in self.arms:  # data, tokenizer, world size, memory: once per distinct setting
            key = json.dumps(cfgs[arm.name].to_dict(), sort_keys=True, default=str)
            if key not in checked and any(finished_run(self.arm_dir(arm), s, self.modes, self.notebooks) is None
                                          for s in self.seeds):
                try:
                    _preflight(cfgs[arm.name], self.nproc)
                except GolfError as exc:
                    raise GolfError(str(exc) if self.flat else f"arm {arm.name!r}: {exc}") from None
                checked.add(key)
        if self.notebooks:
            check_kernel(self.kernel)
        return {name: cfg.to_dict() for name, cfg in cfgs.items()}

    def claim(self, configs: dict[str, dict]) -> None:
        """Write the plan, or refuse a study folder that was run with other settings (one line)."""
        from golf.config import parse_overrides
        from golf.notebooks import _claim_study, config_sha256
        from golf.paths import resolve_params_file

        if self.flat:
            arm = self.arms[0]
            plan = {"params_file": str(resolve_params_file(arm.params)), "overrides": list(self.overrides),
                    "nproc": self.nproc, "config_sha256": config_sha256(configs[arm.name])}
            _claim_study(self.folder, plan, self.seeds, configs[arm.name])
            self.plan = plan
            return
        record = self.folder / STUDY_PLAN
        old = {}
        if self.folder.exists():
            if not record.is_file() and any(self.folder.iterdir()):
                raise GolfError(f"folder {str(self.folder)!r} exists and is not a golf study: pick another --study")
            old = json.loads(record.read_text()) if record.is_file() else {}
        arms = dict(old.get("arms") or {})
        for arm in self.arms:
            spec = {"params_file": str(resolve_params_file(arm.params)),
                    "overrides": [*self.overrides, *arm.overrides], "config_sha256": config_sha256(configs[arm.name])}
            was = arms.get(arm.name)
            same = lambda a, b: {**a, "overrides": parse_overrides(a["overrides"])} == {  # noqa: E731
                **b, "overrides": parse_overrides(b["overrides"])}
            if was is not None and not same(was, spec):
                raise GolfError(f"study {str(self.folder)!r} was run with other settings: arm {arm.name!r} had "
                                f"{json.dumps(was)}; pick another --study, or undo the change")
            arms[arm.name] = spec
        for key, value in (("modes", self.modes), ("nproc", self.nproc)):
            if key in old and old[key] != value:
                raise GolfError(f"study {str(self.folder)!r} was run with --{key} {old[key]}, not {value}: "
                                "pick another --study")
        self.plan = {"arms": arms, "seeds": sorted({*old.get("seeds", []), *self.seeds}), "modes": self.modes,
                     "nproc": self.nproc}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, self.plan)

    def twins(self, configs: dict[str, dict]) -> dict[str, str]:
        """{arm: the earlier arm that trains for it}, for arms that differ from it only in keys training
        never reads."""
        out: dict[str, str] = {}
        for k, arm in enumerate(self.arms):
            for lead in self.arms[:k]:
                if lead.name in out:
                    continue
                mine, theirs = configs[arm.name], configs[lead.name]
                if {key for key in mine if mine[key] != theirs.get(key)} <= quantization_only_keys(theirs):
                    out[arm.name] = lead.name
                    break
        return out

    def jobs(self, twins: dict[str, str], deadline: float) -> list[Job]:
        """Seed-major (a study cut short holds whole seeds), the lead arms' jobs first."""
        order = sorted(((s, a) for s in self.seeds for a in self.arms), key=lambda j: j[1].name not in self.lead_arms)
        return [Job(arm.name, seed, str(self.arm_dir(arm)), arm.params, [*self.overrides, *arm.overrides],
                    self.modes, self.nproc, self.kernel, self.notebooks, deadline=deadline,
                    label=f" ({k} of {len(order)})" if self.flat else f" · {arm.name} ({k} of {len(order)})")
                for k, (seed, arm) in enumerate(order, 1)]

    def run(self, executor, configs: dict[str, dict], stop_taking_after: float = 0, after_each=None) -> list[dict]:
        """Every job through ``executor``; a twin's job starts once its lead arm's run of that seed ended
        (it copies the lead's weights if that trained, else trains itself). Returns the jobs' results."""
        import threading

        twins = self.twins(configs)
        for arm, lead in twins.items():
            log.info("arm %r differs from %r only in keys training never reads: it quantizes a copy of %r's "
                     "trained run of each seed", arm, lead, lead)
        deadline = time.time() + stop_taking_after if stop_taking_after else 0.0
        jobs = self.jobs(twins, deadline)
        results: dict[tuple[str, int], dict] = {}
        lock, all_done = threading.Lock(), threading.Event()
        waiting = {(j.arm, j.seed): j for j in jobs if j.arm in twins}
        pending = [len(jobs)]

        def ended(job: Job, future: Future) -> None:
            try:
                res = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (a Ray node lost): this job failed
                res = {"status": "failed", "run": None, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            res.update(arm=job.arm, seed=job.seed)
            say(res)
            if after_each:
                after_each()
            with lock:
                results[(job.arm, job.seed)] = res
                followers = [j for (a, s), j in list(waiting.items()) if s == job.seed and twins[a] == job.arm]
                for j in followers:
                    del waiting[(j.arm, j.seed)]
                pending[0] -= 1
                if not pending[0]:
                    all_done.set()
            for j in followers:
                run = res.get("run")
                if run and RunDir(run).model.is_file():
                    j.quant_changes = self.quant_changes(configs[j.arm], Path(run))
                    j.source = run if j.quant_changes is not None else None
                    j.quant_changes = j.quant_changes or []
                start(j)

        def start(job: Job) -> None:
            future = executor.submit(job)
            future.add_done_callback(lambda f, job=job: ended(job, f))

        for job in jobs:
            if job.arm not in twins:
                start(job)
        if not jobs:
            all_done.set()
        all_done.wait()
        executor.shutdown()
        return [results[(j.arm, j.seed)] for j in jobs]

    @staticmethod
    def quant_changes(config: dict, trained: Path) -> list[str] | None:
        """``KEY=VALUE`` where ``config`` differs from the config ``trained`` ran with, if all are keys only
        quantization reads (its weights then serve); None otherwise."""
        from golf.config import load_config

        theirs = load_config(RunDir(trained).config_file).to_dict()
        mine = {**config, "seed": theirs.get("seed")}
        differ = [k for k in mine if mine[k] != theirs.get(k)]
        if not set(differ) <= quantization_only_keys(theirs):
            return None
        return [f"{k}={_as_override(mine[k])}" for k in differ]


def say(res: dict) -> None:
    """golf's one line per run."""
    where = f" on GPU {res['gpus']}" if res.get("gpus") else ""
    text = {"kept": f"finished earlier in {res.get('run')}, kept",
            "not started": "not started (--stop-taking-after)",
            "done": f"done in {res.get('seconds')} s{where} ({res.get('run')})",
            "in use": f"not started here: {res.get('error')}",
            "failed": f"FAILED{where}: {res.get('error')} ({res.get('run')})"}[res["status"]]
    (log.error if res["status"] == "failed" else log.info)("%s seed %s: %s", res["arm"], res["seed"], text)


# --- archives (machines that keep nothing between calls) ------------------------------------------

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
                tar.add(f, arcname=str(f.relative_to(root)), recursive=False)
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
        failures = [f"seed {r['seed']} failed: {r['error']}" for r in results if r["status"] == "failed"]
        run_dirs = [Path(r["run"]) for r in results if r["status"] in ("kept", "done")]
        atomic_write_json(st.folder / STUDY_PLAN, {**st.plan, "seeds": st.seeds, "failures": failures})
        if run_dirs:
            try:
                execute_notebook("seed_analysis", st.folder / "seed_analysis.ipynb",
                                 {"study_dir": str(st.folder), "run_dirs": [str(d) for d in run_dirs]}, kernel)
            except GolfError as exc:
                failures.append(f"seed analysis failed: {exc}")
        return render_study_index(st.folder), failures


def run_arms(st: Study, executor_for, archive: Path | None = None, restore: Path | None = None,
             stop_taking_after: float = 0) -> tuple[Path | None, list[str]]:
    """``golf study``: every (arm, seed), then ``golf compare`` of the arms with finished runs into
    ``STUDY/compare``. ``executor_for``: makes the executor once the checks passed. Returns the
    comparison page (None when the baseline has no finished run) and the failure lines."""
    from golf.compare import compare

    if restore is not None:
        restore_study(restore, st.folder)
    configs = st.check()
    st.claim(configs)
    executor = executor_for()
    log.info("study %s: %d arms x %d seeds on %s", st.folder, len(st.arms), len(st.seeds), executor.describe())
    pack = (lambda: archive_study(archive, st.folder, st.modes)) if archive else None
    results = st.run(executor, configs, stop_taking_after, after_each=pack)
    failures = [f"{r['arm']} seed {r['seed']} failed: {r['error']}" for r in results if r["status"] == "failed"]
    ready = [a.name for a in st.arms if any(finished(d, st.modes, st.notebooks)
                                            for s in st.seeds for d in seed_dirs(st.arm_dir(a), s))]
    page = None
    if st.arms[0].name in ready:
        try:
            compare([st.arm_dir(a) for a in st.arms if a.name in ready], names=ready,
                    stage=(st.modes or ["ttt"])[0], out_dir=st.folder / COMPARE_DIR)
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
