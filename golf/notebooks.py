"""What the notebooks call: the run steps as child processes, run picking, papermill studies.

Notebooks stay thin (a ``parameters`` cell, calls into here, plots); ``golf train`` and the
other steps run outside the Jupyter kernel as child processes, under torchrun when
``nproc > 1``, so a kernel never holds a process group. Paths follow :mod:`golf.paths`, so a notebook runs the
same from ``notebooks/``, the project root or anywhere else.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

from golf.launch import PROGRESS_BAR, launch_golf
from golf.notebook_params import (  # noqa: F401  (the notebooks' calls)
    COMMON_PARAMETERS, NOTEBOOK_STAGES, check_parameters, given_keys, parameter_list, set_args, sync_parameters_cells,
)
from golf.paths import bundled, outputs_root, project_root, resolve, resolve_params_file
from golf.plots import (  # noqa: F401  (the notebooks' plotting calls)
    eval_table, plot_eval, plot_quant_error, plot_schedule, plot_training, quant_tables, read_metrics,
)
from golf.report import headline, render_run_report, render_study_index  # noqa: F401  (notebook calls)
from golf.runs import (ARTIFACT, CONFIG, MODEL, RUN_NOTEBOOKS, STAGE_FILES, STUDY_PLAN, RunDir, eval_name,
                       new_numbered_dir)
from golf.runtime import GolfError, atomic_write_json
from golf.studies import check_study, is_study, newest_config_runs, one_run_per_seed, study_runs

log = logging.getLogger("golf")

LAB_STUDY = "lab"  # where interactive runs with an empty run_dir go: outputs/lab/run-NNN


def _short_errors_in_kernel() -> None:
    """In a Jupyter kernel, a user's mistake (GolfError, ConfigError) shows as one red line, not a traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from golf.config import ConfigError

    def one_line(shell_, etype, value, _tb, tb_offset=None):
        stb = [f"\x1b[0;31mgolf: error:\x1b[0m {value}"]
        shell_._showtraceback(etype, value, stb)  # the kernel's error message: ename, evalue and this line
        return stb

    shell.set_custom_exc((GolfError, ConfigError), one_line)


_short_errors_in_kernel()


def train(params_file: str, run_dir: str = "", seed: int | None = None, overrides: list[str] | None = None,
          keys: Mapping[str, Any] | None = None, nproc: int = 1, echo: bool = True) -> Path:
    """``golf train`` into ``run_dir`` (a fresh ``outputs/lab/run-NNN`` when empty); returns the folder."""
    from golf.config import load_config

    seeded = {**({"seed": seed} if seed is not None else {}), **(keys or {})}
    params_path = resolve_params_file(params_file)
    extra = set_args(seeded, parameter_list(overrides, "overrides"), base=params_path)
    _preflight(load_config(params_path, extra[1:]), nproc)  # all checked before a folder is made
    if run_dir:
        run = resolve(run_dir)
        RunDir(run).check_free()  # before its console.log is written there
        run.mkdir(parents=True, exist_ok=True)
    else:
        run = new_numbered_dir(outputs_root() / LAB_STUDY)
    if echo:
        print(f"run folder: {run}")
    launch_golf(["train", "--params", str(params_path), "--run-dir", str(run), *extra], nproc,
                log_path=RunDir(run).console, echo=echo)
    return run


def quantize(run_dir: str = "", force: bool = False, overrides: list[str] | None = None,
             keys: Mapping[str, Any] | None = None, nproc: int = 1, echo: bool = True,
             modes: list[str] | None = None) -> Path:
    """``golf quantize`` of ``run_dir`` (default: the newest trained run); an existing artifact is kept
    unless ``force``. ``modes``: the stages the run will score, whose submission code the budget counts."""
    run = pick_run(run_dir, "trained")
    if RunDir(run).artifact.exists() and not force:
        print(f"{run} is already quantized: showing its artifact (force=True quantizes again)")
        return run
    overrides = parameter_list(overrides, "overrides")
    modes = parameter_list(modes, "modes") if modes is not None else []
    args = ["quantize", "--run-dir", str(run), *set_args(keys, overrides, "quantize", RunDir(run).config_file),
            *(["--force"] if force else []), *(["--modes", *modes] if modes else [])]
    launch_golf(args, nproc, log_path=RunDir(run).console, echo=echo)
    return run


