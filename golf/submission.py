"""The code a submission carries, and the challenge record folder (spec §5.5).

The challenge counts code bytes + compressed model bytes against 16,000,000. golf's code is a
package, so a submission's ``train_gpt.py`` is *generated*: golf.specialize makes golf's modules one
module specialized to the run's config and stages (every config read a constant, what those decide
folded away, what only a failed run reaches dropped), python-minifier shrinks it, and a coding line and a
two-line decoder hold it compressed and run the pipeline.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from golf.config import EVAL_MODES
from golf.runs import ARTIFACT, CONFIG, ENVIRONMENT, METRICS, QUANT_BUDGET, QUANTIZE_CONFIG, QUANTIZE_LOG, TRAIN_LOG, \
    RunDir, eval_name
from golf.runtime import GolfError, atomic_write_bytes, atomic_write_text, read_json_object

PACKAGE_DIR = Path(__file__).resolve().parent
# The report side (notebook plumbing, plots, seed statistics, comparisons) and the code that makes the
# submission are never part of the scored code; golf.specialize keeps what the run's entry point reaches.
NOT_SCORED = ("compare", "compare_tables", "lab", "notebooks", "plots", "report", "specialize", "stats", "study",
              "study_archive", "study_executors", "study_job", "study_plan", "submission")
DEFAULT_MODES = ("plain", "sliding", "ttt")  # the record's evaluation stages, the last one scored


def left_out(cfg, modes=DEFAULT_MODES) -> set[str]:
    """The modules a run of ``cfg`` evaluating ``modes`` never imports (each is imported lazily, where
    its switch is on), besides NOT_SCORED."""
    out = set(NOT_SCORED)
    if not set(modes) & {"lora_ttt", "phased_ttt"}:
        out.add("lora_ttt")
    if not (cfg.fused_mlp or cfg.fused_ce):
        out.add("kernels")
    return out


def embedded_values(cfg) -> dict:
    """The config as the exported file carries it: the keys that differ from golf's defaults (the
    record's); a data path under the project root is written relative, which the run reads from its folder."""
    from golf.config import PATH_KEYS, Config
    from golf.paths import project_root

    defaults = Config().to_dict()
    values = {}
    for key, value in cfg.to_dict().items():
        if key in PATH_KEYS:
            value = shipped_path(value, project_root())
        if value != defaults[key]:
            values[key] = value
    return values


def shipped_path(value: str, root: Path) -> str:
    """A data path as the exported file names it: relative where it lies under ``root`` (the project's)."""
    try:
        return str(Path(value).relative_to(root))
    except ValueError:
        return value


def _json_values(cfg) -> dict:
    """``embedded_values`` as they come back from JSON (tuples as lists), as the code is made from them."""
    return json.loads(json.dumps(embedded_values(cfg), sort_keys=True))


def train_gpt_bytes(cfg=None, modes=DEFAULT_MODES) -> bytes:
    """The single-file ``train_gpt.py`` for ``cfg`` (default: the record's) evaluating ``modes``, as bytes:
    golf's code specialized to them (golf.specialize), minified, brotli-compressed, in a latin-1 literal
    (``wrap``)."""
    from golf.config import Config

    values = embedded_values(cfg if cfg is not None else Config())
    return _source(json.dumps(values, sort_keys=True), tuple(modes))


@lru_cache(maxsize=8)
def _source(values_json: str, modes: tuple[str, ...]) -> bytes:
    values = json.loads(values_json)
    return wrap(_code(values, modes))


# The data paths stand in the specialized code as placeholders, filled in after: the code of a config is
# then the same wherever its data lie (tests make many), and it is kept on disk (_code_cache), keyed by
# golf's sources, python-minifier's version, the other values and the stages.
_PLACEHOLDERS = {"data_dir": "golfplaceholderdatadir", "tokenizer_path": "golfplaceholdertokenizerpath"}


def _code_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "golf" / "submission"


def _cache_path(values: dict, modes: tuple[str, ...]) -> Path:
    """Where the code of ``values`` scoring ``modes`` is kept (its data paths as placeholders)."""
    import hashlib
    from importlib.metadata import version

    generic = {**values, **_PLACEHOLDERS}
    h = hashlib.sha256(json.dumps([generic, modes, version("python-minifier"), version("torch"), sys.version],
                                  sort_keys=True).encode())
    for f in sorted(PACKAGE_DIR.glob("*.py")) + sorted(PACKAGE_DIR.glob("specialize/*.py")):  # (golf.specialize's too)
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return _code_cache() / f"{h.hexdigest()[:32]}.py"


