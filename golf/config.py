"""The run's config: a tree of frozen sections (run, data, model, train, optim, quant, eval, fixes),
loaded from YAML plus overrides and checked once, at the door (docs/config.md).

Defaults are the hyperparameters *logged* by the five #1533 runs (docs/record.md Appendix A); each
known flaw of the record has a ``fix_*`` switch, off by default, so the defaults reproduce the record.
Key names are unique across sections: params files and ``--set`` name keys flat (``num_layers: 11``)
or by section (``model: {num_layers: 11}``), and code reads ``cfg.num_layers`` or ``cfg.model.num_layers``.

Usage::

    cfg = load_config("params/record.yaml", ["seed=314", "iterations=200"])
    cfg = load_config(None, {"model_dim": 64})      # papermill parameters arrive as a dict
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from golf.config_rules import ConfigError, validate
from golf.config_sections import (DataConfig, EvalConfig, FixesConfig, ModelConfig, OptimConfig, QuantConfig,
                                  RunConfig, TrainConfig)
from golf.paths import resolve, resolve_params_file


SECTIONS: dict[str, type] = {"run": RunConfig, "data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                             "optim": OptimConfig, "quant": QuantConfig, "eval": EvalConfig, "fixes": FixesConfig}
SECTION_OF: dict[str, str] = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}

# Keys golf once had that did nothing or took one value; a params file that sets one is told so.
REMOVED_KEYS = {
    "embedding_dim": "the embedding is always model_dim wide (the record's)",
    "tie_embeddings": "the output head is always the tied embedding (the record's)",
    "sliding_window_enabled": "golf evaluate --mode chooses the evaluation",
    "ttt_enabled": "golf evaluate --mode chooses the evaluation",
    "ttt_optimizer": "score-first TTT is always SGD (the record's)",
}


@dataclass(frozen=True)
class Config:
    """The whole config: one section per concern. Every key (and ``head_dim``, ``kv_dim``, ``mlp_hidden``)
    also reads flat, ``cfg.num_layers``, as params files and ``--set`` name it."""
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fixes: FixesConfig = field(default_factory=FixesConfig)

    def __post_init__(self):  # the flat reads, as plain attributes: no lookup cost, nothing for a compiler to trace
        for name, section in SECTION_OF.items():
            object.__setattr__(self, name, getattr(getattr(self, section), name))

    # derived from the model section, read when asked (a config is validated after it is built)
    head_dim = property(lambda self: self.model.head_dim)
    kv_dim = property(lambda self: self.model.kv_dim)
    mlp_hidden = property(lambda self: self.model.mlp_hidden)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "Config":
        by_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for k, v in values.items():
            by_section[SECTION_OF[k]][k] = v
        return cls(**{name: SECTIONS[name](**kv) for name, kv in by_section.items()})

    def to_dict(self) -> dict[str, Any]:
        """Every key, flat, in section order (what config.yaml holds)."""
        return {k: v for name in SECTIONS for k, v in dataclasses.asdict(getattr(self, name)).items()}

    def tree(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def replace(self, **changes: Any) -> "Config":
        return load_config(None, {**self.to_dict(), **changes})


# golf evaluate's modes, in the order a run reaches them; every list of modes and stages derives from it.
EVAL_MODES = ("plain", "sliding", "ttt", "lora_ttt", "phased_ttt")

_TYPES: dict[str, type] = {f.name: typing.get_type_hints(SECTIONS[s])[f.name]
                           for s in SECTIONS for f in fields(SECTIONS[s])}
_DEFAULTS: dict[str, Any] = Config().to_dict()
PATH_KEYS = ("data_dir", "tokenizer_path")


def config_keys() -> list[str]:
    return list(_TYPES)


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"params key {key!r}: expected a bool (true/false, yes/no, on/off, 1/0), got {text!r}")


def _coerce(key: str, value: Any, from_text: bool) -> Any:
    """Check (and, for command-line text, parse) one value against the field's type."""
    want = _TYPES[key]
    if from_text and isinstance(value, str):
        text = value
        if want is bool:
            return _parse_bool(text, key)
        try:
            if want is int:
                return int(text.replace("_", ""))
            if want is float:
                return float(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"params key {key!r}: expected {want.__name__}, got {text!r}") from None
        return text
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif want is str:
        if isinstance(value, str):
            return value
    hint = ""
    if want is str and isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no unquoted as booleans
        hint = "; YAML reads an unquoted on/off/yes/no as a bool: put the word in quotes ('off')"
    raise ConfigError(
        f"params key {key!r}: expected {want.__name__}, got {type(value).__name__} {value!r}{hint}"
    )


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Turn ``["k=v", ...]`` from ``--set`` into a dict of raw strings."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _flatten(mapping: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A params mapping with keys flat or by section, flat; an unknown or removed key is an error."""
    import difflib

    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        if k in SECTIONS and v is None:  # an empty section
            continue
        if k in SECTIONS and not isinstance(v, Mapping):
            raise ConfigError(f"{where}: section {k!r} must be a mapping of key: value (its keys indented under "
                              f"it), got {type(v).__name__} {v!r}", k)
        if k in SECTIONS:
            inside = {**v}
            wrong = [x for x in inside if x in SECTION_OF and SECTION_OF[x] != k]
            if wrong:
                raise ConfigError(f"{where}: key {wrong[0]!r} belongs to section {SECTION_OF[wrong[0]]!r}, "
                                  f"not {k!r}", wrong[0])
            items = inside.items()
        else:
            items = [(k, v)]
        for kk, vv in items:
            if kk in flat:
                raise ConfigError(f"{where}: key {kk!r} is given twice", kk)
            flat[kk] = vv
    removed = [k for k in flat if k in REMOVED_KEYS]
    if removed:
        raise ConfigError(f"{where}: params key {removed[0]!r} was removed ({REMOVED_KEYS[removed[0]]}); "
                          "delete it", removed[0])
    unknown = [k for k in flat if k not in _TYPES]
    if unknown:
        guesses = [g for k in unknown for g in difflib.get_close_matches(str(k), list(_TYPES), n=1)]
        hint = f"; did you mean {', '.join(map(repr, guesses))}?" if guesses else ""
        raise ConfigError(f"{where}: unknown params key(s) {', '.join(map(repr, unknown))}{hint} "
                          f"(golf config lists the {len(_TYPES)} keys)")
    return flat


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base': its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.append(key)  # (a list: a key may be unhashable, which the constructor then reports)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> Any:
    """The parsed params file; an error naming the file if it is not UTF-8 text or not YAML."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # noqa: S506 - safe
    except UnicodeDecodeError:
        raise ConfigError(f"params file {str(path)!r} is not a UTF-8 text file") from None
    except yaml.constructor.ConstructorError as exc:  # a key given twice (see _UniqueKeyLoader), or a tag
        line = f", line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ConfigError(f"params file {str(path)!r}{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(f"params file {str(path)!r} is not valid YAML{at}: {problem}") from None


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> Config:
    """Build the Config from an optional YAML file, then overrides.

    Overrides may be ``key=value`` strings (command line: values are parsed by the field type)
    or a mapping (papermill parameters: values must already have the right type, except that
    strings are parsed too, since papermill's ``-p`` passes text).
    """
    values: dict[str, Any] = {}
    from_file: set[str] = set()  # keys whose value is the file's (not overridden)
    if path is not None:
        path = resolve_params_file(path)
        if path.is_dir():
            raise ConfigError(f"params file {str(path)!r} is a folder; expected a YAML file in it, e.g. "
                              f"{str(path / 'mine.yaml')!r}")
        if not path.is_file():
            raise ConfigError(f"params file {str(path)!r} does not exist (a relative path starts at the "
                              "project root, see golf --help; give an absolute path for a file elsewhere)")
        loaded = _read_yaml(path)
        if not isinstance(loaded, dict):
            raise ConfigError(f"params file {str(path)!r}: expected a mapping of key: value")
        loaded = _flatten(loaded, f"params file {str(path)!r}")
        for key, value in loaded.items():
            try:
                values[key] = _coerce(key, value, from_text=False)
            except ConfigError as exc:  # name the file: the same key may also come from --set
                raise ConfigError(f"params file {str(path)!r}: {exc}", key) from None
        from_file = set(loaded)
    file_values = dict(values)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        overrides = _flatten(overrides, "overrides")
        for key, value in overrides.items():
            values[key] = _coerce(key, value, from_text=True)
        from_file -= set(overrides)
    for key in PATH_KEYS:  # one root for relative paths, in the CLI, kernels and children alike
        values[key] = str(resolve(values.get(key, _DEFAULTS[key])))
    cfg = Config.from_flat(values)
    try:
        validate(cfg)
    except ConfigError as exc:  # a value that came from the file: name the file too
        if path is not None and exc.key in from_file:
            if overrides and _valid(file_values):  # the file alone is fine: the overrides broke a rule with it
                given = " ".join(f"{k}={v}" for k, v in overrides.items())
                raise ConfigError(f"overrides {given} with params file {str(path)!r}: {exc}", exc.key) from None
            raise ConfigError(f"params file {str(path)!r}: {exc}", exc.key) from None
        raise
    return cfg


def _valid(values: dict[str, Any]) -> bool:
    try:
        validate(Config.from_flat(values))
    except ConfigError:
        return False
    return True


def differences_from_record(values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (record's value, this value)} for the keys of ``values`` (a config's dict) that differ
    from the record's, i.e. golf's defaults; paths aside."""
    return {k: (_DEFAULTS[k], v) for k, v in values.items() if k in _DEFAULTS and k not in PATH_KEYS and v != _DEFAULTS[k]}


def save_config(cfg: Config, path: str | Path) -> None:
    from golf.runtime import atomic_write_text  # torch: only where a run is written

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe_keys() -> list[dict[str, Any]]:
    """Every params key with its type, the record's default, its section and its help (``golf config``,
    the notebooks' parameters cells)."""
    return [{"key": f.name, "type": _TYPES[f.name].__name__, "default": f.default, "section": name,
             "help": f.metadata["help"]} for name, cls in SECTIONS.items() for f in fields(cls)]


def section_title(name: str) -> str:
    """A section's one-line description: the first line of its class's docstring."""
    return f"{name}: " + " ".join(SECTIONS[name].__doc__.split())
