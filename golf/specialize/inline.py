"""Code moved to where it is used: a value read once, a one-expression function called once, a loop over
a few constants (where that is smaller), a comprehension over constants, a result nothing uses."""
from __future__ import annotations

import ast

from golf.specialize.analyses import locate, nodes_of, parents_of, scopes_of
from golf.specialize.bindings import _binds_name, _substitute
from golf.specialize.effects import pure, queries
from golf.specialize.fold import Fold, const, is_const, literal
from golf.specialize.parameters import _plain_params, _targets
from golf.specialize.run_config import FoldConfig
from golf.specialize.scopes import Scopes, bound_once
from golf.specialize.tree import (
    COMPREHENSIONS, FUNCTIONS, children, _contains, copy_tree, _is_docstring, _replace, walk)


def _yields(fn: ast.FunctionDef) -> bool:
    """Whether ``fn`` itself (not a function inside it) yields."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (*FUNCTIONS, ast.ClassDef)):
            todo += children(node)
    return False


def _yielding(scopes: Scopes, parents: dict[int, ast.AST]) -> set[int]:
    """The functions that yield (``_yields``), by id."""
    out = set()
    for node in scopes.all(ast.Yield, ast.YieldFrom):
        below, p = node, parents.get(id(node))
        while p is not None and not isinstance(p, (*FUNCTIONS, ast.ClassDef)):
            below, p = p, parents.get(id(p))
        if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(st is below for st in p.body):
            out.add(id(p))
    return out


def unroll_loops(module: ast.Module, values: dict) -> bool:
    """``for x in (c1, c2): body`` over a few constants: one copy of the body per constant, kept only where
    folding then makes the loop's code smaller (e.g. ``getattr(cfg, x)`` becomes a constant)."""
    changed = False
    for node in list(nodes_of(module)):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for i, st in enumerate(body):
                if not (isinstance(st, ast.For) and not st.orelse and isinstance(st.target, ast.Name)
                        and is_const(st.iter) and isinstance(const(st.iter), tuple) and 0 < len(const(st.iter)) <= 4):
                    continue
                if any(isinstance(n, (ast.Break, ast.Continue)) for n in walk(st)) or _binds_name(
                        ast.Module(body=st.body, type_ignores=[]), st.target.id):
                    continue
                copies = []
                for value in const(st.iter):
                    block = copy_tree(st.body)
                    wrapper = ast.Module(body=block, type_ignores=[])
                    _substitute(wrapper, st.target.id, value)
                    FoldConfig(values).visit(wrapper)
                    Fold(set()).visit(wrapper)
                    copies += [s for s in wrapper.body if not isinstance(s, ast.Pass)]
                copies.append(ast.Assign([ast.Name(st.target.id, ast.Store())], literal(const(st.iter)[-1])))
                before = len(ast.unparse(locate(st)))
                after = sum(len(ast.unparse(locate(c))) for c in copies)
                if after < before:
                    body[i:i + 1] = copies
                    changed = True
                    break
    return changed