def _code(values: dict, modes: tuple[str, ...], make: bool = True) -> str | None:
    """The minified code of the run of ``values`` scoring ``modes`` (golf.specialize, then python-minifier);
    None where it is not kept on disk yet and ``make`` is false."""
    from golf.config import Config, load_config

    paths = {k: values.get(k, getattr(Config(), k)) for k in _PLACEHOLDERS}
    path = _cache_path(values, modes)
    code = path.read_text() if path.is_file() else None
    if code is None and not make:
        return None
    if code is None:
        from golf.specialize import specialize

        cfg = load_config(None, values)
        code = minify_flat(specialize(cfg, modes, {**values, **_PLACEHOLDERS}, left_out(cfg, modes)))
        try:
            atomic_write_text(path, code)
        except OSError:
            pass  # no cache where it cannot be written
    for key, token in _PLACEHOLDERS.items():
        literals = [q + token + q for q in "'\"" if q + token + q in code]
        if len(literals) != 1 or code.count(literals[0]) != 1:
            raise GolfError(f"the specialized code holds the placeholder of {key} {code.count(token)} times")
        code = code.replace(literals[0], repr(str(paths[key])))
    return code


def code_bound() -> int:
    """An upper bound of any config's code bytes, at once: the scored modules' sources as they are (the
    file is about a twentieth of that: specialized, minified, compressed)."""
    return sum(f.stat().st_size for f in PACKAGE_DIR.glob("*.py") if f.stem not in NOT_SCORED)


def budget_code_bytes(cfg, modes=DEFAULT_MODES):
    """For quantize's budget: ``(model_bytes, limit) -> (code bytes, exact)``. The exact count takes
    golf.specialize a minute on a slow CPU, so it is made only where the bound could change what fits
    (pruning), or read where kept on disk; else the bound stands in (export-submission counts exactly)."""
    values = _json_values(cfg)

    def count(model_bytes: int, limit: int) -> tuple[int, bool]:
        code = _code(values, tuple(modes), make=model_bytes + code_bound() > limit)
        return (len(wrap(code)), True) if code is not None else (code_bound(), False)

    return count


# The payload: the code compressed with brotli (a dependency of the run already: golf's artifacts are
# brotli), its bytes as they are in a triple-quoted string literal of a file declared latin-1, where each
# byte is one character. Only what cannot stand there as it is gets an escape: NUL (no source may hold
# it), CR (read as a line end), backslash, and a quote after a quote or last. About 1.7% over the
# compressed bytes (base85: 25%).
FLAT_WRAPPER = '#coding:latin1\nimport brotli\nexec(brotli.decompress("""{payload}""".encode("latin1")))\n'
_ESCAPES = {0: "\\0", 13: "\\r", 92: "\\\\"}


def _literal(data: bytes) -> str:
    """The characters of a non-raw triple-quoted latin-1 literal whose value is ``data`` (see FLAT_WRAPPER)."""
    out = []
    for i, b in enumerate(data):
        nxt = data[i + 1] if i + 1 < len(data) else None
        if b == 0 and nxt is not None and 48 <= nxt <= 55:
            out.append("\\x00")  # \0 then an octal digit would read as one longer octal escape
        elif b in _ESCAPES:
            out.append(_ESCAPES[b])
        elif b == 34 and (nxt is None or out and out[-1] == '"'):
            out.append('\\"')
        else:
            out.append(chr(b))
    return "".join(out)


def compress(code: str) -> bytes:
    import brotli

    return brotli.compress(code.encode(), quality=11, lgwin=24, mode=brotli.MODE_TEXT)


def wrap(code: str) -> bytes:
    """The bytes of the train_gpt.py that runs ``code``: a coding line, a two-line decoder and the code,
    compressed (see FLAT_WRAPPER)."""
    return FLAT_WRAPPER.format(payload=_literal(compress(code))).encode("latin1")


def minify_flat(source: str) -> str:
    """python-minifier on the one specialized module: every name shrinks, annotations and asserts go,
    a dataclass's field annotations stay."""
    import builtins

    import python_minifier

    return python_minifier.minify(  # builtins keep their names: aliasing them compresses worse
        source, remove_literal_statements=True, rename_globals=True, rename_locals=True, hoist_literals=False,
        preserve_globals=dir(builtins),
        remove_asserts=True, remove_debug=False,
        remove_annotations=python_minifier.RemoveAnnotationsOptions(
            remove_variable_annotations=True, remove_return_annotations=True, remove_argument_annotations=True,
            remove_class_attribute_annotations=False))


