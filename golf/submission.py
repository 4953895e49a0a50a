"""The code a submission carries, and the challenge record folder (spec §5.5).

The challenge counts code bytes + compressed model bytes against 16,000,000. golf's code is a
package, so a submission's ``train_gpt.py`` is *generated*: a short wrapper holding the golf
sources as an xz-compressed, base85-encoded zip that it imports from, then runs the pipeline.
"""
from __future__ import annotations

import ast
import base64
import io
import json
import lzma
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from golf.config import EVAL_MODES
from golf.runs import ARTIFACT, CONFIG, ENVIRONMENT, METRICS, QUANT_BUDGET, QUANTIZE_CONFIG, QUANTIZE_LOG, TRAIN_LOG, \
    RunDir, eval_name
from golf.runtime import GolfError, atomic_write_text, read_json_object

PACKAGE_DIR = Path(__file__).resolve().parent
# The report side (notebook plumbing, plots, seed statistics, comparisons) and this file are never part
# of the scored code; of the others, the walk below keeps what the run's entry point reaches.
NOT_SCORED = ("compare", "lab", "notebooks", "plots", "report", "specialize", "stats", "study", "submission")
ENTRY = ("cli", "run_submission")  # what the exported train_gpt.py calls
DEFAULT_MODES = ("plain", "sliding", "ttt")  # the record's evaluation stages, the last one scored

# The zip lives in a temporary folder for the run (zipimport reads it lazily) and goes at exit. C: the
# config's keys that differ from golf's defaults (the record's), M: the evaluation stages, in order.
WRAPPER = '''import atexit,base64,lzma,os,shutil,sys,tempfile
C={values!r}
M={modes!r}
d=tempfile.mkdtemp();atexit.register(shutil.rmtree,d,True);z=os.path.join(d,"golf.zip");open(z,"wb").write(lzma.decompress(base64.b85decode({payload!r})))
sys.path.insert(0,z);from golf.cli import run_submission;sys.exit(run_submission(C,M,os.path.getsize(__file__)))
'''


def left_out(cfg, modes=DEFAULT_MODES) -> set[str]:
    """The modules a run of ``cfg`` evaluating ``modes`` never imports (each is imported lazily, where
    its switch is on), besides NOT_SCORED: the walk cuts its edges into them."""
    out = set(NOT_SCORED)
    if not set(modes) & {"lora_ttt", "phased_ttt"}:
        out.add("lora_ttt")
    if not (cfg.fused_mlp or cfg.fused_ce):
        out.add("kernels")
    return out


def _defined(st: ast.stmt) -> list[str] | None:
    """The top-level names a statement binds, or None for one kept whatever is used (an expression, an
    ``if``, ``from __future__``, an assignment to something other than a name)."""
    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [st.name]
    if isinstance(st, ast.Import):
        return [a.asname or a.name.split(".")[0] for a in st.names]
    if isinstance(st, ast.ImportFrom):
        return None if st.module == "__future__" else [a.asname or a.name for a in st.names]
    targets = st.targets if isinstance(st, ast.Assign) else [st.target] if isinstance(st, ast.AnnAssign) else None
    names = []
    for t in targets or [None]:
        elts = t.elts if isinstance(t, ast.Tuple) else [t]
        if not all(isinstance(e, ast.Name) for e in elts):
            return None
        names += [e.id for e in elts]
    return names


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _locals(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """The names a function binds (its arguments, assignments, imports, nested definitions) and does not
    declare global: a use of one inside it is not the module's name."""
    a = fn.args
    names = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
    declared = set()
    todo = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            if not isinstance(node, ast.Lambda):
                names.add(node.name)
            todo += [*node.decorator_list] if not isinstance(node, ast.Lambda) else []
            continue  # its own scope
        todo += ast.iter_child_nodes(node)
    return names - declared


def _free_names(st: ast.stmt) -> list[ast.Name]:
    """The names a statement reads that are not bound by a function around them (module-level names)."""
    out = []

    def visit(node: ast.AST, bound: frozenset) -> None:
        if isinstance(node, _FUNCTIONS):
            for d in (*getattr(node, "decorator_list", ()), *node.args.defaults,
                      *(x for x in node.args.kw_defaults if x is not None)):
                visit(d, bound)
            for x in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg,
                      node.args.kwarg, getattr(node, "returns", None)):
                if x is not None:
                    visit(x, bound)
            inner = bound | _locals(node)
            for child in (node.body if isinstance(node.body, list) else [node.body]):
                visit(child, inner)
            return
        if isinstance(node, ast.Name) and node.id not in bound:
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, bound)

    visit(st, frozenset())
    return out