def inline_single_use(module: ast.Module) -> bool:
    """``name = <pure value>`` read once, in the very next statement (which binds none of the names the
    value reads): the read becomes the value. Then ``{'a': x, 'b': y}['a']`` folds to ``x``."""
    scopes = scopes_of(module)
    loads = scopes.loads()
    parents = parents_of(module)
    changed = False
    touched: set[int] = set()  # statements changed in this pass: one inlining each
    for scope, name, site in bound_once(scopes.root):
        assign = parents.get(id(site))
        if id(assign) in touched:
            continue
        if not (isinstance(assign, ast.Assign) and assign.targets == [site]
                and not isinstance(assign.value, ast.Lambda)):
            continue
        literal_value = not any(isinstance(n, (ast.Name, ast.Call, ast.Lambda, *COMPREHENSIONS))
                                for n in walk(assign.value))
        reads = loads.get((id(scope), name), [])
        if literal_value and len(reads) == 1 and id(reads[0]) in parents and id(assign) not in touched:
            node, loop = reads[0], False  # a literal read once: there, unless a loop lies between
            holder = parents.get(id(assign))
            while id(node) in parents and node is not holder:
                node = parents[id(node)]
                loop = loop or (node is not holder and isinstance(
                    node, (ast.For, ast.While, *FUNCTIONS, *COMPREHENSIONS)))
            if node is holder and not loop:
                _replace(parents[id(reads[0])], reads[0], assign.value)
                body = next(b for _, b in ast.iter_fields(holder) if isinstance(b, list) and assign in b)
                body.remove(assign)
                touched.add(id(assign))
                changed = True
                continue
        if not pure(assign.value):  # a value with effects only where it is the very next thing evaluated
            holder = parents[id(assign)]
            body = next((b for _, b in ast.iter_fields(holder) if isinstance(b, list) and assign in b), None)
            following = body[body.index(assign) + 1] if body.index(assign) + 1 < len(body) else None
            if not ((isinstance(following, ast.Return) and isinstance(following.value, ast.Name))
                    or (isinstance(following, ast.Assign) and isinstance(following.value, ast.Name))):
                continue
        reads = loads.get((id(scope), name), [])
        if len(reads) != 1 or id(reads[0]) not in parents:
            continue
        holder = parents[id(assign)]
        body = next((b for _, b in ast.iter_fields(holder) if isinstance(b, list) and assign in b), None)
        i = body.index(assign)
        if i + 1 >= len(body):
            continue
        after = body[i + 1]
        if id(after) in touched or not any(n is reads[0] for n in walk(after)):
            continue
        free = {n.id for n in walk(assign.value) if isinstance(n, ast.Name)}
        if any(_binds_name(after, n) for n in free) or any(
                isinstance(n, (*FUNCTIONS, *COMPREHENSIONS)) and any(r is reads[0] for r in walk(n))
                for n in walk(after)):
            continue
        _replace(parents[id(reads[0])], reads[0], assign.value)
        body.remove(assign)
        touched |= {id(assign), id(after)} | {id(n) for n in walk(after)}
        changed = True
    return changed


