"""What the entry point reaches: the top-level statements no kept code names go, and so do the methods
and class attributes no kept code could read."""
from __future__ import annotations

import ast

from golf.specialize.analyses import parents_of, scopes_of, tree_changed
from golf.specialize.effects import pure
from golf.specialize.scopes import Scopes
from golf.specialize.tree import top_level_names, walk


ENTRY = "run_submission"  # golf.cli's: what the exported train_gpt.py calls
# Methods a framework calls by name (a module's forward, an optimizer's step, a handler's emit, an
# autograd Function's backward...): kept whether or not golf's own code names them.
FRAMEWORK_METHODS = {"forward", "backward", "step", "zero_grad", "emit", "run", "extra_repr", "reset_parameters",
                     "setup_context", "state_dict", "load_state_dict", "train", "eval", "vmap", "jvp"}


def prune(module: ast.Module, entry: str) -> bool:
    """Keep the top-level statements the entry function reaches by name (and those binding nothing, such
    as a setting of torch's), and of each kept class the methods some kept code could call."""
    changed = False
    scopes = scopes_of(module)
    parents = parents_of(module)
    classes = scopes.all(ast.ClassDef)
    facts = {id(st): _statement_facts(scopes, i) for i, st in enumerate(module.body)}
    gone: set[int] = set()  # what went: statements, methods, class attributes
    while True:
        binds: dict[str, list[int]] = {}
        for i, st in enumerate(module.body):
            for n in _binds(st):
                binds.setdefault(n, []).append(i)
        refs = {i: facts[id(st)][0] for i, st in enumerate(module.body)}
        top = {id(st): i for i, st in enumerate(module.body)}
        todo = [i for i, st in enumerate(module.body) if not _binds(st)] + binds.get(entry, [])
        kept: set[int] = set()
        while todo:
            i = todo.pop()
            if i in kept:
                continue
            kept.add(i)
            for n in refs[i]:
                todo += binds.get(n, [])
        before = len(module.body)
        body_before = module.body
        module.body = [st for i, st in enumerate(module.body) if i in kept]
        used = set().union(*(refs[top[id(s)]] for s in module.body))
        for st in module.body:
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                names = [a for a in st.names if (a.asname or a.name.split(".")[0]) in used] or st.names
                if len(names) != len(st.names):
                    tree_changed()  # (not counted as a change)
                st.names = names
        all_refs = set().union(*(facts[id(st)][1] for st in body_before))  # (what went now too)
        module.body = [st for st in module.body if not isinstance(st, (ast.Import, ast.ImportFrom))
                       or any((a.asname or a.name.split(".")[0]) in all_refs for a in st.names)
                       or getattr(st, "module", None) == "__future__"]
        left = {id(st) for st in module.body}
        gone |= {id(st) for st in body_before if id(st) not in left}
        used = set().union(*(facts[id(st)][2] for st in module.body))
        pruned = _prune_methods(used, classes, parents, gone)
        if len(module.body) == before and not pruned:
            return changed
        changed = True
        tree_changed()
        # a statement that lost methods: its facts afresh (the others' stay: what a name reads is decided
        # within its statement, the module scope whatever binds there)
        for cls in pruned:
            st = cls
            while parents.get(id(st)) is not module:
                st = parents[id(st)]
            if id(st) in left:
                facts[id(st)] = _statement_facts(Scopes(ast.Module(body=[st], type_ignores=[])), 0)


def _statement_facts(scopes: Scopes, i: int) -> tuple[set[str], set[str], set[str]]:
    """For the module's ``i``-th statement: the module-level names it reads or binds, those it reads, and
    what it names as an attribute or a string."""
    names, nodes = scopes.of_statement(i)
    refs = {n.id for n, _, owner in names if owner is scopes.root}
    loads = {n.id for n, _, owner in names if owner is scopes.root and isinstance(n.ctx, ast.Load)}
    named = ({n.attr for n in nodes[ast.Attribute]} | {n.arg for n in nodes[ast.keyword] if n.arg}
             | {n.value for n in nodes[ast.Constant] if isinstance(n.value, str)})
    return refs, loads, named


def _binds(st: ast.stmt) -> list[str]:
    if isinstance(st, ast.ImportFrom) and st.module == "__future__":
        return []
    return top_level_names(st)


def _is_dataclass(cls: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(d) or "NamedTuple" in ast.unparse(d) for d in (*cls.decorator_list, *cls.bases))


def _prune_methods(used: set[str], classes: list[ast.ClassDef], parents: dict[int, ast.AST],
                   gone: set[int]) -> list[ast.ClassDef]:
    """Drop the methods of kept classes that no kept code names (``used``: as an attribute or a string);
    the classes that lost some. ``classes``: every class the program had; those under a node of ``gone``
    are no longer in it (what goes here joins ``gone``)."""
    pruned = []
    for node in classes:
        p = node
        while p is not None and id(p) not in gone:
            p = parents.get(id(p))
        if p is not None:
            continue
        body = []
        for st in node.body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)) and not (
                    st.name in used or st.name in FRAMEWORK_METHODS
                    or (st.name.startswith("__") and st.name.endswith("__"))):
                gone.add(id(st))
                continue
            if (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
                    and st.targets[0].id not in used and not st.targets[0].id.startswith("__")
                    and pure(st.value) and not _is_dataclass(node)):
                gone.add(id(st))  # a class attribute (a property made by a call) no code names
                continue
            body.append(st)
        if len(body) != len(node.body):
            pruned.append(node)
        node.body = body or [ast.Pass()]
    return pruned


