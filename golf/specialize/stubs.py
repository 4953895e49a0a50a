"""What a submission's run does not need, by judgement (each with its reason): stubbed functions, dropped
statements and info logs, progress bars, annotations."""
from __future__ import annotations

import ast

from golf.specialize.tree import SpecializeError, parent_map, _replace, _rewrite_blocks, walk


# Functions whose body the submission replaces: (new body, why a run of the exported file is the same
# without the old one). A name no longer in golf is skipped.
STUBS = {
    "code_version": ("return {}", "no git checkout travels with the code: golf's commit is unknown there"),
    "write_code_diff": ("return False", "the same: there is no diff to keep"),
    "environment_record": ("return {}", "python, torch and GPU versions: provenance for golf's reports"),
    "die_with_parent": ("return", "torchrun's agent ends its workers; golf's own children are not started"),
    "supersede_artifact": ("return None", "a new run folder holds no artifact to move aside"),
    "save_config": ("return", "config.yaml, quantize_config.yaml: the export ships the params it was made from"),
    "config_changes": ("return {}", "the run quantizes and scores with the config it trained with"),
    "_deserialize_v1": ("return", "the run reads only the artifact it wrote itself, format 2"),
    "check_eval_tokenizer": ("return {}", "the tokenizer's sha256 in each result: provenance golf export checks"),
    "check_data_binding": ("return {'warnings': []}",
                           "golf's data folders' record of their tokenizer (prepare.json, download.json: its sha256, "
                           "the shards' digests), checked before any golf run: the challenge's data carry neither file, "
                           "where the check only warns"),
    "check_model_fits": ("return", "memory for a model and batch a user chose, before any golf run: the export "
                                   "ships a run's settings that trained"),
    "enable_compile_cache": ("return None", "torch's compile caches are on by default, in its temporary folder: "
                                            "enough for one run; golf's folder under outputs/ serves runs after runs"),
    "RunDir.claim": ("return self", "the lock that keeps golf's commands off a run in use: the submission's run "
                                    "folder is its own, made a moment before"),
    "RunDir.release": ("return", "the same"),
    "_check_model_sha": ("return", "the check of model.pt against the sha256 training recorded for it"),
    "JsonlWriter.__init__": ("self._fh = None", "metrics.jsonl: golf's plots read it; the train log has the steps"),
    "atomic_write_bytes": ("path = Path(path)\npath.parent.mkdir(parents=True, exist_ok=True)\npath.write_bytes(data)",
                           "written in place: a killed submission run is a failed one, its half files never read"),
}
# Statements the submission drops: (function, a text of golf's source that marks the innermost statement
# holding it, why). A text no longer found is an error (golf changed: look again).
DROP_STATEMENTS = (
    ("train", "RunDir(run_dir).environment", "environment.json: provenance (versions, kernels) for golf's reports"),
    ("train", "file_sha256(", "model.pt's sha256 in train_summary.json: read back only by golf quantize's check"),
    ("quantize_run", ".table(", "quant_tensors.csv: the per-tensor error table of golf's reports"),
    ("quantize_model", "back, back_meta = deserialize(", "the verify stage: a check that the artifact reads back"),
    ("quantize_model", "if wrong or set(back)", "the same"),
    ("quantize_model", "wrong = [", "the same"),
    ("quantize_model", "'verify", "the same"),
    ("quantize_model", "for name, m in meta.items()", "quant_tensors.csv's rows"),
    ("quantize_model", "sizes = piece_bytes(", "the same"),
    ("evaluate_run", "made_from = {'artifact_sha256'", "the artifact's sha256 in each result: golf export checks it"),
)
# Expressions the submission replaces: (function, golf's text, replacement, when, why).
REPLACE_EXPRESSIONS = (
    ("setup_logging", "_BarSafeHandler(sys.stderr)", "logging.StreamHandler(sys.stderr)", lambda cfg: True,
     "the handler writes through tqdm so that a line never lands on a bar: there are no bars"),
    ("quantize_model", "pd.DataFrame(rows)", "None", lambda cfg: True, "quant_tensors.csv's table"),
    ("quantize_run", "hessian_path(run_dir, dist.rank).is_file()", "False", lambda cfg: not cfg.fix_gptq_in_budget,
     "training writes Hessians only under fix_gptq_in_budget"),
)
# The info lines of the log a submission keeps: those with the run's numbers (losses, BPB, bytes); the
# others (set-up, stages, timings) go, with what they format. Warnings all stay.
LOG_KEPT = ("step %d", "pre-quantization", "artifact %d bytes + code %s%d = %d (limit %d, fits", "%s (%s): val_loss",
            "prune round", "run folder")
