"""Names and what they hold: a name bound once to a constant is read as it (also along a block), a store
nothing reads goes, and so does a container only ever filled; a table of constants is read as its values."""
from __future__ import annotations

import ast

from golf.specialize.analyses import parents_of, scopes_of
from golf.specialize.effects import CONTAINER_MUTATORS, pure, queries
from golf.specialize.fold import const, is_const, literal, _small
from golf.specialize.scopes import _all_scopes, bound_once
from golf.specialize.tree import COMPREHENSIONS, FUNCTIONS, _blocks, children, _contains, _remove_statement, _replace, walk


def propagate_constants(module: ast.Module) -> bool:
    """A name bound exactly once, by ``name = <constant>``, in a function (or the module), is read as
    that constant everywhere it is read (a long string only where it is read once); the binding goes."""
    scopes = scopes_of(module)
    loads = scopes.loads()
    parents = parents_of(module)
    changed = False
    for scope, name, site in bound_once(scopes.root, ("function", "module")):
        assign = parents.get(id(site))
        if not (isinstance(assign, (ast.Assign, ast.AnnAssign)) and (
                assign.targets == [site] if isinstance(assign, ast.Assign) else assign.target is site)):
            continue
        if assign.value is None or not is_const(assign.value):
            continue
        value = const(assign.value)
        reads = loads.get((id(scope), name), [])
        if scope.kind == "module" and isinstance(assign, ast.AnnAssign):
            continue
        if not (_small(value) or len(reads) <= 1):
            continue
        for read in reads:
            if id(read) in parents:
                _replace(parents[id(read)], read, literal(value))
        _remove_statement(parents[id(assign)], assign)
        changed = True
    return changed


def drop_dead_stores(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """``name = value`` in a function where nothing reads ``name``: the value's effects stay, the store goes."""
    scopes = scopes_of(module)
    read: set[tuple[int, str]] = set()
    for name, _, owner in scopes.resolved():
        if isinstance(name.ctx, (ast.Load, ast.Del)):
            read.add((id(owner), name.id))
    changed = False
    for scope in _all_scopes(scopes.root):
        if scope.kind != "function" or isinstance(scope.node, ast.Lambda):
            continue
        # a global or nonlocal statement in the function (or one inside it: the pass drops none)
        if any(s.globals or s.nonlocals for s in _all_scopes(scope)):
            continue

        def visit(body: list[ast.stmt]) -> list[ast.stmt]:
            nonlocal changed
            out = []
            for st in body:
                if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.append(st)
                    continue
                if (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
                        and (id(scope), st.targets[0].id) not in read and scope.owner(st.targets[0].id) is scope):
                    changed = True
                    if not queries(st.value, free):
                        out.append(ast.Expr(st.value))
                    continue
                if (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Tuple)
                        and isinstance(st.value, ast.Tuple) and len(st.targets[0].elts) == len(st.value.elts)
                        and not any(isinstance(e, ast.Starred) for e in (*st.targets[0].elts, *st.value.elts))):
                    pairs = list(zip(st.targets[0].elts, st.value.elts))
                    keep = [(a, b) for a, b in pairs if not (
                        isinstance(a, ast.Name) and (id(scope), a.id) not in read and scope.owner(a.id) is scope
                        and queries(b, free))]
                    if len(keep) != len(pairs):
                        changed = True
                        if not keep:
                            continue
                        st = ast.Assign([keep[0][0]], keep[0][1]) if len(keep) == 1 else ast.Assign(
                            [ast.Tuple([a for a, _ in keep], ast.Store())], ast.Tuple([b for _, b in keep], ast.Load()))
                for field in ("body", "orelse", "finalbody"):
                    sub = getattr(st, field, None)
                    if isinstance(sub, list) and sub:
                        setattr(st, field, visit(sub) or ([ast.Pass()] if field == "body" else []))
                for h in getattr(st, "handlers", ()):
                    h.body = visit(h.body) or [ast.Pass()]
                if (isinstance(st, ast.For) and all(isinstance(b, ast.Pass) for b in st.body) and not st.orelse
                        and queries(st.iter, free) and not any((id(scope), n.id) in read for n in walk(st.target)
                                                      if isinstance(n, ast.Name))):
                    changed = True  # a loop that does nothing, over values of no effect
                    continue
                out.append(st)
            return out

        scope.node.body = visit(scope.node.body) or [ast.Pass()]
    return changed


