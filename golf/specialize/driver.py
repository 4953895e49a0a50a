"""The whole pass: one namespace, the stage lookups, the embedded modules, prune and the stubs, then every
pass again and again until none changes anything (``simplify``)."""
from __future__ import annotations

import ast

from golf.specialize.analyses import _Analyses, forget_analyses, locate, nodes_of, scopes_of, tree_changed
from golf.specialize.attributes import drop_dead_attributes, drop_idle_method_calls, propagate_attributes
from golf.specialize.bindings import (
    drop_dead_stores, drop_write_only, fold_constant_tables, propagate_constants, propagate_forward)
from golf.specialize.effects import effect_free, _golf_method_names, pure
from golf.specialize.embedded import embed, fill_embedded
from golf.specialize.failures import drop_failure_paths
from golf.specialize.flatten import Flattener
from golf.specialize.fold import Fold
from golf.specialize.inline import (
    drop_unused_results, fold_comprehensions, inline_expression_functions, inline_single_use, unroll_loops, _yields)
from golf.specialize.parameters import namespace_parameters, narrow_parameters, positional_only, specialize_parameters
from golf.specialize.prune import ENTRY, drop_repeated_imports, prune, prune_instance_members
from golf.specialize.run_config import FoldConfig, _check_config_names, config_values, path_constants
from golf.specialize.scopes import Scopes
from golf.specialize.stubs import apply_stubs, strip_annotations
from golf.specialize.tree import SpecializeError, copy_tree, parent_map, _replace, walk


def _stage_lookups(module: ast.Module, flattener: Flattener, modes) -> None:
    """``getattr(golf.evaluate, EVAL_FUNCS[mode])(args)`` (golf.pipeline): a direct call of the module's
    ``eval_<stage>`` function of each stage this run scores, the one whose name the lookup gives
    (``f(a) if key == 'f' else g(a) if ...``), so that each function's every call is known."""
    parents = parent_map(module)
    for node in list(walk(module)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and isinstance(node.args[0], ast.Name) and node.args[0].id.startswith("__golf_module__")):
            m = node.args[0].id.removeprefix("__golf_module__")
            call = parents[id(node)]
            if not (isinstance(call, ast.Call) and call.func is node and pure(node.args[1])):
                raise SpecializeError(f"getattr(golf.{m}, ...) not called at once: {ast.unparse(call)}")
            names = [f"eval_{mode}" for mode in modes if f"eval_{mode}" in flattener.defined(m)]
            if not names:
                _replace(parents[id(call)], call, ast.Constant(None))
                continue
            calls = [ast.Call(ast.Name(flattener.resolve(m, n), ast.Load()), copy_tree(call.args),
                              copy_tree(call.keywords)) for n in names]
            expr = calls[-1]
            for n, c in zip(names[-2::-1], calls[-2::-1]):
                expr = ast.IfExp(ast.Compare(copy_tree(node.args[1]), [ast.Eq()], [ast.Constant(n)]), c, expr)
            _replace(parents[id(call)], call, expr)


