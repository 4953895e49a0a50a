"""What evaluating an expression may do besides giving its value: pure builtins, library queries and
mutators, and golf's own functions and methods that have no effect (``effect_free``)."""
from __future__ import annotations

import ast

from golf.specialize.tree import top_level_names, walk


# Calls with no effect but their value: Python's builtins of that kind and methods of that name on the
# objects golf calls them on (str, dict, Path, Tensor shapes...): a test made only of them may be dropped.
PURE_CALLS = {"getattr", "isinstance", "hasattr", "len", "int", "float", "bool", "str", "repr", "min", "max", "abs",
              "round", "sorted", "list", "tuple", "set", "frozenset", "dict", "type", "id", "any", "all", "sum",
              "range", "enumerate", "zip", "reversed", "Path", "divmod", "callable", "format", "property", "iter"}
PURE_METHODS = {"Namespace", "to_dict", "state_dict", "is_cuda", "element_size", "isfinite", "all", "any", "items", "keys", "values", "startswith", "endswith", "is_file", "is_dir", "exists", "isdigit",
                "strip", "lower", "upper", "split", "rsplit", "splitlines", "join", "format", "numel", "size",
                "dim", "isfinite", "is_floating_point", "is_available", "is_initialized", "relative_to"}


# A library function called through its module (``zlib.crc32``, ``torch.cuda.device_count``), or a method of
# a library's object, is taken for a query where its value is thrown away (the test of a dropped check, a
# store nothing reads), but for these names (and set_*, and torch's in-place *_).
MUTATORS = {"barrier", "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "reduce_scatter",
            "reduce_scatter_tensor", "reduce", "gather", "scatter", "send", "recv", "isend", "irecv", "broadcast",
            "broadcast_object_list", "monitored_barrier", "save", "remove", "replace", "unlink", "rename", "mkdir",
            "makedirs", "rmtree", "copy", "copy2", "copyfile", "move", "mkstemp", "mkdtemp", "fdopen", "manual_seed",
            "seed", "kill", "system", "run", "fsync", "chmod", "fchmod", "umask", "write", "writelines", "exit", "prctl",
            "init_process_group", "destroy_process_group", "synchronize", "empty_cache", "reset", "collect", "sleep",
            "signal", "basicConfig", "compile", "register", "put", "put_nowait", "get", "get_nowait", "start", "join",
            "submit", "map", "shutdown", "update", "append", "extend", "pop", "clear", "insert", "add", "discard",
            "setdefault", "popitem", "sort", "reverse", "step", "zero_grad", "backward", "load_state_dict", "apply",
            "register_buffer", "register_parameter", "to", "cuda", "cpu", "train", "eval", "open", "print", "exec",
            "eval", "setattr", "delattr", "next", "throw", "close", "flush", "seek", "acquire", "release", "wait",
            "set", "cache_clear", "info", "warning", "error", "debug", "exception", "critical", "log", "randn",
            "rand", "randint", "randperm", "normal", "uniform", "bernoulli", "multinomial", "random", "choice",
            "permutation", "shuffle", "integers", "encode_reverse", "decode", "wait_stream", "record_stream",
            "record", "release", "claim", "write_text", "write_bytes", "touch", "mkdir", "symlink_to", "link_to",
            "read", "readline", "readlines", "readinto", "recv", "send_bytes", "item", "next_batch", "pin_memory"}
# Library calls that make a new object of the calling function's own (its mutations are local).
LOCAL_FACTORIES = {"hashlib.sha256", "hashlib.blake2b", "hashlib.md5", "io.BytesIO"}
CONTAINER_MUTATORS = {"append", "extend", "update", "setdefault", "add", "pop", "insert", "discard", "remove", "sort",
                      "clear", "popitem", "reverse"}


def _mutator(attr: str) -> bool:
    return attr in MUTATORS or attr.startswith("set_") or (attr.endswith("_") and not attr.startswith("_"))