# Functions of the config alone, called at export time: their result is written in their place.
AT_EXPORT = ("differences_from_record", "inert_settings")
# rANS pieces are written only by these compressors
RANS_COMPRESSORS = ("rans", "best")


def apply_stubs(module: ast.Module, cfg) -> None:
    """STUBS, AT_EXPORT, the rANS coder where the compressor never writes rANS pieces, and no progress bars."""
    stubs = {name: body for name, (body, _) in STUBS.items()}
    if cfg.compressor not in RANS_COMPRESSORS:
        stubs.update(rans_encode="return", rans_decode="return")
    from golf.config import differences_from_record
    from golf.config_rules import inert_settings

    constants = {"inert_settings": inert_settings(cfg), "differences_from_record": differences_from_record(cfg.to_dict())}
    for name, value in constants.items():
        stubs[name] = f"return {tuple(value) if isinstance(value, list) else value!r}"
    for st in module.body:
        if isinstance(st, ast.FunctionDef) and st.name in stubs:
            st.body = ast.parse(stubs[st.name]).body
        if isinstance(st, ast.ClassDef):
            for m in st.body:
                if isinstance(m, ast.FunctionDef) and f"{st.name}.{m.name}" in stubs:
                    m.body = ast.parse(stubs[f"{st.name}.{m.name}"]).body
    functions = {st.name: st for st in module.body if isinstance(st, ast.FunctionDef)}
    for fn_name, text, _ in DROP_STATEMENTS:
        if fn_name in functions and not _drop_statement(functions[fn_name], text):
            raise SpecializeError(f"DROP_STATEMENTS: no statement of {fn_name} holds {text!r} (golf changed?)")
    for fn_name, text, new, when, _ in REPLACE_EXPRESSIONS:
        if fn_name in functions and when(cfg) and not _replace_expression(functions[fn_name], text, new):
            raise SpecializeError(f"REPLACE_EXPRESSIONS: {text!r} is not in {fn_name} (golf changed?)")
    drop_progress_bars(module)
    drop_info_logs(module)


def drop_info_logs(module: ast.Module) -> None:
    """``log.info(...)`` statements but LOG_KEPT's."""
    def dropped(st) -> bool:
        return (isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Attribute)
                and st.value.func.attr == "info" and isinstance(st.value.func.value, ast.Name)
                and st.value.func.value.id == "log" and st.value.args and isinstance(st.value.args[0], ast.Constant)
                and not str(st.value.args[0].value).startswith(LOG_KEPT))

    for node in list(walk(module)):
        _rewrite_blocks(node, lambda st: [] if dropped(st) else [st])


def _drop_statement(fn: ast.FunctionDef, text: str) -> bool:
    """Drop each innermost statement of ``fn`` whose source holds ``text``."""
    def holds(st):
        return text in ast.unparse(st)

    def innermost(st):
        return holds(st) and not any(isinstance(n, ast.stmt) and n is not st and holds(n) for n in walk(st))

    dropped = False
    for node in list(walk(fn)):
        dropped |= _rewrite_blocks(node, lambda st: [] if innermost(st) else [st])
    return dropped