def code_stages(cfg, modes=DEFAULT_MODES) -> dict[str, int]:
    """The sizes on the way to ``train_gpt.py`` (made afresh, no cache): the specialized module's source
    (characters), minified (characters), compressed (bytes), the file (bytes)."""
    from golf.specialize import specialize

    values = _json_values(cfg)
    source = specialize(cfg, tuple(modes), values, left_out(cfg, modes))
    code = minify_flat(source)
    return {"specialized": len(source), "minified": len(code), "compressed": len(compress(code)),
            "file": len(wrap(code))}


def code_bytes(cfg=None, modes=DEFAULT_MODES) -> int:
    return len(train_gpt_bytes(cfg, modes))


def shipped_config(run_dir: Path, changes: dict | None = None):
    """The config a run's train_gpt.py is made from: its quantization config (else its training one) with
    ``changes`` (the keys its results were scored with, see ``scored_changes``)."""
    from golf.config import load_config

    path = run_dir / QUANTIZE_CONFIG if (run_dir / QUANTIZE_CONFIG).is_file() else RunDir(run_dir).config_file
    return load_config(path, changes or None)


def _headline(results: dict[str, dict]) -> str | None:
    """The stage the submission is scored by: the last of EVAL_MODES that has a result."""
    return next((m for m in reversed(EVAL_MODES) if m in results), None)


def scored_changes(run_dir: Path, results: dict[str, dict], mixed_tokens: bool = False) -> dict:
    """The scoring keys (those golf evaluate reads, not how it runs) as the results were scored (golf
    evaluate starts from the training config, then its --set), where they differ from the artifact's
    config: the exported file then scores as they were scored. Results scored with different values of a
    key cannot come from one file: refused, except max_val_tokens where ``mixed_tokens`` allows it (the
    headline's value ships)."""
    from golf.config_stages import RUNTIME_KEYS, stage_keys

    run = RunDir(run_dir)
    trained = run.config()
    made = run.config(QUANTIZE_CONFIG) or trained
    changes = {m: r.get("config_changes") or {} for m, r in results.items()}
    out = {}
    headline = _headline(results)
    for key in (k for k in stage_keys("evaluate") if k not in RUNTIME_KEYS):
        values = {m: c.get(key, trained.get(key)) for m, c in changes.items()
                  if not (mixed_tokens and key == "max_val_tokens") or m == headline}
        if not values:
            continue
        value = values.get(headline, next(iter(values.values())))
        if len({json.dumps(v) for v in values.values()}) > 1:
            spelled = ", ".join(f"{eval_name(m)} {key}={v!r}" for m, v in values.items())
            redo = "; ".join(f"golf evaluate --run-dir {run_dir} --mode {m} --force --set {key}={value}"
                             for m, v in values.items() if v != value)
            raise GolfError(f"run folder {str(run_dir)!r}: its results were scored with different settings "
                            f"({spelled}); one train_gpt.py scores every stage with one config: score them alike, "
                            f"e.g. as the headline ({eval_name(headline)}): {redo}")
        if value != made.get(key):
            out[key] = value
    return out


def _read_json(path: Path) -> dict:
    return read_json_object(path)


def _made_from_artifact(path: Path, record: dict, sha: str, redo: str) -> None:
    """Refuse a result file that does not name the run's current artifact as its source."""
    recorded = record.get("artifact_sha256")
    if recorded != sha:
        what = f"artifact sha256 {recorded[:12]}" if recorded else "no artifact (made before golf recorded it)"
        raise GolfError(f"{str(path)!r} names {what}, but the run's {ARTIFACT} is sha256 {sha[:12]}: "
                        f"it describes another artifact and would ship beside this one; {redo}")


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _check_headline(results: dict, run_dir: Path, allow_mixed_tokens: bool) -> None:
    """The headline (last stage) must be measured on as many val tokens as every other stage shipped."""
    counts = {m: r.get("n_tokens") for m, r in results.items() if isinstance(r.get("n_tokens"), int)}
    if not counts or allow_mixed_tokens:
        return
    head = _headline(results)
    most = max(counts, key=counts.get)
    if head in counts and counts[head] < counts[most]:
        raise GolfError(f"{str(RunDir(run_dir).eval_result(head))!r}, the headline, scored {counts[head]:,} val "
                        f"tokens but {eval_name(most)} scored {counts[most]:,}: its BPB is not comparable with the others; "
                        f"evaluate {head} on the same text (--force, max_val_tokens as for {most}), or pass "
                        "--allow-mixed-tokens (submission.json and README.md then give each stage's count)")


