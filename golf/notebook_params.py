"""The notebooks' parameters: the parameters cell each run notebook holds (generated from the config),
and the checks that what a notebook was given names real parameters and keys (docs/working.md)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from golf.config import ConfigError
from golf.paths import project_root
from golf.runs import RUN_NOTEBOOKS
from golf.runtime import GolfError

NOTEBOOK_STAGES = {"quantize": "quantize", "ttt_eval": "evaluate"}  # whose keys a post-training notebook takes
# The parameters every notebook may take besides the params keys.
COMMON_PARAMETERS = ("params_file", "run_dir", "seed", "overrides", "nproc", "force", "modes", "study_dir",
                     "run_dirs", "stage", "studies", "names", "out_dir")


def parameter_list(value: Any, name: str) -> list[str]:
    """A notebook's list parameter as a list of strings. papermill's ``-p NAME VALUE`` passes text, which
    Python would walk letter by letter: text in YAML list form (``[a, b]``) is that list, other text is
    split as a shell splits it (``ema_decay=0 seed=7``, like ``--set``); ``None`` and ``""`` are empty."""
    import shlex

    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"parameter {name!r}: {value!r} is not a YAML list ({err.problem})", name) from None
        else:
            try:
                return shlex.split(text)
            except ValueError as err:
                raise ConfigError(f"parameter {name!r}: cannot split {value!r} ({err})", name) from None
    if isinstance(value, (int, float)):  # papermill reads -p names 1 as a number
        return [str(value)]
    if isinstance(value, (list, tuple)):
        items = list(value)
        bad = [v for v in items if isinstance(v, (list, tuple, dict)) or v is None]
        if bad:
            raise ConfigError(f"parameter {name!r}: expected a list of strings, got the item {bad[0]!r}", name)
        return [str(v) for v in items]
    raise ConfigError(f"parameter {name!r}: expected a list of strings, got {type(value).__name__} {value!r}", name)


# Names a run notebook's kernel holds that are no parameters: IPython's own, and what the notebooks'
# cells assign (present when Run All runs again in the same kernel).
_NOT_PARAMETERS = {"In", "Out", "exit", "quit", "get_ipython", "open", "nb", "run", "fig", "budget", "tensors",
                   "result", "study", "runs", "tests"}


def _unknown_names(namespace: Mapping[str, Any], known) -> tuple[list[str], str]:
    """The names a notebook was given that are none of ``known``, and a "did you mean" for them."""
    import difflib

    unknown = [name for name, value in namespace.items()
               if not name.startswith("_") and name not in known and name not in _NOT_PARAMETERS
               and isinstance(value, (bool, int, float, str, list, tuple, type(None)))]
    guesses = [g for name in unknown for g in difflib.get_close_matches(name, sorted(known), n=1)]
    return unknown, f"; did you mean {', '.join(map(repr, guesses))}?" if guesses else ""


def given_keys(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The params keys a notebook was given by name (papermill ``-p KEY VALUE``); None = not given.

    A name given that is no parameter (``-p ema_decai 0.5``, or a typo in Lab's parameters cell) stops
    here with one line and the nearest parameter, rather than running with the file's value."""
    from golf.config import config_keys

    keys = config_keys()
    known = {*keys, *COMMON_PARAMETERS, *(n for own in NOTEBOOK_PARAMETERS.values() for n, _, _ in own)}
    unknown, hint = _unknown_names(namespace, known)
    if unknown:
        raise GolfError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}{hint} (golf config lists "
                        "the params keys; papermill --help-notebook this notebook's parameters)")
    return {k: namespace[k] for k in keys if k not in COMMON_PARAMETERS and namespace.get(k) is not None}


def check_parameters(namespace: Mapping[str, Any], notebook: str) -> None:
    """A notebook without params keys (seed_analysis, compare): a name given that is none of its own
    parameters (``-p stge prequant``) stops with one line and the nearest one."""
    own = [name for name, _, _ in NOTEBOOK_PARAMETERS[notebook]]
    unknown, hint = _unknown_names(namespace, own)
    if unknown:
        raise GolfError(f"unknown parameter(s) {', '.join(map(repr, unknown))} of the {notebook} notebook{hint} "
                        f"(its parameters: {', '.join(own)})")


def set_args(keys: Mapping[str, Any] | None = None, overrides: list[str] | None = None,
             stage: str | None = None, base: str | Path | None = None) -> list[str]:
    """Named keys and ``key=value`` overrides as ``golf --set`` arguments, checked now, not in the child,
    against ``base`` (the params file, or the run's config.yaml) as the child will apply them;
    ``stage`` ('quantize', 'evaluate') also refuses the keys fixed by training."""
    from golf.config import ConfigError, load_config, parse_overrides
    from golf.config_stages import check_stage_overrides

    if isinstance(overrides, str):  # papermill -p overrides "a=1 b=2" gives one string
        overrides = overrides.split()
    items = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in (keys or {}).items()]
    items += list(overrides or [])
    try:
        if stage:
            check_stage_overrides(stage, parse_overrides(items))
        load_config(base, items)  # unknown keys and bad values fail here, by name
    except ConfigError as exc:
        raise GolfError(str(exc)) from None
    return ["--set", *items] if items else []