def _replace_expression(fn: ast.FunctionDef, text: str, new: str) -> bool:
    done = False
    parents = parent_map(fn)
    for node in list(walk(fn)):
        if isinstance(node, ast.expr) and ast.unparse(node) == text and id(node) in parents:
            _replace(parents[id(node)], node, ast.parse(new, mode="eval").body)
            done = True
    return done


BAR_MAKERS = ("progress_bar", "tqdm")  # golf.runtime's and tqdm's: a bar shows progress, nothing else
BAR_METHODS = ("update", "close", "set_postfix_str", "set_postfix", "refresh", "set_description")


def drop_progress_bars(module: ast.Module) -> None:
    """The progress bars go: a bar made and kept in a name (or a with), each statement that calls a method
    of it (what they pass is display only), and tqdm's write is print's (golf.cli's handler writes
    through it so that a log line never lands on a bar)."""
    for fn in walk(module):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        bars = set()
        for node in walk(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and _makes_bar(node.value):
                bars.add(node.targets[0].id)
            elif isinstance(node, ast.With):
                bars |= {i.optional_vars.id for i in node.items if _makes_bar(i.context_expr)
                         and isinstance(i.optional_vars, ast.Name)}
        if not bars:
            continue
        uses = [n for n in walk(fn) if isinstance(n, ast.Name) and n.id in bars]

        def of_bar(st) -> bool:
            return (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
                    and st.targets[0].id in bars) or (
                isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Attribute)
                and isinstance(st.value.func.value, ast.Name) and st.value.func.value.id in bars
                and st.value.func.attr in BAR_METHODS)

        removed = set()

        def without_bar(st) -> list[ast.stmt]:
            if of_bar(st):
                removed.update(id(n) for n in walk(st))
                return []
            if isinstance(st, ast.With):
                items = [i for i in st.items if not (_makes_bar(i.context_expr) and isinstance(
                    i.optional_vars, ast.Name) and i.optional_vars.id in bars)]
                if len(items) != len(st.items):
                    removed.update(id(n) for i in st.items if i not in items for n in walk(i))
                    if not items:
                        return st.body
                    st.items = items
            return [st]

        for node in list(walk(fn)):
            if isinstance(node, ast.Call):  # a bar handed on: by keyword it goes (default None), by position None
                gone = [k for k in node.keywords if isinstance(k.value, ast.Name) and k.value.id in bars]
                removed |= {id(k.value) for k in gone}
                node.keywords = [k for k in node.keywords if k not in gone]
                for j, a in enumerate(node.args):
                    if isinstance(a, ast.Name) and a.id in bars and not (
                            isinstance(node.func, ast.Attribute) and node.func.value is a):
                        removed.add(id(a))
                        node.args[j] = ast.Constant(None)
            _rewrite_blocks(node, without_bar)
        left = [n for n in uses if id(n) not in removed]
        if left:
            raise SpecializeError(f"{fn.name}: a progress bar is used otherwise: {[ast.unparse(n) for n in left]}")
    for node in walk(module):  # tqdm.write(text, file=stream) -> print(text, file=stream)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "tqdm"):
            node.func = ast.Name("print", ast.Load())


def _makes_bar(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BAR_MAKERS


def strip_annotations(module: ast.Module) -> None:
    """Annotations of arguments, returns and local variables (python-minifier drops them too; with
    ``from __future__ import annotations`` nothing evaluates them), so that a class named only there is not
    used as a value. A class body's annotated fields stay (dataclasses read them)."""
    for node in walk(module):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            a = node.args
            for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if x is not None:
                    x.annotation = None
            for inner in walk(node):
                _rewrite_blocks(inner, _unannotated)


def _unannotated(st: ast.stmt) -> list[ast.stmt]:
    """``x: T = v`` as ``x = v``; ``x: T`` goes."""
    if isinstance(st, ast.AnnAssign):
        return [] if st.value is None else [ast.Assign([st.target], st.value)]
    return [st]