def propagate_forward(module: ast.Module) -> bool:
    """``x = <constant>`` in a block of a function: the statements after it read the constant, up to the
    first that binds ``x`` again (whose test, for an ``if``, still reads it). Not inside a function or
    lambda defined there (it may run later), nor where ``x`` is global, nonlocal or a closure's. (A name
    the code inside such a function or lambda names is never rewritten: so what a function's rewriting
    changes is none of the functions inside it, and the functions go in any order.)"""
    changed = False
    for scope in _all_scopes(scopes_of(module).root):
        fn = scope.node
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if any(s.globals or s.nonlocals for s in _all_scopes(scope)):  # a global or nonlocal statement in it
            continue
        inner_reads = _InnerNames(fn)
        for node in _blocks(fn):
            for field in ("body", "orelse", "finalbody"):
                body = getattr(node, field, None)
                if isinstance(body, list) and body and isinstance(body[0], ast.stmt) and not isinstance(
                        node, (ast.ClassDef,)) and (node is fn or not isinstance(node, (*FUNCTIONS,))):
                    changed |= _forward_block(body, inner_reads)
    return changed


class _InnerNames:
    """The names in the functions, lambdas, comprehensions and classes inside ``fn`` (found at the first ask)."""

    def __init__(self, fn: ast.AST):
        self.fn, self.names = fn, None

    def __contains__(self, name: str) -> bool:
        if self.names is None:
            self.names, todo = set(), [(self.fn, False)]
            while todo:
                node, inside = todo.pop()
                if node is not self.fn and isinstance(node, (*FUNCTIONS, *COMPREHENSIONS, ast.ClassDef)):
                    inside = True
                if inside and isinstance(node, ast.Name):
                    self.names.add(node.id)
                todo += [(c, inside) for c in children(node)]
        return name in self.names


def _binds_name(node: ast.AST, name: str) -> bool:
    for n in walk(node):
        if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, (ast.Store, ast.Del)):
            return True
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name:
            return True
        if isinstance(n, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name.split(".")[0]) == name
                                                               for a in n.names):
            return True
        if isinstance(n, ast.ExceptHandler) and n.name == name:
            return True
        if isinstance(n, ast.arg) and n.arg == name:
            return True
    return False


def _substitute(node: ast.AST, name: str, value) -> bool:
    """Reads of ``name`` in ``node`` (not inside functions, lambdas, comprehensions or classes) -> value."""
    done = False
    todo = [node]
    while todo:
        parent = todo.pop()
        for field, child in ast.iter_fields(parent):
            items = child if isinstance(child, list) else [child]
            for i, item in enumerate(items):
                if not isinstance(item, ast.AST):
                    continue
                if isinstance(item, ast.Name) and item.id == name and isinstance(item.ctx, ast.Load):
                    new = literal(value)
                    if isinstance(child, list):
                        child[i] = new
                    else:
                        setattr(parent, field, new)
                    done = True
                elif not isinstance(item, (*FUNCTIONS, *COMPREHENSIONS, ast.ClassDef)):
                    todo.append(item)
    return done


def _forward_block(body: list[ast.stmt], inner_reads: set[str]) -> bool:
    changed = False
    known: dict[str, object] = {}
    for st in body:
        for name, value in list(known.items()):
            if _binds_name(st, name):
                if isinstance(st, (ast.If, ast.While)):
                    changed |= _substitute(st.test, name, value)
                elif isinstance(st, ast.For):
                    changed |= _substitute(st.iter, name, value)
                elif isinstance(st, ast.Assign) and all(isinstance(t, (ast.Name, ast.Tuple)) for t in st.targets):
                    changed |= _substitute(st.value, name, value)  # the value is read before the store
                del known[name]
            else:
                changed |= _substitute(st, name, value)
        if (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
                and is_const(st.value) and st.targets[0].id not in inner_reads and _small(const(st.value))):
            known[st.targets[0].id] = const(st.value)
    return changed