def parameters_source(notebook: str) -> str:
    """The parameters cell of a notebook: its own parameters, then every params key (None = the file's).

    Stored notebooks hold exactly this text (a test keeps them in sync), so ``papermill
    --help-notebook`` lists every parameter with its type and help.
    """
    from golf.config import describe_keys, section_title
    from golf.config_stages import stage_keys

    own = NOTEBOOK_PARAMETERS[notebook]
    lines = [f"{name}: {value}  # {help_}" for name, value, help_ in own]
    if notebook not in RUN_NOTEBOOKS:
        return "\n".join(lines)
    stage = NOTEBOOK_STAGES.get(notebook)
    if stage is None:
        lines.append("# Any params key below, when not None, overrides the params file for this run")
        lines.append("# (papermill: -p iterations 20). None keeps the value of the params file.")
    else:
        lines.append(f"# The keys golf {stage} reads, when not None, override the run's config.yaml")
        lines.append("# (papermill: -p max_val_tokens 65536); the others were fixed by training.")
    offered = stage_keys(stage) if stage else None  # None: every key
    section = None
    for d in describe_keys():
        if d["key"] in COMMON_PARAMETERS or (offered is not None and d["key"] not in offered):
            continue
        if d["section"] != section:
            section = d["section"]
            lines.append(f"# --- {section_title(section)}")
        # papermill reads a line with one '=' only, so the help says 'is' instead
        help_ = re.sub(r"\(?\s*=\s*", " is ", d["help"]).replace("( is", "(is").strip()
        lines.append(f"{d['key']}: {d['type']} = None  # {help_ + '; ' if help_ else ''}record: {d['default']!r}")
    return "\n".join(lines)


NOTEBOOK_PARAMETERS: dict[str, list[tuple[str, str, str]]] = {  # name, "type = default", help
    "train": [
        ("params_file", 'str = "params/demo.yaml"', "params YAML; a relative path starts at the project root"),
        ("run_dir", 'str = ""', "run folder to create; empty: a fresh numbered folder under outputs/lab/"),
        ("seed", "int = 42", "SEED: model initialisation (and data order with fix_seed_data_order)"),
        ("overrides", "list = []", "more overrides, a list of golf --set strings"),
        ("nproc", "int = 1", "processes (GPUs); more than 1 launches torchrun"),
    ],
    "quantize": [
        ("run_dir", 'str = ""', "a trained run folder; empty: the newest trained run under outputs/"),
        ("force", "bool = False", "quantize a run again that has an artifact (its old results are moved aside)"),
        ("modes", 'list = ["plain", "sliding", "ttt"]',
         "the stages the run will score: the budget counts the code of a submission scoring them"),
        ("overrides", "list = []", "more overrides, a list of golf --set strings"),
        ("nproc", "int = 1", "processes (GPUs); more than 1 launches torchrun"),
    ],
    "ttt_eval": [
        ("run_dir", 'str = ""', "a quantized run folder; empty: the newest quantized run under outputs/"),
        ("modes", 'list = ["plain", "sliding", "ttt"]', "evaluation modes, in order (also lora_ttt, phased_ttt)"),
        ("force", "bool = False", "evaluate again a mode that already has a result"),
        ("overrides", "list = []", "more overrides, a list of golf --set strings"),
        ("nproc", "int = 1", "processes (GPUs); more than 1 launches torchrun"),
    ],
    "seed_analysis": [
        ("study_dir", 'str = ""', "a study folder; empty: the newest folder under outputs/ with evaluated runs"),
        ("run_dirs", "list = []", "run folders to analyse; empty: every evaluated run of the study"),
        ("stage", 'str = "ttt"', "stage whose scores are tested: prequant, plain, sliding or ttt"),
    ],
    "compare": [
        ("studies", "list = []", "study or run folders, the baseline first; empty: the two newest studies"),
        ("names", "list = []", "a label per study; empty: the folder names"),
        ("stage", 'str = "ttt"', "stage compared: prequant, plain, sliding, ttt, lora_ttt or phased_ttt"),
        ("out_dir", 'str = ""', "where the comparison goes; empty: outputs/compare/compare-NNN"),
    ],
}


def sync_parameters_cells(folder: str | Path | None = None) -> list[Path]:
    """Rewrite each notebook's parameters cell from the config (after adding a params key)."""
    import nbformat

    changed = []
    for name in NOTEBOOK_PARAMETERS:
        path = Path(folder or project_root() / "notebooks") / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        if cell.source != parameters_source(name):
            cell.source = parameters_source(name)
            nbformat.write(nb, path)
            changed.append(path)
    return changed
