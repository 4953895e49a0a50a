"""The runs of a study folder: which have a stage's result, one per seed, and whether they are one
study (the seeds of one config). Read by golf compare, the seed-analysis notebook and the reports."""
from __future__ import annotations

import logging
from pathlib import Path

from golf.runs import STAGE_FILES, RunDir, eval_name
from golf.runtime import GolfError, read_json
from golf.stats import check_one_study, config_fingerprint, read_config

log = logging.getLogger("golf")


def study_runs(study_dir: str | Path, stage: str = "ttt") -> list[Path]:
    """The run folders of a study (or the run itself) with a result for ``stage``, oldest first."""
    study = Path(study_dir)
    marker = STAGE_FILES.get(stage, eval_name(stage))
    if (study / marker).exists():
        return [study]
    return sorted((p.parent for p in study.glob(f"*/{marker}")), key=lambda p: p.stat().st_mtime)


_SAID: set = set()


def one_run_per_seed(runs: list[Path]) -> list[Path]:
    """A seed killed part-way and retried (``seedN-2``) counts once, from the run that got furthest (more
    stage results); runs of one seed that got as far are all kept (the study check then refuses them)."""

    def reached(run: Path) -> int:
        return sum((run / marker).is_file() for marker in STAGE_FILES.values()) + RunDir(run).report.is_file()

    by_seed: dict = {}
    for run in runs:
        try:
            by_seed.setdefault(read_config(run).get("seed"), []).append(run)
        except GolfError:
            by_seed.setdefault(run, []).append(run)  # unreadable: its own group, refused later by name
    kept = []
    for seed, group in by_seed.items():
        best = max(map(reached, group))
        top = [r for r in group if reached(r) == best]
        said = (str(top[0]), len(group))
        if len(top) == 1 and len(group) > 1 and said not in _SAID:  # once a process: the index and compare both ask
            _SAID.add(said)
            log.info("seed %s counted once, from %s: %s got less far (killed, then retried)", seed, top[0].name,
                     ", ".join(r.name for r in group if r is not top[0]))
        kept += top
    return [r for r in runs if r in kept]


def stage_config(run: Path, stage: str = "prequant") -> dict:
    """The settings that made the stage's result: an artifact's are quantize_config.yaml's, which holds
    the keys ``golf quantize --set`` changed since training (config.yaml keeps the training's), with
    the keys its evaluation changed (the result's ``config_changes``)."""
    made_by = RunDir(run).quantize_config
    path = made_by if stage != "prequant" and made_by.is_file() else RunDir(run).config_file
    config = RunDir(run).config(path.name)
    if stage != "prequant":  # and the keys golf evaluate --set changed for this stage's result
        config.update((read_json(run / STAGE_FILES[stage]) or {}).get("config_changes") or {})
    return config


def newest_config_runs(runs: list[Path], stage: str = "ttt") -> list[Path]:
    """From a folder of mixed runs (outputs/lab): the runs of the newest run's config, the newest run of
    each seed, oldest first: the one study the folder can offer."""
    runs = sorted(runs, key=lambda p: p.stat().st_mtime)
    prints = {run: config_fingerprint(cfg, run) for run, cfg in ((r, stage_config(r, stage)) for r in runs)}
    by_seed = {stage_config(r, stage).get("seed"): r for r in runs if prints[r] == prints[runs[-1]]}
    return sorted(by_seed.values(), key=lambda p: p.stat().st_mtime)


def check_study(folder: Path, runs: list[Path], stage: str = "ttt") -> None:
    """GolfError (one line) unless ``runs`` are the seeds of one config, each once."""
    check_one_study(folder, {run: stage_config(run, stage) for run in runs})


def is_study(folder: Path, stage: str = "ttt") -> bool:
    """Whether ``folder``'s runs with a ``stage`` result are one study (the seeds of one config, each once)."""
    try:
        check_study(folder, one_run_per_seed(study_runs(folder, stage)), stage)
    except Exception:  # noqa: BLE001 - a folder golf cannot read as one study is not offered by default
        return False
    return True