def queries(node: ast.AST, free: frozenset = frozenset()) -> bool:
    """Like ``pure``, and a call of a library's function or method is a query too (unless ``_mutator``), and
    so is a call of golf's effect-free functions and methods (``free``: names, ``.name`` for methods)."""
    for n in walk(node):
        if isinstance(n, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.Lambda)):
            return False
        if isinstance(n, ast.Call) and not (
                (isinstance(n.func, ast.Name) and (n.func.id in PURE_CALLS or n.func.id in free))
                or (isinstance(n.func, ast.Attribute) and (
                    n.func.attr in PURE_METHODS or "." + n.func.attr in free
                    or (_through_module(n.func.value) and (not _mutator(n.func.attr) or n.func.attr == "get"))
                    or (n.func.attr == "get" and 1 <= len(n.args) <= 2 and not n.keywords)
                    or (isinstance(n.func.value, ast.Name) and n.func.value.id != "self"
                        and not _mutator(n.func.attr) and n.func.attr not in _golf_method_names)))):
            return False
    return True


def _golf_query(node: ast.AST, free: frozenset) -> bool:
    """Like ``pure``, and golf's effect-free functions and methods too (no library call)."""
    for n in walk(node):
        if isinstance(n, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.Lambda)):
            return False
        if isinstance(n, ast.Call) and not (
                (isinstance(n.func, ast.Name) and (n.func.id in PURE_CALLS or n.func.id in free))
                or (isinstance(n.func, ast.Attribute) and (n.func.attr in PURE_METHODS or "." + n.func.attr in free))):
            return False
    return True


# Effect-free by what they do, where the analysis cannot tell: load_config reads and checks a config (the
# exported file's, which every read of it was folded into), nothing else.
EFFECT_FREE = ("load_config",)


def effect_free(module: ast.Module) -> frozenset:
    """golf's functions (by name) and methods (``.name``: every method of that name) whose call has no
    effect but its value: they store only into their own names and into containers they made, and call only
    pure builtins, library queries (see ``queries``) and other effect-free functions; a dataclass's
    constructor too. A method that stores into ``self`` has an effect."""
    functions = {st.name: st for st in module.body if isinstance(st, ast.FunctionDef) and not st.decorator_list}
    methods: dict[str, list[ast.FunctionDef]] = {}
    free = set()
    for st in module.body:
        if isinstance(st, ast.ClassDef):
            if any("dataclass" in ast.unparse(d) for d in st.decorator_list) and not any(
                    isinstance(m, ast.FunctionDef) and m.name in ("__post_init__", "__init__") for m in st.body):
                free.add(st.name)
            for m in st.body:
                if isinstance(m, ast.FunctionDef):
                    methods.setdefault(m.name, []).append(m)
    library_names = {n for st in module.body if isinstance(st, (ast.Import, ast.ImportFrom)) for n in top_level_names(st)}
    free |= {name for name in EFFECT_FREE if name in functions}
    # a plain class (no base) whose __init__ stores its arguments' values into self: making one is a query
    plain = {st.name: next(m for m in st.body if isinstance(m, ast.FunctionDef) and m.name == "__init__")
             for st in module.body if isinstance(st, ast.ClassDef) and not st.bases and not st.decorator_list
             and any(isinstance(m, ast.FunctionDef) and m.name == "__init__" for m in st.body)}
    needs: dict[tuple[int, bool], frozenset | None] = {}

    def body_free(fn, own_self=False) -> bool:
        key = (id(fn), own_self)
        if key not in needs:
            needs[key] = _effect_free_needs(fn, library_names, own_self)
        return needs[key] is not None and needs[key] <= free

    while True:
        new = {name for name, fn in functions.items() if name not in free and body_free(fn)}
        new |= {name for name, init in plain.items() if name not in free and body_free(init, own_self=True)}
        new |= {"." + name for name, ms in methods.items() if "." + name not in free and not _mutator(name)
                and not name.startswith("__") and all(body_free(m) for m in ms)}
        if not new:
            return frozenset(free)
        free |= new