def drop_unused_results(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """A function every call of which throws its value away returns nothing (what it returned is still
    computed where that has effects); a function that returns a literal is that literal at each call."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    yielding = _yielding(scopes, parents)  # (what the pass changes holds no yield)
    for fn, calls, skip in _targets(module, scopes, parents):
        if id(fn) in yielding or isinstance(fn, ast.AsyncFunctionDef):
            continue
        body = [s for s in fn.body if not _is_docstring(s)]
        if (len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None
                and not any(isinstance(n, ast.Name) for n in walk(body[0].value)) and skip == 0
                and all(pure(a) for c in calls for a in (*c.args, *(k.value for k in c.keywords)))):
            for c in calls:
                if id(c) in parents and _contains(parents[id(c)], c):
                    _replace(parents[id(c)], c, copy_tree(body[0].value))
                    changed = True
            continue
        if not all(isinstance(parents.get(id(c)), ast.Expr) for c in calls):
            continue
        for node in _own_nodes(fn):
            for field in ("body", "orelse", "finalbody"):
                stmts = getattr(node, field, None)
                if not isinstance(stmts, list):
                    continue
                for i, st in enumerate(stmts):
                    if isinstance(st, ast.Return) and st.value is not None and not (
                            isinstance(st.value, ast.Constant) and st.value.value is None):
                        keep = [] if queries(st.value, free) else [ast.Expr(st.value)]
                        stmts[i:i + 1] = [*keep, ast.Return(None)]
                        changed = True
    return changed


def _own_nodes(fn):
    """The nodes of ``fn`` that are not inside a function, lambda or class defined in it."""
    todo = [fn]
    while todo:
        node = todo.pop()
        yield node
        for child in children(node):
            if not isinstance(child, (*FUNCTIONS, ast.ClassDef)):
                todo.append(child)


def inline_expression_functions(module: ast.Module) -> bool:
    """A function whose body is one ``return <expr>`` and that one call uses: the call becomes the expression,
    its parameters the arguments (each argument of no effect, read where the parameter was; no lambda in it,
    and no name in it that the caller binds otherwise)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    done: set[int] = set()
    yielding = _yielding(scopes, parents)  # (what the pass changes holds no yield)
    for fn, calls, skip in _targets(module, scopes, parents):
        if skip or len(calls) != 1 or fn.decorator_list or id(fn) in yielding or isinstance(fn, ast.AsyncFunctionDef):
            continue
        body = [s for s in fn.body if not _is_docstring(s)]
        if len(body) != 1 or not isinstance(body[0], ast.Return):
            continue
        expr = body[0].value if body[0].value is not None else ast.Constant(None)
        if any(isinstance(n, (ast.Lambda, ast.NamedExpr, ast.Yield, ast.Await)) for n in walk(expr)):
            continue
        params = _plain_params(fn)
        call = calls[0]
        if params is None or id(call) in done or not (id(call) in parents and _contains(parents[id(call)], call)):
            continue
        inner = scopes.scope_of_node[id(fn)]
        if any(len(inner.bound.get(p[0], ())) != 1 for p in params):
            continue
        args = {}
        for i, (name, arg, default, positional) in enumerate(params):
            value = call.args[i] if positional and i < len(call.args) else next(
                (k.value for k in call.keywords if k.arg == name), default)
            if value is None:
                break
            args[name] = value
        else:
            if not all(pure(v) for v in args.values()):
                continue
            caller = scopes.of.get(id(call))
            free = {n.id for n in walk(expr) if isinstance(n, ast.Name) and n.id not in args}
            arg_names = {n.id for v in args.values() for n in walk(v) if isinstance(n, ast.Name)}
            if caller is None or any(caller.owner(n) is not scopes.root for n in free):
                continue
            if any(isinstance(n, COMPREHENSIONS) for n in walk(expr)) and arg_names & {
                    t.id for c in walk(expr) if isinstance(c, ast.comprehension) for t in walk(c.target)
                    if isinstance(t, ast.Name)}:
                continue
            new = copy_tree(expr)
            holder = ast.Expression(new)
            for n in list(walk(holder)):
                for field, child in ast.iter_fields(n):
                    items = child if isinstance(child, list) else [child]
                    for j, item in enumerate(items):
                        if isinstance(item, ast.Name) and isinstance(item.ctx, ast.Load) and item.id in args:
                            sub = copy_tree(args[item.id])
                            if isinstance(child, list):
                                child[j] = sub
                            else:
                                setattr(n, field, sub)
            _replace(parents[id(call)], call, holder.body)
            done.add(id(call))
            changed = True
    return changed


def fold_comprehensions(module: ast.Module) -> bool:
    """A list, tuple or dict comprehension over a tuple of constants whose items fold to constants: the literal."""
    changed = False
    parents = parents_of(module)
    for node in list(nodes_of(module)):
        if not isinstance(node, (ast.ListComp, ast.DictComp)) or len(node.generators) != 1:
            continue
        gen = node.generators[0]
        if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name) or not is_const(gen.iter) \
                or not isinstance(const(gen.iter), tuple):
            continue
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        items = []
        for value in const(gen.iter):
            folded = []
            for part in parts:
                holder = ast.Expression(copy_tree(part))
                _substitute(holder, gen.target.id, value)
                holder = Fold(set()).visit(holder)
                if not is_const(holder.body):
                    break
                folded.append(holder.body)
            else:
                items.append(folded)
                continue
            break
        else:
            new = (ast.Dict([k for k, _ in items], [v for _, v in items]) if isinstance(node, ast.DictComp)
                   else ast.List([e for e, in items], ast.Load()))
            if id(node) in parents and _contains(parents[id(node)], node):
                _replace(parents[id(node)], node, new)
                changed = True
    return changed