def evaluate(run_dir: str = "", modes: list[str] = ("plain", "sliding", "ttt"), force: bool = False,
             overrides: list[str] | None = None, keys: Mapping[str, Any] | None = None, nproc: int = 1,
             echo: bool = True) -> Path:
    """``golf evaluate`` of ``run_dir`` (default: the newest quantized run) in each mode; a mode with a
    result is skipped unless ``force``."""
    modes, overrides = parameter_list(modes, "modes"), parameter_list(overrides, "overrides")
    run = pick_run(run_dir, "quantized")
    extra = set_args(keys, overrides, "evaluate", RunDir(run).config_file)
    pending = []
    for mode in modes:
        if RunDir(run).eval_result(mode).exists() and not force:
            print(f"{mode}: already evaluated (force=True evaluates again)")
        else:
            pending.append(mode)
    if pending:  # one process: the model loads, and its graphs compile, in one place
        launch_golf(["evaluate", "--run-dir", str(run), "--mode", *pending, *extra, *(["--force"] if force else [])],
                    nproc, log_path=RunDir(run).console, echo=echo)
    return run


# --- finding runs and studies ------------------------------------------------------------------

def pick_run(run_dir: str, stage: str) -> Path:
    """``run_dir`` resolved, or the newest run folder under outputs/ that is ``stage`` ('trained' or
    'quantized': holding the model, or the artifact)."""
    needs = MODEL if stage == "trained" else ARTIFACT
    if run_dir:
        run = resolve(run_dir)
        if not (run / needs).exists():
            raise GolfError(f"run folder {str(run)!r} has no {needs}")
        return run
    found = sorted(outputs_root().glob(f"**/{needs}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise GolfError(f"no run folder under {str(outputs_root())!r} holds {needs} yet: run the notebook "
                        f"before this one, or set run_dir")
    return found[-1].parent


def pick_studies(studies: list[str], n: int = 1, stage: str = "ttt", lab_runs: bool = True) -> list[Path]:
    """The given study folders, or the ``n`` newest studies under outputs/ with results for ``stage``
    (never outputs/lab); with none yet, the ``n`` newest notebook runs of outputs/lab, each on its own."""
    studies = parameter_list(studies, "studies")
    if studies:
        return [resolve(s) for s in studies]
    marker = STAGE_FILES.get(stage, eval_name(stage))
    folders = {p.parent.parent: p.stat().st_mtime for p in outputs_root().glob(f"*/*/{marker}")}
    newest = [f for f in sorted(folders, key=folders.get, reverse=True) if f.name != LAB_STUDY and is_study(f, stage)]
    if newest:
        return newest[:n][::-1]
    lab = study_runs(outputs_root() / LAB_STUDY, stage)[-n:] if lab_runs else []
    if lab:
        print(f"no study with {stage} results yet (golf run makes one): taking the newest notebook "
              f"run{'s' if len(lab) > 1 else ''} of outputs/{LAB_STUDY}, each on its own: "
              f"{', '.join(r.name for r in lab)}")
        return lab
    raise GolfError(f"no study under {str(outputs_root())!r} has {stage} results yet (outputs/{LAB_STUDY}'s "
                    "notebook runs are no study): golf run one, or give the folders")


def seed_analysis(study_dir: str = "", run_dirs: list[str] | None = None, stage: str = "ttt"):
    """The study (default: the newest with results), its per-seed table (also ``seed_analysis.csv``),
    the summary of the challenge's tests and the per-seed figure."""
    from golf.plots import STAGE_LABELS
    from golf.plots import plot_seeds
    from golf.stats import collect_runs, summarize

    if stage not in STAGE_LABELS:
        raise GolfError(f"stage must be one of {sorted(STAGE_LABELS)}, got {stage!r}")
    run_dirs = parameter_list(run_dirs, "run_dirs")
    try:
        study = pick_studies([study_dir] if study_dir else [], 1, stage, lab_runs=False)[0]
        if run_dirs:
            runs = [resolve(d) for d in run_dirs]
        else:  # a seed killed and retried counts once, as in golf compare
            runs = one_run_per_seed(study_runs(study, stage))
    except GolfError:
        lab = study_runs(outputs_root() / LAB_STUDY, stage)
        if study_dir or run_dirs or not lab:
            raise
        study, runs = outputs_root() / LAB_STUDY, newest_config_runs(lab, stage)  # no study yet: the lab's newest
        print(f"no study with {stage} results yet (golf run makes one): analysing the notebook runs of "
              f"outputs/{LAB_STUDY} with the newest run's config, one per seed: {', '.join(r.name for r in runs)}")
    if not runs:
        raise GolfError(f"study {str(study)!r} has no run with a {stage} result yet")
    check_study(study, runs, stage)
    from golf.report import tests_table

    table = collect_runs(runs, study / "seed_analysis.csv")
    fig = plot_seeds(table, study, stage)
    return study, table, tests_table(summarize(table, stage)), fig


# --- papermill ---------------------------------------------------------------------------------

def default_kernel() -> str:
    """The golf kernel where it is installed (make install does), else this Python's."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        return "golf" if "golf" in KernelSpecManager().find_kernel_specs() else "python3"
    except Exception:  # noqa: BLE001 - no Jupyter config at all: papermill's default
        return "python3"


# The kernel's own log stays out of the console: ipykernel 7 warns on every start that it is reached
# over loopback TCP, and a kernel stopped by an interrupt logs a ZMQ traceback. A cell's error still
# reaches golf through papermill (one GolfError line).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def execute_notebook(name: str, out_path: Path, parameters: dict, kernel: str | None = None) -> Path:
    """Execute ``notebooks/NAME.ipynb`` into ``out_path``; a failing cell is one GolfError line."""
    import papermill as pm

    src = bundled("notebooks", f"{name}.ipynb")
    if not src.is_file():
        raise GolfError(f"notebook {str(src)!r} does not exist")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        pm.execute_notebook(str(src), str(out_path), parameters=parameters, cwd=str(project_root()),
                            kernel_name=kernel or default_kernel(), progress_bar=False, log_output=False,
                            extra_arguments=KERNEL_ARGUMENTS)
    except pm.PapermillExecutionError as exc:
        kind = "" if exc.ename == "GolfError" else f"{exc.ename}: "  # golf's own message needs no class name
        raise GolfError(f"{name} notebook failed: {kind}{exc.evalue.splitlines()[0] if exc.evalue else ''}"
                        f" (executed notebook: {out_path})") from None
    except Exception as exc:  # noqa: BLE001 - a kernel that died or never started: one line, the study goes on
        raise GolfError(f"{name} notebook could not run: {type(exc).__name__}: {exc}") from None
    return out_path


def check_kernel(kernel: str | None) -> None:
    """A kernel asked for by name must exist, before any work starts."""
    if kernel is None:
        return
    from jupyter_client.kernelspec import KernelSpecManager

    known = KernelSpecManager().find_kernel_specs()
    if kernel not in known:
        raise GolfError(f"Jupyter kernel {kernel!r} is not installed (installed: {', '.join(sorted(known))}); "
                        "make install adds the golf kernel")


class _SeedStatus:
    """golf run's one updating console line while a notebook runs: the seed, the notebook and the step's
    progress, read once a second from the run's console.log (where the kernel copies its child's output).
    On a console that is no terminal, a line only when the stage changes."""

    def __init__(self, console, prefix: str, log_path: Path):
        import threading

        self.console, self.prefix, self.path = console, prefix, log_path
        self.offset = log_path.stat().st_size if log_path.is_file() else 0  # this notebook's output only
        self.tty = bool(getattr(console, "isatty", lambda: False)())
        self.shown, self.stage, self.pending = "", None, ""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=5)
        if self.tty and self.shown:
            self.console.write("\r" + " " * len(self.shown) + "\r")  # the log line that follows starts clean
            self.console.flush()

    def _loop(self) -> None:
        while not self.done.wait(1.0):
            try:
                self._poll()
            except (OSError, ValueError):  # the log not there yet, or the console closed: try again
                pass

    def _poll(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        pieces = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", p).strip()
                  for p in re.split(r"[\r\n]", self.pending + data.decode(errors="replace"))]
        self.pending = ""
        # golf's log lines and progress bars only: a command's printed result (JSON) is no status
        last = next((m for p in reversed(pieces) if (m := _status_text(p))), None)
        if last is None:
            return
        import shutil

        width = shutil.get_terminal_size((120, 20)).columns - 1
        text = f"{self.prefix} · {last}"[:width]
        if self.tty:
            self.console.write("\r" + text.ljust(len(self.shown)))
            self.shown = text
        else:
            stage = re.split(r"[\s:]", last, maxsplit=1)[0]
            if stage == self.stage:
                return
            self.stage = stage
            self.console.write(text + "\n")
        self.console.flush()


def _status_text(line: str) -> str | None:
    """What of a console line the status shows: a log line less its time stamp, or a progress bar."""
    if m := re.match(r"\d{4}-\d\d-\d\d [\d:,]+ (?:INFO|WARNING) (.+)", line):
        return m.group(1)
    return line if re.match(r"[\w ]*:? *" + PROGRESS_BAR.pattern, line) else None


def log_notebook(seed: int, label: str, name: str, run_dir: Path) -> None:
    """The study's line as a run's notebook starts: seed, arm and place (``label``), where its console goes."""
    log.info("seed %d%s: %s notebook (%s)", seed, label, name, RunDir(run_dir).console)


def run_seed(params_file: str, seed: int, run_dir: Path, overrides: list[str], nproc: int = 1,
             kernel: str | None = None, console=None, label: str = "", modes: list[str] | None = None,
             steps: tuple[str, ...] = RUN_NOTEBOOKS, quant_changes: list[str] | None = None) -> Path:
    """Train, quantize and evaluate one seed through the notebooks into ``run_dir`` (``modes``: the
    ttt_eval notebook's, None for its own; ``steps``: from quantize on where ``run_dir`` holds trained
    weights already, ``quant_changes`` the quantize notebook's overrides); with ``console``, the stage and
    its progress on one updating line there."""
    for name in steps:
        log_notebook(seed, label, name, run_dir)
        params: dict[str, Any] = {"run_dir": str(run_dir), "nproc": nproc}
        if name == "train":  # the overrides reach config.yaml, which quantize and evaluate read
            params.update(params_file=params_file, seed=seed, overrides=list(overrides))
        if name == "quantize" and quant_changes:
            params["overrides"] = list(quant_changes)
        if name in ("quantize", "ttt_eval") and modes:  # quantize counts the code of a file scoring them
            params["modes"] = list(modes)
        if console is None:
            execute_notebook(name, RunDir(run_dir).notebook(name), params, kernel)
            continue
        with _SeedStatus(console, f"seed {seed}{label} · {name}", RunDir(run_dir).console):
            execute_notebook(name, RunDir(run_dir).notebook(name), params, kernel)
    return run_dir


@contextmanager
def _kernels_quiet(log_path: Path):
    """Kernels inherit file descriptor 2: point it at the study's kernels.log while they run, and give
    golf's own log lines and progress bar a duplicate of the console instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is sys.stderr]
    real_stderr = sys.stderr
    with open(log_path, "a") as log_fh:
        os.dup2(log_fh.fileno(), 2)
        sys.stderr = console
        for h in handlers:
            h.setStream(console)
        try:
            yield console
        except BaseException:
            console.write("\n")  # an interrupt: the progress bar's line ends here, before the one saying why
            raise
        finally:
            sys.stderr = real_stderr
            for h in handlers:
                h.setStream(real_stderr)
            os.dup2(saved, 2)
            os.close(saved)
            console.close()


def _preflight(cfg, nproc: int) -> None:
    """Everything golf can check before a run or study starts: world-size splits and data binding."""
    from golf.config import ConfigError
    from golf.config_rules import validate_for_world
    from golf.data_binding import check_data_binding
    from golf.val_stream import check_val_length
    from golf.runtime import check_model_fits

    try:
        validate_for_world(cfg, nproc)
    except ConfigError as exc:
        raise GolfError(str(exc)) from None
    check_data_binding(cfg)
    check_val_length(cfg)
    check_model_fits(cfg)


def config_sha256(config: dict) -> str:
    """A study's identity beside its command: the sha256 of its resolved config, seed aside."""
    import hashlib

    return hashlib.sha256(json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def _config_drift(study_dir: Path, config: dict) -> str | None:
    """Where a run of the study trained with other values than ``config`` (seed aside): what differs."""
    from golf.config import ConfigError, load_config

    for path in sorted(study_dir.glob(f"seed*/{CONFIG}")):
        try:
            ran = load_config(path).to_dict()
        except ConfigError:
            continue
        diff = [k for k in config if k != "seed" and ran.get(k) != config[k]]
        if diff:
            return f"{path} has " + ", ".join(f"{k}={ran.get(k)!r} (now {config[k]!r})" for k in diff[:3])
    return None


def _claim_study(study_dir: Path, plan: dict, seeds: list[int], config: dict | None = None) -> None:
    """A new study, or the resumption of one started with the same params and overrides (in any order)."""
    from golf.config import parse_overrides

    record = study_dir / STUDY_PLAN
    if study_dir.exists():
        if not record.is_file():
            if any(study_dir.iterdir()):
                raise GolfError(f"folder {str(study_dir)!r} exists and is not a golf study: pick another --study")
        else:
            old = json.loads(record.read_text())
            if config is not None:  # the params file's content, not only its name (an edit since is refused)
                drift = _config_drift(study_dir, config)
                if drift or old.get("config_sha256", plan["config_sha256"]) != plan["config_sha256"]:
                    raise GolfError(f"study {str(study_dir)!r} was run with other settings: {plan['params_file']} "
                                    f"resolves to another config now ({drift or 'config_sha256 differs'}); "
                                    "pick another --study, or undo the change (to the file or to --set)")
                old.setdefault("config_sha256", plan["config_sha256"])  # a study made before golf recorded it
            as_set = lambda p: {**p, "overrides": parse_overrides(p.get("overrides") or [])}  # noqa: E731  (order-free)
            if as_set({k: old.get(k) for k in plan}) != as_set(plan):
                raise GolfError(f"study {str(study_dir)!r} was run with other settings "
                                f"({json.dumps({k: old.get(k) for k in plan})}): pick another --study")
            log.info("resuming study %s", study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(record.read_text()).get("seeds", []) if record.is_file() else []
    atomic_write_json(record, {**plan, "seeds": sorted({*earlier, *seeds})})  # a study grows by its seeds


if __name__ == "__main__":  # python -m golf.notebooks: regenerate the parameters cells
    for path in sync_parameters_cells():
        print(f"updated {path}")