def _effect_free_needs(fn: ast.FunctionDef, library_names: set, own_self: bool = False) -> frozenset | None:
    """What ``fn`` needs to be effect-free: the functions (names) and methods (``.name``) it calls that must
    be (``effect_free``'s set); None where it has an effect whatever they are."""
    a = fn.args
    params = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
    nodes = list(walk(fn))
    local_defs = {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not fn}
    fresh, stored = set(), {}
    for n in nodes:
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Name):
                    stored.setdefault(t.id, []).append(n.value)
                elif isinstance(t, ast.Tuple):
                    values = n.value.elts if isinstance(n.value, ast.Tuple) and len(n.value.elts) == len(t.elts) \
                        else [None] * len(t.elts)
                    for e, v in zip(t.elts, values):
                        if isinstance(e, ast.Name):
                            stored.setdefault(e.id, []).append(v)
    for name, values in stored.items():
        if name not in params and None not in values and all(
                isinstance(v, ast.Call) and ast.unparse(v.func) in LOCAL_FACTORIES for v in values):
            fresh.add(name)
            continue
        if name not in params and None not in values and all(isinstance(v, (ast.Dict, ast.List, ast.Set, ast.ListComp, ast.DictComp,
                                                     ast.SetComp)) or (isinstance(v, ast.Call) and isinstance(
                                                         v.func, ast.Name) and v.func.id in ("dict", "list", "set"))
                                      for v in values):
            fresh.add(name)
    opened = set()  # with open(path, 'rb') as f: a file read
    for n in nodes:
        if isinstance(n, ast.With):
            for item in n.items:
                e = item.context_expr
                if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "open"
                        and len(e.args) == 2 and isinstance(e.args[1], ast.Constant)
                        and e.args[1].value in ("r", "rb") and isinstance(item.optional_vars, ast.Name)):
                    return None
                fresh.add(item.optional_vars.id)
                opened.add(id(e))
    out = set()
    for n in nodes:
        if isinstance(n, (ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom, ast.Await, ast.AsyncWith,
                          ast.Delete, ast.ClassDef)):
            return None
        if id(n) in opened:
            continue
        if isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            base = n.value
            if not (isinstance(base, ast.Name) and (base.id in fresh or (own_self and base.id == "self"
                                                                          and isinstance(n, ast.Attribute)))):
                return None
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name):
                if not (f.id in PURE_CALLS or f.id in local_defs):
                    out.add(f.id)
            elif isinstance(f, ast.Attribute):
                if f.attr in PURE_METHODS:
                    continue
                if not _library_query(f, n, fresh, library_names, params, stored):
                    out.add("." + f.attr)
            else:
                return None
    return frozenset(out)


def _library_query(f: ast.Attribute, n: ast.Call, fresh: set, library_names: set, params: set, stored: dict) -> bool:
    """Whether the method call ``n`` (of ``f``) has no effect but its value, whatever golf's functions are."""
    if isinstance(f.value, ast.Name) and f.value.id in fresh:
        return True  # a method of a container the function made (get, append...)
    if f.attr == "get" and 1 <= len(n.args) <= 2 and not n.keywords:
        return True  # a mapping's get(key[, default]) (a queue's get takes no key)
    if _mutator(f.attr) or f.attr in CONTAINER_MUTATORS:
        return False
    root = f.value
    while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
        root = root.func if isinstance(root, ast.Call) else root.value
    if isinstance(root, ast.Name) and root.id in library_names:
        return True  # a library's function or a method of what it made
    if isinstance(root, ast.Name) and (root.id in params or root.id in stored or root.id == "self"):
        return f.attr not in _golf_method_names  # else a method of golf's that may have an effect
    return isinstance(root, ast.Constant) or (isinstance(root, ast.Name) and root.id in PURE_CALLS)


_golf_method_names: set[str] = set()  # filled by simplify: the method names golf's classes define


LIBRARIES = {"torch", "np", "os", "sys", "zlib", "lzma", "brotli", "json", "math", "struct", "hashlib", "F", "dist",
             "platform", "time", "io", "yaml", "spm", "re"}


def _through_module(node: ast.AST) -> bool:
    """``module`` or ``module.sub.sub`` for an imported library module."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in LIBRARIES


def pure(node: ast.AST) -> bool:
    """Whether evaluating ``node`` has no effect but its value (no call but those of PURE_CALLS and
    PURE_METHODS, no await, yield or walrus)."""
    for n in walk(node):
        if isinstance(n, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            return False
        if isinstance(n, ast.Call) and not (
                (isinstance(n.func, ast.Name) and n.func.id in PURE_CALLS)
                or (isinstance(n.func, ast.Attribute) and n.func.attr in PURE_METHODS)):
            return False
    return True