def simplify(module: ast.Module, values: dict, log=None) -> None:
    """Every pass, again and again until none changes anything. A pass reads the tree's analyses
    (``scopes_of``, ``parents_of``, ``nodes_of``) as the last change left them, and one that changed
    nothing is not run again until the tree or what it is given (``free``...) changes. New nodes get a
    location (``locate``) only where ast.unparse reads one: a statement unparsed, and the result."""
    import time

    _check_config_names(module, Scopes(module))
    strip_annotations(module)
    generators = [fn for fn in walk(module) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and _yields(fn)]
    tree_changed()
    clean: dict[str, tuple] = {}  # pass -> (the tree's generation, its inputs) where it last changed nothing
    known_free: tuple = ()
    config_read = True  # whether the tree may still read the config
    rounds = 0
    while True:
        rounds += 1
        t0 = time.perf_counter()
        steps = []
        inputs: tuple = ()

        def step(name, run):
            key = (_Analyses.generation, inputs)
            if clean.get(name) == key:
                steps.append((name, False))
                return
            changed = run()
            steps.append((name, changed))
            if changed:
                tree_changed()
            elif _Analyses.generation == key[0]:
                clean[name] = key

        def fold_config():
            nonlocal config_read
            fc = FoldConfig(values)
            if config_read and fc.reads(nodes_of(module)):
                fc.visit(module)
            else:  # none left, and the passes make none (what they copy holds none either)
                config_read = False
            return fc.changed

        step("config", fold_config)
        scopes = scopes_of(module)
        shadowed = set(scopes.root.bound)
        idle = {st.name for st in module.body if isinstance(st, ast.FunctionDef) and len(scopes.root.bound[st.name]) == 1
                and all(isinstance(b, ast.Pass) or (isinstance(b, ast.Return) and b.value is None) for b in st.body)}
        _golf_method_names.clear()
        _golf_method_names.update(m.name for c in module.body if isinstance(c, ast.ClassDef) for m in c.body
                                  if isinstance(m, ast.FunctionDef))
        methods = frozenset(_golf_method_names)
        if known_free[:2] != (_Analyses.generation, methods):
            known_free = (_Analyses.generation, methods, effect_free(module))
        free = known_free[2]
        inputs = (free, methods, frozenset(shadowed), frozenset(idle))

        def fold():
            f = Fold(shadowed, idle, free)
            f.visit(module)
            return f.changed

        step("fold", fold)
        step("constants", lambda: propagate_constants(module))
        step("tables", lambda: fold_constant_tables(module))
        step("attributes", lambda: propagate_attributes(module))
        step("forward", lambda: propagate_forward(module))
        step("unroll", lambda: unroll_loops(module, values))
        step("inline", lambda: inline_single_use(module))
        step("inline functions", lambda: inline_expression_functions(module))
        step("namespaces", lambda: namespace_parameters(module))
        step("comprehensions", lambda: fold_comprehensions(module))
        step("narrow", lambda: narrow_parameters(module))
        step("parameters", lambda: specialize_parameters(module))
        step("failures", lambda: drop_failure_paths(module, free=free))
        step("dead stores", lambda: drop_dead_stores(module, free))
        step("dead attributes", lambda: drop_dead_attributes(module, free))
        step("results", lambda: drop_unused_results(module, free))
        step("write-only", lambda: drop_write_only(module, free))
        step("idle methods", lambda: drop_idle_method_calls(module, free))
        for fn in generators:  # a generator whose yields all went is still one (it yields nothing)
            if not _yields(fn):
                fn.body.insert(0, ast.Expr(ast.YieldFrom(ast.Tuple([], ast.Load()))))
                tree_changed()
            if len(fn.body) == 1 and ast.unparse(locate(fn.body[0])) == "yield from ()":
                fn.body = [ast.Return(ast.Call(ast.Name("iter", ast.Load()), [ast.Tuple([], ast.Load())], []))]
                tree_changed()
        step("members", lambda: prune_instance_members(module))
        step("prune", lambda: prune(module, ENTRY))
        if log:
            log(f"round {rounds}: {[n for n, c in steps if c]} {time.perf_counter() - t0:.1f}s {len(ast.unparse(module))}")
        if not any(c for _, c in steps):
            return


def _wait_for_training(module: ast.Module) -> None:
    """golf.cli.run_submission goes from train() to quantize_run() with no barrier between, so a rank may
    look for model.pt before rank 0 has written it (golf's lazy imports of golf.quant hid the race; in
    one module there are none): every rank waits for the others after training."""
    entry = next(st for st in module.body if isinstance(st, ast.FunctionDef) and st.name == ENTRY)
    for node in walk(entry):
        for field in ("body", "orelse"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for i, st in enumerate(body):
                if (isinstance(st, ast.Expr) and isinstance(st.value, ast.Call)
                        and isinstance(st.value.func, ast.Name) and st.value.func.id == "train"):
                    if any("barrier" in ast.unparse(s) for s in body[i + 1:i + 3]):
                        return
                    body.insert(i + 1, ast.Expr(ast.Call(ast.Name("barrier", ast.Load()), [], [])))
                    return
    raise SpecializeError(f"{ENTRY} calls no train(): golf.specialize's barrier after it has no place")


def specialize(cfg, modes: tuple[str, ...], values: dict, skip: set[str]) -> str:
    """The source of one module that runs golf's pipeline for ``cfg`` (made from ``values``, the keys that
    differ from golf's defaults) and scores ``modes``: ``run_submission(values, modes, <this file's size>)``.
    The cyclic garbage collector is off meanwhile: the passes make and drop many nodes (few cycles), and
    its rounds over every object alive (golf's trees, torch's) took a third of the time."""
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        return _specialize(cfg, modes, values, skip)
    finally:
        forget_analyses()
        if collecting:
            gc.enable()


def _specialize(cfg, modes: tuple[str, ...], values: dict, skip: set[str]) -> str:
    flattener = Flattener(skip)
    module, embedded = flattener.flat()
    _stage_lookups(module, flattener, modes)
    if embedded:
        embed(module, embedded)
    _wait_for_training(module)
    tree_changed()
    prune(module, ENTRY)
    module.body += path_constants(values)
    apply_stubs(module, cfg)
    imported = {a.asname or a.name: a.name for st in module.body if isinstance(st, ast.Import) for a in st.names}
    os_, sys_ = ("os" if imported.get("os") == "os" else "_os"), ("sys" if imported.get("sys") == "sys" else "_sys")
    header = "import os as _os, sys as _sys\n" if "_" in os_ + sys_ else ""  # the entry's call, specialized too
    module.body += ast.parse(f"{header}{sys_}.exit({ENTRY}({values!r}, {tuple(modes)!r}, {os_}.path.getsize(__file__)))").body
    simplify(module, config_values(cfg))
    drop_repeated_imports(module)
    positional_only(module)
    tree_changed()
    if embedded:  # (what the specialized code reads of an embedded module is known now)
        fill_embedded(module, embedded)
    return ast.unparse(locate(module))