def _is_main_guard(st: ast.stmt) -> bool:
    return isinstance(st, ast.If) and "__main__" in ast.unparse(st.test) and "__name__" in ast.unparse(st.test)


def _golf_target(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> tuple[str, str | None] | None:
    """What an imported name is in golf: (module, name), (module, None) for a whole module, or None."""
    if isinstance(node, ast.Import):
        return (alias.name[5:], None) if alias.name.startswith("golf.") else None
    if node.module == "golf":
        return (alias.name, None) if (PACKAGE_DIR / f"{alias.name}.py").is_file() else ("__init__", alias.name)
    if node.module and node.module.startswith("golf."):
        return node.module[5:], alias.name
    return None


class _Walk:
    """Which top-level statements of which golf modules the entry point reaches, by name (ast).

    A name a kept statement uses keeps the statements of its module that bind it; ``from golf.x import
    y`` (at any depth) keeps ``y`` of ``golf.x``; ``import golf.x as m`` keeps what ``m.attr`` names,
    or all of ``golf.x`` where ``m`` is used otherwise. Class bodies are kept whole. Edges into a left-out
    module are cut, which is allowed only for imports inside functions (lazy ones)."""

    def __init__(self, skip: set[str]):
        self.skip = skip
        self.bodies: dict[str, list[ast.stmt]] = {}
        self.defs: dict[str, dict[str, list[int]]] = {}
        self.kept: dict[str, set[int]] = {}
        self.aliases: dict[tuple[str, int], set[str]] = {}  # the names kept of a top-level import
        self.todo: list[tuple] = []

    def module(self, m: str) -> None:
        if m in self.bodies:
            return
        tree = ast.parse((PACKAGE_DIR / f"{m}.py").read_text())
        body = self.bodies[m] = [st for st in tree.body if not _is_main_guard(st)]
        defs = self.defs[m] = {}
        self.kept[m] = set()
        for i, st in enumerate(body):
            names = _defined(st)
            for n in names or ():
                defs.setdefault(n, []).append(i)
            if names is None:
                self.todo.append(("stmt", m, i))
        if m != "__init__":
            self.module("__init__")

    def target(self, m: str, t: tuple[str, str | None], top: bool) -> None:
        if t[0] in self.skip:
            if top:
                raise GolfError(f"golf.{m} imports golf.{t[0]} at the top, which this submission leaves out: "
                                "import it inside the function that needs it")
            return
        self.module(t[0])
        self.todo.append(("all", t[0]) if t[1] is None else ("sym", t[0], t[1]))

    def run(self, m: str, name: str) -> None:
        self.module(m)
        self.todo.append(("sym", m, name))
        while self.todo:
            kind, m, *rest = self.todo.pop()
            if kind == "all":
                self.todo += [("sym", m, n) for n in self.defs[m]]
            elif kind == "sym":
                for i in self.defs[m].get(rest[0], ()):
                    st = self.bodies[m][i]
                    if isinstance(st, (ast.Import, ast.ImportFrom)):
                        self.kept[m].add(i)
                        kept = self.aliases.setdefault((m, i), set())
                        for a in st.names:
                            bound = a.asname or (a.name.split(".")[0] if isinstance(st, ast.Import) else a.name)
                            if bound == rest[0] and bound not in kept:
                                kept.add(bound)
                                t = _golf_target(st, a)
                                if t is not None:
                                    self.target(m, t, top=True)
                    else:
                        self.todo.append(("stmt", m, i))
            elif rest[0] not in self.kept[m]:
                self.kept[m].add(rest[0])
                self.statement(m, self.bodies[m][rest[0]])

    def statement(self, m: str, st: ast.stmt) -> None:
        modules = {}  # module aliases bound inside the statement: import golf.x as m
        for node in ast.walk(st):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node is not st:
                for a in node.names:
                    t = _golf_target(node, a)
                    if t is None:
                        continue
                    if t[1] is None:
                        modules[a.asname or a.name.split(".")[0]] = t[0]
                    else:
                        self.target(m, t, top=False)
        used_as_attr = set()
        for node in ast.walk(st):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                used_as_attr.add(id(node.value))
                if modules[node.value.id] not in self.skip:
                    self.target(m, (modules[node.value.id], node.attr), top=False)
        for node in ast.walk(st):  # a module bound inside: a use other than module.attr keeps it whole
            if isinstance(node, ast.Name) and node.id in modules and id(node) not in used_as_attr \
                    and modules[node.id] not in self.skip:
                self.target(m, (modules[node.id], None), top=False)
        for node in _free_names(st):
            if node.id in self.defs[m] and node.id not in modules:
                self.todo.append(("sym", m, node.id))

    def sources(self) -> dict[str, str]:
        """Each reached module's kept statements (a top-level import keeps only the names used), as source."""
        out = {}
        for m, body in self.bodies.items():
            if m == "__init__":
                out[m] = ast.unparse(ast.Module(body=body, type_ignores=[]))
                continue
            kept = []
            for i in sorted(self.kept[m]):
                st = body[i]
                if _defined(st) is not None and isinstance(st, (ast.Import, ast.ImportFrom)):
                    used = self.aliases.get((m, i), set())
                    names = [a for a, bound in zip(st.names, _defined(st)) if bound in used]
                    st = type(st)(**{**{f: getattr(st, f) for f in st._fields}, "names": names})
                kept.append(st)
            out[m] = ast.unparse(ast.fix_missing_locations(ast.Module(body=kept, type_ignores=[])))
        return out


def reached_sources(cfg, modes=DEFAULT_MODES) -> dict[str, str]:
    """golf's code as the exported train_gpt.py carries it for ``cfg`` and ``modes``: the modules and
    top-level definitions the entry point reaches, as source (before minifying)."""
    walk = _Walk(left_out(cfg, modes))
    walk.run(*ENTRY)
    return walk.sources()


def minify(source: str) -> str:
    """python-minifier, keeping every module-level name (other modules import them), the dataclass
    annotations (Config's fields) and the asserts; docstrings go, local names shrink."""
    import python_minifier

    return python_minifier.minify(
        source, remove_literal_statements=True, rename_globals=False, rename_locals=True, hoist_literals=False,
        remove_asserts=False, remove_debug=False,
        remove_annotations=python_minifier.RemoveAnnotationsOptions(
            remove_variable_annotations=True, remove_return_annotations=True, remove_argument_annotations=True,
            remove_class_attribute_annotations=False))


def scored_source(path: Path) -> str:
    """A whole module minified, as it would count against the budget."""
    return minify(path.read_text())


def _package_zip(sources: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(sources):
            info = zipfile.ZipInfo(f"golf/{name}.py", date_time=(2026, 1, 1, 0, 0, 0))  # reproducible bytes
            zf.writestr(info, minify(sources[name]) + "\n")
    return buf.getvalue()


def embedded_values(cfg) -> dict:
    """The config as the exported file carries it: the keys that differ from golf's defaults (the
    record's); a data path under the project root is written relative, which the run reads from its folder."""
    from golf.config import PATH_KEYS, Config
    from golf.paths import project_root

    defaults = Config().to_dict()
    values = {}
    for key, value in cfg.to_dict().items():
        if key in PATH_KEYS:
            try:
                value = str(Path(value).relative_to(project_root()))
            except ValueError:
                pass
        if value != defaults[key]:
            values[key] = value
    return values


def train_gpt_source(cfg=None, modes=DEFAULT_MODES) -> str:
    """The single-file ``train_gpt.py`` for ``cfg`` (default: the record's) evaluating ``modes``: golf's
    reached code, minified, zipped, xz preset 9 (CRC64) + base85, like the records' wrappers."""
    from golf.config import Config

    values = embedded_values(cfg if cfg is not None else Config())
    return _source(json.dumps(values, sort_keys=True), tuple(modes))


@lru_cache(maxsize=8)
def _source(values_json: str, modes: tuple[str, ...]) -> str:
    from golf.config import load_config
    from golf.specialize import specialize

    values = json.loads(values_json)
    cfg = load_config(None, values)
    code = minify_flat(specialize(cfg, modes, values, left_out(cfg, modes)))
    return wrap(code)


# The payload: the code compressed with brotli (a dependency of the run already: golf's artifacts are
# brotli), as 7-bit digits, one character each, in a raw triple-quoted string literal of the UTF-8 file.
# Digit d is the ASCII character of d ^ K (K chosen per file to need the fewest two-byte characters),
# except where that character cannot stand there as it is (NUL, CR, a third quote in a row, a quote or
# backslash last), which is the character of 256 + (d ^ K): two bytes in UTF-8; ``ord(c) & 127 ^ K``
# reads either. About 15% over the compressed bytes (base85: 25%).
FLAT_WRAPPER = ('import brotli\nS=r"""{digits}"""\n'
                "exec(brotli.decompress(int(''.join(f'{{ord(c)&127^{key}:07b}}'for c in S),2).to_bytes({n},'big')))\n")


def _spell(values: list[int]) -> str:
    """Characters for 7-bit values in a raw triple-quoted literal (see FLAT_WRAPPER)."""
    out = []
    for i, v in enumerate(values):
        last = i == len(values) - 1
        plain = v not in (0, 13) and not (v == 34 and out[-2:] == ['"', '"']) and not (last and v in (34, 92))
        out.append(chr(v) if plain else chr(256 + v))
    return "".join(out)


def wrap(code: str) -> str:
    """The train_gpt.py that runs ``code``: a two-line decoder and the code, compressed (see FLAT_WRAPPER)."""
    import brotli

    data = brotli.compress(code.encode(), quality=11, lgwin=24, mode=brotli.MODE_TEXT)
    value, n_digits = int.from_bytes(data, "big"), -(-len(data) * 8 // 7)
    digits = [(value >> 7 * (n_digits - 1 - i)) & 127 for i in range(n_digits)]
    spelled = {key: _spell([d ^ key for d in digits]) for key in range(128)}
    key = min(spelled, key=lambda k: (len(spelled[k].encode()), k))
    return FLAT_WRAPPER.format(digits=spelled[key], key=key, n=len(data))


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


def code_bytes(cfg=None, modes=DEFAULT_MODES) -> int:
    return len(train_gpt_source(cfg, modes).encode())


def run_source(run_dir: Path, modes: tuple[str, ...] = ()) -> str:
    """The train_gpt.py of a run: its quantization config (else its training one), scoring ``modes``
    (default: DEFAULT_MODES)."""
    from golf.config import load_config

    run = RunDir(run_dir)
    path = run_dir / QUANTIZE_CONFIG if (run_dir / QUANTIZE_CONFIG).is_file() else run.config_file
    return train_gpt_source(load_config(path), modes or DEFAULT_MODES)


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
    head = next(m for m in reversed(EVAL_MODES) if m in results)
    most = max(counts, key=counts.get)
    if head in counts and counts[head] < counts[most]:
        raise GolfError(f"{str(RunDir(run_dir).eval_result(head))!r}, the headline, scored {counts[head]:,} val "
                        f"tokens but {eval_name(most)} scored {counts[most]:,}: its BPB is not comparable with the others; "
                        f"evaluate {head} on the same text (--force, max_val_tokens as for {most}), or pass "
                        "--allow-mixed-tokens (submission.json and README.md then give each stage's count)")


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
    from golf.quant import artifact_sha256

    run = RunDir(run_dir)
    artifact = run.artifact
    if not artifact.is_file():
        raise GolfError(f"run folder {str(run_dir)!r} has no {ARTIFACT}: run golf quantize first")
    if out_dir.exists() and not out_dir.is_dir():
        raise GolfError(f"output folder {str(out_dir)!r} is a file; expected a folder (or a path that does not exist)")
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
    budget = {}
    if run.quant_budget.is_file():
        budget = _read_json(run.quant_budget)
        _made_from_artifact(run.quant_budget, budget, sha,
                            f"run golf quantize --run-dir {run_dir} --force")
    model_bytes = artifact.stat().st_size
    limit = int(budget.get("limit", 16_000_000))
    source = run_source(run_dir, tuple(results))
    n_code = len(source.encode())
    total = model_bytes + n_code
    if (total > limit or budget.get("fits") is False) and not allow_over_budget:
        raise GolfError(f"{str(artifact)!r} does not fit: artifact {model_bytes:,} + code {n_code:,} = "
                        f"{total:,} bytes against the limit of {limit:,}"
                        + (f" ({QUANT_BUDGET} says fits: false)" if budget.get("fits") is False else "")
                        + "; quantize smaller, or pass --allow-over-budget to export it anyway")
    _check_headline(results, run_dir, allow_mixed_tokens)
    _check_tokenizers(results, run_dir, allow_other_tokenizer)
    final = out_dir  # written in a folder beside it, renamed in at the end: never half a record
    final.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.export-"))
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(out_dir, 0o777 & ~mask)
        atomic_write_text(out_dir / "train_gpt.py", source)
        headline = next((results[m] for m in reversed(EVAL_MODES) if m in results), {})  # the last stage reached
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
            "quant_budget": budget,
        }
        atomic_write_text(out_dir / "submission.json", json.dumps(submission, indent=2) + "\n")
        lines = [f"# golf record from run `{run_dir.name}`", "",
                 "Generated by `golf export-submission`. `train_gpt.py` holds the run's settings (the keys that differ",
                 "from golf's defaults) and the golf code they reach, minified, zipped, xz-compressed and base85-encoded;",
                 "`torchrun --standalone --nproc_per_node=8 train_gpt.py` trains, quantizes and scores "
                 f"{', '.join(results) or ', '.join(DEFAULT_MODES)}",
                 "into `outputs/submission/run-NNN`, its last line the scored val_bpb.", "",
                 "| stage | val_bpb | seconds | val tokens |", "|---|---|---|---|"]
        lines += [f"| {m} | {r['val_bpb']:.6f} | {r['seconds']:.1f} | {_count(r.get('n_tokens'))}"
                  + (" (tokenizer other than training's)" if r.get("tokenizer_differs_from_training") else "") + " |"
                  for m, r in results.items()]
        lines += ["", f"Artifact {model_bytes:,} bytes + code {n_code:,} bytes = {total:,} bytes"
                  + ("." if total <= limit else f", OVER the limit of {limit:,} bytes.")]
        atomic_write_text(out_dir / "README.md", "\n".join(lines) + "\n")
        for name in (TRAIN_LOG, METRICS, CONFIG, ENVIRONMENT, QUANTIZE_LOG, QUANTIZE_CONFIG):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, out_dir / name)
        os.replace(out_dir, final)  # replaces only an empty folder (checked above)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return final