def drop_write_only(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """A local list, dict or set that the function only fills (append, update, x[k] = v...) and never reads:
    it goes, and so does each statement that fills it (what they pass has no effect)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    by_owner: dict[int, dict[str, list[ast.Name]]] = {}
    for name, _, owner in scopes.resolved():
        by_owner.setdefault(id(owner), {}).setdefault(name.id, []).append(name)
    for scope, var, site in bound_once(scopes.root):
        assign = parents.get(id(site))
        if not (isinstance(assign, ast.Assign) and assign.targets == [site] and (
                (isinstance(assign.value, (ast.List, ast.Dict, ast.Set)) and pure(assign.value))
                or (isinstance(assign.value, ast.Call) and isinstance(assign.value.func, ast.Name)
                    and assign.value.func.id in ("list", "dict", "set") and not assign.value.args))):
            continue
        fills = []
        for use in by_owner.get(id(scope), {}).get(var, []):
            if use is site:
                continue
            parent = parents.get(id(use))
            if isinstance(parent, ast.Attribute) and parent.attr in CONTAINER_MUTATORS:
                call = parents.get(id(parent))
                st = parents.get(id(call))
                if (isinstance(call, ast.Call) and call.func is parent and isinstance(st, ast.Expr)
                        and all(queries(a, free) for a in call.args)):
                    fills.append(st)
                    continue
            if (isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
                    and isinstance(parents.get(id(parent)), ast.Assign)):
                st = parents[id(parent)]
                if st.targets == [parent] and queries(st.value, free) and queries(parent.slice, free):
                    fills.append(st)
                    continue
            break
        else:
            for st in [assign, *fills]:
                _remove_statement(parents.get(id(st)), st)
            changed = True
            return True  # the tree changed under the maps: start again
    return changed


def fold_constant_tables(module: ast.Module) -> bool:
    """A module-level dict of constants that no code changes or hands on (every read is ``table[const]``,
    ``const in table`` or ``table.get(const)``): each such read is its value."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for st in module.body:
        if not (isinstance(st, (ast.Assign, ast.AnnAssign)) and isinstance(st.value, ast.Dict)):
            continue
        target = st.targets[0] if isinstance(st, ast.Assign) else st.target
        if not (isinstance(target, ast.Name) and (not isinstance(st, ast.Assign) or len(st.targets) == 1)):
            continue
        keys, values = st.value.keys, st.value.values
        if any(k is None or not is_const(k) for k in keys) or any(not is_const(v) for v in values):
            continue
        table = {const(k): const(v) for k, v in zip(keys, values)}
        name = target.id
        if len(scopes.root.bound.get(name, ())) != 1:
            continue
        reads = [n for n in scopes.module_refs(name) if isinstance(n.ctx, ast.Load)]
        plan = []
        for r in reads:
            p = parents.get(id(r))
            if isinstance(p, ast.Subscript) and p.value is r and isinstance(p.ctx, ast.Load):
                if is_const(p.slice) and const(p.slice) in table:
                    plan.append((p, literal(table[const(p.slice)])))
                continue  # (a missing key stays a KeyError; a computed one a lookup)
            if (isinstance(p, ast.Attribute) and p.attr in ("items", "keys", "values")) or (
                    isinstance(p, ast.comprehension) and p.iter is r) or (isinstance(p, ast.For) and p.iter is r):
                continue  # read only
            elif isinstance(p, ast.Compare) and len(p.ops) == 1 and p.comparators[0] is r \
                    and isinstance(p.ops[0], (ast.In, ast.NotIn)):
                if is_const(p.left):
                    plan.append((p, ast.Constant((const(p.left) in table) == isinstance(p.ops[0], ast.In))))
            elif (isinstance(p, ast.Attribute) and p.attr == "get" and isinstance(parents.get(id(p)), ast.Call)
                  and len(parents[id(p)].args) in (1, 2) and all(is_const(a) for a in parents[id(p)].args)):
                call = parents[id(p)]
                default = const(call.args[1]) if len(call.args) == 2 else None
                plan.append((call, literal(table.get(const(call.args[0]), default))))
            else:
                plan = None
                break
        if not plan or any(new is None for _, new in plan):
            continue  # (a read of another kind: the table may change or leave)
        for old, new in plan:
            if id(old) in parents and _contains(parents[id(old)], old):
                _replace(parents[id(old)], old, new)
                changed = True
    return changed