def _run_world_size(run: RunDir) -> int | None:
    """The number of processes the run trained with (run.json), if recorded."""
    try:
        world = json.loads(run.run_info.read_text()).get("world_size")
    except (OSError, ValueError, AttributeError):
        return None
    return world if isinstance(world, int) and world > 0 else None


def _check_tokenizers(results: dict, run_dir: Path, allow_other_tokenizer: bool) -> None:
    """A stage scored with a tokenizer the run did not train with ships only when allowed."""
    other = [m for m, r in results.items() if (r.get("tokenizer") or {}).get("tokenizer_differs_from_training")
             or r.get("tokenizer_differs_from_training")]
    if other and not allow_other_tokenizer:
        raise GolfError(f"{', '.join(repr(str(RunDir(run_dir).eval_result(m))) for m in other)} scored with a "
                        "tokenizer the run did not train with: its BPB is not the model's; evaluate again with the "
                        "training tokenizer (--force), or pass --allow-other-tokenizer to export it anyway")


def export_submission(run_dir: Path, out_dir: Path, allow_over_budget: bool = False,
                      allow_mixed_tokens: bool = False, allow_other_tokenizer: bool = False) -> Path:
    """A record folder: ``train_gpt.py``, ``README.md``, ``submission.json`` and the run's logs.

    Every result and budget it ships must name the run's current artifact (its sha256), so a BPB
    never travels beside the size of an artifact that did not make it. An artifact over the byte
    limit, or a headline scored on fewer val tokens than another stage, is refused unless allowed.
    """
    from golf.paths import project_root
    from golf.quant import artifact_sha256

    run = RunDir(run_dir)
    artifact = run.artifact
    if not run_dir.is_dir():
        raise GolfError(f"run folder {str(run_dir)!r} does not exist")
    if not artifact.is_file():
        raise GolfError(f"run folder {str(run_dir)!r} has no {ARTIFACT}: run golf quantize first")
    if out_dir.exists() and not out_dir.is_dir():
        raise GolfError(f"output folder {str(out_dir)!r} is a file; expected a folder (or a path that does not exist)")
    blocking = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise GolfError(f"output folder {str(out_dir)!r} cannot be made: {str(blocking)!r} is a file")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise GolfError(f"output folder {str(out_dir)!r} is not empty; a record folder is never overwritten")
    sha = artifact_sha256(artifact)
    results = {}
    for mode in EVAL_MODES:
        path = run.eval_result(mode)
        if path.is_file():
            results[mode] = _read_json(path)
            missing = [k for k in ("val_bpb", "val_loss", "seconds")
                       if not isinstance(results[mode].get(k), (int, float)) or isinstance(results[mode].get(k), bool)]
            if missing:
                raise GolfError(f"{str(path)!r} has no number for {', '.join(map(repr, missing))}: it is not a "
                                f"result golf evaluate wrote; run golf evaluate --run-dir {run_dir} --mode {mode} "
                                "--force")
            _made_from_artifact(path, results[mode], sha,
                                f"run golf evaluate --run-dir {run_dir} --mode {mode} --force")
    if not results:  # a record ships a scored val_bpb; a re-quantized run's results were moved aside
        raise GolfError(f"run folder {str(run_dir)!r} has no evaluation result (eval_*.json) for its artifact: a record "
                        f"ships a scored val_bpb; run golf evaluate --run-dir {run_dir} --mode ttt (or plain, sliding) first")
    budget = {}
    if run.quant_budget.is_file():
        budget = _read_json(run.quant_budget)
        _made_from_artifact(run.quant_budget, budget, sha,
                            f"run golf quantize --run-dir {run_dir} --force")
    model_bytes = artifact.stat().st_size
    limit = int(budget.get("limit", 16_000_000))
    _check_headline(results, run_dir, allow_mixed_tokens)  # the checks before the code is made (a minute's work)
    _check_tokenizers(results, run_dir, allow_other_tokenizer)
    if budget.get("fits") is False and not allow_over_budget:
        raise GolfError(f"{str(artifact)!r} does not fit: {QUANT_BUDGET} says fits: false (artifact "
                        f"{model_bytes:,} + code {budget.get('code_bytes', 0):,} against the limit of {limit:,}); "
                        "quantize smaller, or pass --allow-over-budget to export it anyway")
    cfg = shipped_config(run_dir, scored_changes(run_dir, results, allow_mixed_tokens))
    source = train_gpt_bytes(cfg, tuple(results))
    n_code = len(source)
    total = model_bytes + n_code
    if total > limit and not allow_over_budget:
        counted = budget.get("code_modes")
        why = (f" (golf quantize counted the {budget.get('code_bytes', 0):,}-byte train_gpt.py of a submission scoring "
               f"{', '.join(counted)}; this one scores {', '.join(results)})"
               if counted and set(counted) != set(results) else "")
        raise GolfError(f"{str(artifact)!r} does not fit: artifact {model_bytes:,} + code {n_code:,} = "
                        f"{total:,} bytes against the limit of {limit:,}{why}; quantize smaller (a lower "
                        "artifact_limit_bytes prunes more), or pass --allow-over-budget to export it anyway")
    final = out_dir  # written in a folder beside it, renamed in at the end: never half a record
    final.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.export-"))
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(out_dir, 0o777 & ~mask)
        atomic_write_bytes(out_dir / "train_gpt.py", source)
        headline = results.get(_headline(results), {})  # the last stage reached
        submission = {
            "val_bpb": headline.get("val_bpb"),
            "val_loss": headline.get("val_loss"),
            "bytes_model": model_bytes,
            "bytes_code": n_code,
            "bytes_total": total,
            "fits": total <= limit and budget.get("fits") is not False,
            "val_tokens": headline.get("n_tokens"),
            "results_by_stage": {m: {"val_bpb": r["val_bpb"], "seconds": r["seconds"], "val_tokens": r.get("n_tokens"),
                                     **({"tokenizer_differs_from_training": True}
                                        if r.get("tokenizer_differs_from_training") else {})}
                                 for m, r in results.items()},
            # quantize's budget, its code count made exact (quantize may have used the bound)
            "quant_budget": {**budget, "code_bytes": n_code, "code_bytes_exact": True, "total": total,
                             "headroom": limit - total, "fits": total <= limit} if budget else budget,
        }
        atomic_write_text(out_dir / "submission.json", json.dumps(submission, indent=2) + "\n")
        accum = cfg.grad_accum_total  # the ranks must split its micro-batches evenly
        world = _run_world_size(run)
        nproc = world if world and accum % world == 0 else max(n for n in (8, 4, 2, 1) if accum % n == 0)
        others = [n for n in (1, 2, 4, 8) if accum % n == 0 and n != nproc]
        capped = cfg.max_wallclock_seconds > 0
        whose = f"the run's {nproc} process(es)" if world == nproc else f"{nproc} process(es)"
        elsewhere = ("" if not others else f"; it also runs on {', '.join(map(str, others))}, which "
                     + ("train another number of steps within the wall-clock cap" if capped else
                        "sum the same terms in another order: the last digits move"))
        lines = [f"# golf record from run `{run_dir.name}`", "",
                 "Generated by `golf export-submission`. `train_gpt.py` holds golf's code specialized to the run's",
                 "settings and stages (one module, every setting a constant), minified, brotli-compressed in a",
                 "latin-1 string literal;",
                 f"`torchrun --standalone --nproc_per_node={nproc} train_gpt.py` trains, quantizes and scores "
                 f"{', '.join(results) or ', '.join(DEFAULT_MODES)}",
                 f"into `outputs/submission/run-NNN`, its last line the scored val_bpb ({whose}{elsewhere}).",
                 "It reads the data at the paths it names, relative ones from the folder it runs in: "
                 + ", ".join(f"`{shipped_path(p, project_root())}`" for p in (cfg.data_dir, cfg.tokenizer_path))
                 + ".", "",
                 "| stage | val_bpb | seconds | val tokens |", "|---|---|---|---|"]
        lines += [f"| {m} | {r['val_bpb']:.6f} | {r['seconds']:.1f} | {_count(r.get('n_tokens'))}"
                  + (" (tokenizer other than training's)" if r.get("tokenizer_differs_from_training") else "") + " |"
                  for m, r in results.items()]
        lines += ["", f"Artifact {model_bytes:,} bytes + code {n_code:,} bytes = {total:,} bytes"
                  + ("." if total <= limit else f", OVER the limit of {limit:,} bytes.")]
        atomic_write_text(out_dir / "README.md", "\n".join(lines) + "\n")
        for name in (TRAIN_LOG, METRICS, CONFIG, ENVIRONMENT, QUANTIZE_LOG, QUANTIZE_CONFIG,
                     *(run.eval_log(m).name for m in results)):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, out_dir / name)
        os.replace(out_dir, final)  # replaces only an empty folder (checked above)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return final
