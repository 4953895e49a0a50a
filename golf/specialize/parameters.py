"""Functions whose every call is known (``_targets``): a parameter every call passes alike becomes that
value (a namespace of constants, its fields), and one with a few known values narrows the ifs on it."""
from __future__ import annotations

import ast

from golf.specialize.analyses import _current, parents_of, scopes_of
from golf.specialize.bindings import _binds_name, _substitute
from golf.specialize.effects import pure
from golf.specialize.fold import _NO_VALUE, const, is_const, literal, _small
from golf.specialize.prune import FRAMEWORK_METHODS
from golf.specialize.scopes import Scopes
from golf.specialize.tree import FUNCTIONS, SpecializeError, _contains, _replace


def _plain_params(fn: ast.FunctionDef) -> list[tuple[str, ast.arg, ast.expr | None, bool]] | None:
    """(name, arg, default, positional) of each parameter, or None where *args/**kwargs make calls opaque."""
    a = fn.args
    if a.vararg or a.kwarg:
        return None
    positional = [*a.posonlyargs, *a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [(x.arg, x, d, True) for x, d in zip(positional, defaults)]
    out += [(x.arg, x, d, False) for x, d in zip(a.kwonlyargs, a.kw_defaults)]
    return out


def _targets(module: ast.Module, scopes: Scopes, parents: dict) -> list[tuple[ast.FunctionDef, list[ast.Call], int]]:
    """Functions whose every call is known: (function, its calls, leading parameters the calls do not pass);
    kept while the tree does not change (read only)."""
    a = _current(module)
    if scopes is not a.scopes or parents is not a.parents:
        return _find_targets(module, scopes, parents)
    if a.targets is None:
        a.targets = _find_targets(module, scopes, parents)
    return a.targets


def _plain_targets(module: ast.Module, scopes: Scopes, parents: dict):
    """``_targets``' functions that take no *args/**kwargs: (function, calls, skip, ``_plain_params``, its scope)."""
    for fn, calls, skip in _targets(module, scopes, parents):
        params = _plain_params(fn)
        if params is not None:
            yield fn, calls, skip, params, scopes.scope_of_node[id(fn)]


def _find_targets(module: ast.Module, scopes: Scopes, parents: dict) -> list[tuple[ast.FunctionDef, list[ast.Call], int]]:
    functions: dict[str, list[ast.AST]] = {}
    strings, bases = set(), set()
    attr_uses: dict[str, list[ast.Attribute]] = {}
    # functions by name, strings, attributes, base classes (in what order: no matter)
    for n in scopes.all(ast.Attribute, ast.Constant, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
        if isinstance(n, ast.Attribute):
            attr_uses.setdefault(n.attr, []).append(n)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            strings.add(n.value)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            functions.setdefault(n.name, []).append(n)
            if isinstance(n, ast.ClassDef):
                bases |= {b.id for b in n.bases if isinstance(b, ast.Name)}

    classes = {st.name for st in module.body if isinstance(st, ast.ClassDef)}

    def calls_of(uses) -> list[ast.Call] | None:
        calls = []
        for use in uses:
            call = parents.get(id(use))
            if not (isinstance(call, ast.Call) and call.func is use):
                return None
            if isinstance(use, ast.Attribute) and isinstance(use.value, ast.Name) and use.value.id in classes:
                return None  # Class.method(obj, ...): its first argument is self
            if any(isinstance(x, ast.Starred) for x in call.args) or any(k.arg is None for k in call.keywords):
                return None
            calls.append(call)
        return calls

    out = []
    for st in module.body:
        if isinstance(st, ast.FunctionDef) and len(scopes.root.bound.get(st.name, ())) == 1:
            uses = [n for n in scopes.module_refs(st.name) if isinstance(n.ctx, ast.Load)]
            calls = calls_of(uses)
            if calls:
                out.append((st, calls, 0))
        if not isinstance(st, ast.ClassDef):
            continue
        for m in st.body:
            if not isinstance(m, ast.FunctionDef) or (len(functions.get(m.name, ())) != 1 and m.name != "__init__"):
                continue
            if any(not (isinstance(d, ast.Call) or (isinstance(d, ast.Attribute))) for d in m.decorator_list):
                continue  # staticmethod, classmethod, property: another calling convention
            if m.name == "__init__":
                if st.name in bases or st.decorator_list or len(scopes.root.bound.get(st.name, ())) != 1 \
                        or _makes_itself(st):
                    continue
                calls = calls_of([n for n in scopes.module_refs(st.name) if isinstance(n.ctx, ast.Load)])
            elif (m.name.startswith("__") or m.name in FRAMEWORK_METHODS or m.name in strings):
                continue
            else:
                calls = calls_of(attr_uses.get(m.name, []))
            if calls:
                out.append((m, calls, 1))
    return out


def _makes_itself(cls: ast.ClassDef) -> bool:
    """Whether the class makes an instance without its name: ``cls(...)``, ``type(x)(...)``,
    ``x.__class__(...)`` (calls of its __init__ that are not known by name)."""
    for n in ast.walk(cls):
        if isinstance(n, ast.Call):
            f = n.func
            if (isinstance(f, ast.Name) and f.id == "cls") or (isinstance(f, ast.Attribute) and f.attr == "__class__") \
                    or (isinstance(f, ast.Call) and isinstance(f.func, ast.Name) and f.func.id == "type"):
                return True
    return False


def specialize_parameters(module: ast.Module) -> bool:
    """A parameter that every call passes the same constant (or leaves at its default) becomes that
    constant; one the function never reads goes, from the calls too (where what they pass has no effect)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    loads = scopes.loads()
    changed = False
    for fn, calls, skip, params, inner in _plain_targets(module, scopes, parents):
        drop = []
        for i, (name, arg, default, positional) in enumerate(params):
            if i < skip:
                continue
            passed = []
            for call in calls:
                expr = None
                if positional and i - skip < len(call.args):
                    expr = call.args[i - skip]
                else:
                    expr = next((k.value for k in call.keywords if k.arg == name), default)
                if expr is None:
                    break
                passed.append(expr)
            else:
                reads = loads.get((id(inner), name), [])
                values = {(type(const(e)), const(e)) if is_const(e) else None for e in passed}
                if not reads and all(pure(e) for e in passed):
                    drop.append((i, name, _NO_VALUE))
                elif len(values) == 1 and None not in values and literal(const(passed[0])) is not None:
                    value = const(passed[0])
                    if not _small(value) and len(reads) > 1:
                        continue
                    drop.append((i, name, value))
        if not drop:
            continue
        changed = True
        for i, name, value in drop:
            rebound = len(inner.bound.get(name, ())) > 1
            if value is not _NO_VALUE:
                for read in loads.get((id(inner), name), []) if not rebound else []:
                    if id(read) in parents and _contains(parents[id(read)], read):  # (not an argument a call lost)
                        _replace(parents[id(read)], read, literal(value))
                if rebound:
                    fn.body.insert(0, ast.Assign([ast.Name(name, ast.Store())], literal(value)))
        names = {name for _, name, _ in drop}
        positional_index = {name: i - skip for i, (name, _, _, pos) in enumerate(params) if pos}
        for call in calls:
            gone = sorted((positional_index[n] for n in names if n in positional_index
                           and positional_index[n] < len(call.args)), reverse=True)
            for j in gone:
                del call.args[j]
            call.keywords = [k for k in call.keywords if k.arg not in names]
        a = fn.args
        positional = [*a.posonlyargs, *a.args]
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        keep = [(x, d) for x, d in zip(positional, defaults) if x.arg not in names]
        n_pos_only = len([x for x in a.posonlyargs if x.arg not in names])
        a.posonlyargs = [x for x, _ in keep[:n_pos_only]]
        a.args = [x for x, _ in keep[n_pos_only:]]
        tail = [d for _, d in keep]
        while tail and tail[0] is None:
            tail.pop(0)
        if any(d is None for d in tail):
            raise SpecializeError(f"{fn.name}: dropping a parameter left a default before a required one")
        a.defaults = tail
        kw = [(x, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if x.arg not in names]
        a.kwonlyargs, a.kw_defaults = [x for x, _ in kw], [d for _, d in kw]
    return changed


def namespace_parameters(module: ast.Module) -> bool:
    """A parameter every call passes the same ``argparse.Namespace(key=<constant>, ...)`` and that the
    function only reads attributes of: each ``p.key`` is the constant (golf.cli.run_submission's args)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for fn, calls, skip, params, inner in _plain_targets(module, scopes, parents):
        for i, (name, arg, default, positional) in enumerate(params):
            if i < skip or not positional:
                continue
            passed = [c.args[i - skip] if i - skip < len(c.args) else None for c in calls]
            if not passed or any(not (isinstance(e, ast.Call) and ast.unparse(e.func) in ("argparse.Namespace",
                                                                                        "SimpleNamespace")
                                      and not e.args and all(is_const(k.value) for k in e.keywords)) for e in passed):
                continue
            if len({ast.dump(e) for e in passed}) != 1:
                continue
            fields = {k.arg: const(k.value) for k in passed[0].keywords}
            reads = [n for n, sc in scopes.names if n.id == name and sc.owner(name) is inner]
            if not reads or len(inner.bound.get(name, ())) != 1 or not all(
                    isinstance(parents.get(id(r)), ast.Attribute) and parents[id(r)].value is r
                    and parents[id(r)].attr in fields and isinstance(parents[id(r)].ctx, ast.Load) for r in reads):
                continue
            for r in reads:
                attr = parents[id(r)]
                _replace(parents[id(attr)], attr, literal(fields[attr.attr]))
            changed = True
    return changed


def narrow_parameters(module: ast.Module) -> bool:
    """A parameter every call passes a constant or a loop variable over a tuple of constants has a known set
    of values; down each branch of an if on it (``p == c``, ``p in (...)``) the set narrows: a test it
    decides is that constant, and where one value is left, ``p`` is that value."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for fn, calls, skip, params, inner in _plain_targets(module, scopes, parents):
        for i, (name, arg, default, positional) in enumerate(params):
            if i < skip or len(inner.bound.get(name, ())) != 1:
                continue
            domain: set = set()
            for call in calls:
                expr = call.args[i - skip] if positional and i - skip < len(call.args) else next(
                    (k.value for k in call.keywords if k.arg == name), default)
                values = _values_of(expr, scopes, parents)
                if values is None:
                    domain = None
                    break
                domain |= values
            if not domain or len(domain) < 2 or not all(isinstance(v, (str, int)) for v in domain):
                continue
            changed |= _narrow(fn.body, name, frozenset(domain))
    return changed


def _values_of(expr, scopes: Scopes, parents: dict):
    """The values an argument can have: a constant's, or a loop variable's over a tuple of constants."""
    if expr is None:
        return None
    if is_const(expr):
        return {const(expr)}
    if isinstance(expr, ast.Name):
        owner = scopes.of.get(id(expr))
        if owner is None:
            return None
        scope = owner.owner(expr.id)
        node = expr
        while id(node) in parents:  # the loop around the read that binds the name (and nothing else in it)
            node = parents[id(node)]
            if isinstance(node, (*FUNCTIONS, ast.ClassDef)):
                break
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == expr.id:
                if is_const(node.iter) and isinstance(const(node.iter), tuple) and not any(
                        _binds_name(st, expr.id) for st in node.body):
                    return set(const(node.iter))
                break
    return None


def _split(test, name: str, domain: frozenset):
    """(values where ``test`` holds, where it does not), for a test on ``name`` alone; else None."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Name) \
            and test.left.id == name and is_const(test.comparators[0]):
        c, op = const(test.comparators[0]), test.ops[0]
        if isinstance(op, (ast.Eq, ast.NotEq)):
            hit = domain & {c}
        elif isinstance(op, (ast.In, ast.NotIn)) and isinstance(c, tuple):
            hit = domain & set(c)
        else:
            return None
        return (hit, domain - hit) if isinstance(op, (ast.Eq, ast.In)) else (domain - hit, hit)
    return None


def _narrow(body: list[ast.stmt], name: str, domain: frozenset) -> bool:
    changed = False
    for st in body:
        if _binds_name(st, name):
            return changed
        if isinstance(st, ast.If):
            split = _split(st.test, name, domain)
            if split is not None:
                yes, no = split
                if not yes or not no:
                    st.test = ast.Constant(bool(yes))
                    changed = True
                changed |= _narrow(st.body, name, frozenset(yes)) if yes else False
                changed |= _narrow(st.orelse, name, frozenset(no)) if no else False
                continue
        if len(domain) == 1:
            changed |= _substitute(st, name, next(iter(domain)))
        else:
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(st, field, None)
                if isinstance(sub, list) and sub and not isinstance(st, (*FUNCTIONS, ast.ClassDef)):
                    changed |= _narrow(sub, name, domain)
    return changed


# Decorators that call the function as they are called (a positional-only signature is no matter to them)
PLAIN_DECORATORS = {"torch.no_grad()", "contextmanager", "torch.inference_mode()"}


def positional_only(module: ast.Module) -> bool:
    """Each function whose every call is known takes its parameters by position only, its calls passing
    them so: python-minifier renames such a parameter (one a caller could name keeps its name, in the
    signature and in a rebinding to a short local). A call skipping a defaulted parameter passes its
    default (constants only); keyword arguments that are not in the parameters' order must be pure (their
    order of evaluation changes). A function any call of which cannot be so written is left as it is, and a
    method that a library's object has too is where any call names an argument (that call may be the
    library's: ``d.update(k=v)``, ``dist.all_reduce(t, op=...)``)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    shared = _library_method_names()
    for fn, calls, skip, params, _ in _plain_targets(module, scopes, parents):
        a = fn.args
        if not a.args and not a.kwonlyargs:
            continue
        if skip and fn.name != "__init__" and fn.name in shared and any(call.keywords for call in calls):
            continue
        if not all(ast.unparse(d) in PLAIN_DECORATORS for d in fn.decorator_list):
            continue  # one that reads the signature (torch.library.custom_op, triton.jit) may refuse "/"
        new_calls = [_positional_call(call, params, skip) for call in calls]
        if any(args is None for args in new_calls):
            continue
        for call, args in zip(calls, new_calls):
            call.args, call.keywords = args, []
        defaults = [d for _, _, d, _ in params]
        passed = [len(args) + skip for args in new_calls]
        tail = len(defaults)  # defaults stay on the parameters after the last one some call needs
        while tail > 0 and defaults[tail - 1] is not None:
            tail -= 1
        if any(n < tail for n in passed):
            raise SpecializeError(f"{fn.name}: a call passes too few arguments")
        a.posonlyargs = [arg for _, arg, _, _ in params]
        a.args, a.kwonlyargs, a.kw_defaults, a.defaults = [], [], [], defaults[tail:]
        changed = True
    return changed


def _library_method_names() -> frozenset[str]:
    """The attribute names of the objects golf's code calls methods of, besides its own."""
    import io
    import logging
    import pathlib
    import queue
    import threading
    from concurrent.futures import Future

    import numpy as np
    import torch
    import torch.distributed

    kinds = (dict, list, set, str, bytes, io.BufferedWriter, pathlib.Path, threading.Thread, threading.Event,
             queue.Queue, Future, logging.Logger, np.ndarray, np.random.Generator, torch.Tensor, torch.nn.Module,
             torch.optim.Optimizer, torch.distributed, torch.cuda.Stream, torch.cuda.Event, torch.Generator)
    return frozenset(name for kind in kinds for name in dir(kind))


def _positional_call(call: ast.Call, params, skip: int) -> list[ast.expr] | None:
    """``call``'s arguments by position, through the last parameter it passes (None where it cannot be)."""
    index = {name: i for i, (name, _, _, _) in enumerate(params)}
    n_positional = sum(1 for p in params if p[3])
    if len(call.args) + skip > n_positional:
        return None
    given = {skip + j: x for j, x in enumerate(call.args)}
    order = []
    for k in call.keywords:
        if k.arg not in index or index[k.arg] in given:
            return None
        given[index[k.arg]] = k.value
        order.append(index[k.arg])
    if order != sorted(order) and not all(pure(k.value) for k in call.keywords):
        return None
    args = []
    for i in range(skip, max(given, default=skip - 1) + 1):
        if i in given:
            args.append(given[i])
        elif params[i][2] is not None and is_const(params[i][2]) and literal(const(params[i][2])) is not None:
            args.append(literal(const(params[i][2])))
        else:
            return None
    return args