def prune_instance_members(module: ast.Module) -> bool:
    """A plain class (no base, no decorator) whose every object is made by ``C(...)`` and only ever has
    attributes read off it (``C(x).a``, ``v = C(x); v.a; v.m()``; a method that returns ``self`` hands on
    the same object): its methods, properties and class attributes no such read reaches go."""
    classes = {st.name: st for st in module.body if isinstance(st, ast.ClassDef) and not st.bases
               and not st.decorator_list and not st.keywords}
    if not classes:
        return False
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for name, cls in classes.items():
        members = {m.name: m for m in cls.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
        members.update({t.id: st for st in cls.body if isinstance(st, ast.Assign) for t in st.targets
                        if isinstance(t, ast.Name)})
        returns_self = {m for m, fn in members.items() if isinstance(fn, ast.FunctionDef) and any(
            isinstance(r, ast.Return) for r in walk(fn)) and all(
            isinstance(r.value, ast.Name) and r.value.id == "self" for r in walk(fn) if isinstance(r, ast.Return))}
        used: set[str] = {"__init__"}
        ok = True

        def follow(expr) -> bool:
            """Record the attributes read off the object ``expr`` evaluates to; False if it escapes."""
            parent = parents.get(id(expr))
            if isinstance(parent, ast.Attribute) and parent.value is expr and isinstance(parent.ctx, ast.Load):
                used.add(parent.attr)
                call = parents.get(id(parent))
                if parent.attr in returns_self and isinstance(call, ast.Call) and call.func is parent:
                    return follow(call)
                return True
            if isinstance(parent, ast.Assign) and parent.value is expr and len(parent.targets) == 1 \
                    and isinstance(parent.targets[0], ast.Name):
                var = parent.targets[0]
                scope = scopes.of.get(id(var))
                if scope is None or scope.kind != "function" or len(scope.bound.get(var.id, ())) != 1:
                    return False
                return all(follow(n) for n, sc in scopes.names if n.id == var.id and n is not var
                           and sc.owner(var.id) is scope)
            return False

        for ref in scopes.module_refs(name):
            call = parents.get(id(ref))
            if isinstance(ref.ctx, ast.Load) and isinstance(call, ast.Call) and call.func is ref:
                if not follow(call):
                    ok = False
                    break
            elif isinstance(ref.ctx, ast.Load):
                ok = False
                break
        if not ok:
            continue
        todo = list(used)
        while todo:  # what the reached members read off self
            m = members.get(todo.pop())
            if m is None:
                continue
            for n in walk(m):
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self" \
                        and n.attr not in used:
                    used.add(n.attr)
                    todo.append(n.attr)
                if isinstance(n, ast.Lambda) and n.args.args:  # property(lambda self: self.x)
                    me = n.args.args[0].arg
                    for x in walk(n.body):
                        if isinstance(x, ast.Attribute) and isinstance(x.value, ast.Name) and x.value.id == me \
                                and x.attr not in used:
                            used.add(x.attr)
                            todo.append(x.attr)
        body = [st for st in cls.body if not (
            (isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)) and st.name not in used)
            or (isinstance(st, ast.Assign) and all(isinstance(t, ast.Name) and t.id not in used for t in st.targets)))]
        if len(body) != len(cls.body):
            cls.body = body or [ast.Pass()]
            changed = True
    return changed


def drop_repeated_imports(module: ast.Module) -> bool:
    """A function's ``import torch`` (golf's modules import lazily, where a name is used) where the one
    module imports the same name the same way at its top: the function reads the module's."""
    from golf.specialize.flatten import _import_text

    top: dict[str, str] = {}
    for st in module.body:
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            for a in st.names:
                top[a.asname or a.name.split(".")[0]] = _import_text(st, a)
    scopes = scopes_of(module)
    changed = False
    for node in walk(module):
        for field in ("body", "orelse", "finalbody") if node is not module else ():
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list):
                continue
            kept = []
            for st in stmts:
                if isinstance(st, (ast.Import, ast.ImportFrom)) and scopes.of[id(st)].kind == "function":
                    scope = scopes.of[id(st)]
                    names = [a for a in st.names
                             if not (top.get(n := a.asname or a.name.split(".")[0]) == _import_text(st, a)
                                     and len(scopes.root.bound.get(n, [])) == 1 and scope.bound.get(n) == [st])]
                    if len(names) < len(st.names):
                        changed = True
                        if not names:
                            continue
                        st.names = names
                kept.append(st)
            if len(kept) < len(stmts):
                stmts[:] = kept or [ast.Pass()]
    if changed:
        tree_changed()
    return changed
