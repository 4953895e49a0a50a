"""A study's plan: its arms (``NAME=PARAMS [KEY=VALUE ...]``) x seeds, checked, claimed in ``study.json``
and run through an executor. Twin arms (configs that differ only in keys training never reads) train
once a seed; the others quantize a copy of that trained run, so ``golf compare`` tests them paired.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from golf.runs import COMPARE_DIR, STUDY_PLAN, RunDir
from golf.runtime import GolfError, atomic_write_json
from golf.study_job import Job, finished_run

log = logging.getLogger("golf")


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
        if not self.flat and COMPARE_DIR in names:  # STUDY/compare holds the arms' comparison
            raise GolfError(f"--arms: {COMPARE_DIR!r} names the study's comparison folder; call the arm otherwise")
        cfgs = self.configs()
        keys = {arm.name: json.dumps(cfgs[arm.name].to_dict(), sort_keys=True, default=str) for arm in self.arms}
        if not self.flat:
            same = {}
            for arm in self.arms:  # two arms of one config are one arm run twice: no comparison between them
                if keys[arm.name] in same:
                    raise GolfError(f"--arms: arms {same[keys[arm.name]]!r} and {arm.name!r} have the same settings "
                                    f"(one config): give one of them other keys, or leave it out")
                same[keys[arm.name]] = arm.name
        checked = set()
        for arm in self.arms:  # data, tokenizer, world size, memory: once per distinct setting
            key = keys[arm.name]
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
            alike = [n for n, a in arms.items() if n != arm.name and a.get("config_sha256") == spec["config_sha256"]]
            if alike:  # an arm of an earlier call with this config: one arm run twice, no comparison between them
                raise GolfError(f"--arms: arm {arm.name!r} has the settings of arm {alike[0]!r} of study "
                                f"{str(self.folder)!r} (one config): give it other keys, or leave it out")
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
