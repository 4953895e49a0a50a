"""Attributes: one that every store sets to the same constant is read as it, a store into one nothing
reads goes, and so does a call of a method that does nothing."""
from __future__ import annotations

import ast

from golf.specialize.analyses import parents_of, scopes_of
from golf.specialize.effects import queries
from golf.specialize.fold import const, is_const, literal
from golf.specialize.scopes import bound_once
from golf.specialize.tree import _blocks, _contains, parent_map, _replace, _rewrite_blocks, top_level_names, walk


def _library_attributes() -> set[str]:
    """Attributes the libraries' own code sets on golf's objects (nn.Module's training, an optimizer's
    state...): never folded, whatever golf stores."""
    import torch

    return set(dir(torch.nn.Module())) | set(dir(torch.optim.Optimizer)) | set(dir(object))


def _restoring_names(module: ast.Module) -> dict[int, str]:
    """For each Name read in a function where the name is bound once, to ``<x>.attr``: id(read) -> attr."""
    out = {}
    scopes = scopes_of(module)
    parents = parents_of(module)
    origin: dict[tuple[int, str], str] = {}
    for scope, name, site in bound_once(scopes.root):
        assign = parents.get(id(site))
        if isinstance(assign, ast.Tuple):
            tup, assign = assign, parents.get(id(assign))
            if isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Tuple) \
                    and len(assign.value.elts) == len(tup.elts):
                value = assign.value.elts[tup.elts.index(site)]
            else:
                continue
        elif isinstance(assign, ast.Assign):
            value = assign.value
        else:
            continue
        if isinstance(value, ast.Attribute):
            origin[(id(scope), name)] = value.attr
    for name, _, owner in scopes.resolved():
        if isinstance(name.ctx, ast.Load):
            attr = origin.get((id(owner), name.id))
            if attr is not None:
                out[id(name)] = attr
    return out


def propagate_attributes(module: ast.Module) -> bool:
    """``self.name`` read in a method of a class, where every store of an attribute ``name`` in the whole
    program is ``<object>.name = <the same constant>`` (and the class sets no attribute by a computed
    name), reads that constant. Other stores of it (``block.name = False``) count as well."""
    stores: dict[str, list] = {}
    dynamic = False
    poisoned: set[int] = set()  # classes that set attributes of their own by computed names
    scopes = scopes_of(module)  # (the tree as the pass found it, up to its first change; in what order the
    parents = parents_of(module)  # nodes come: no matter, what the pass finds is sets, or lists alike)
    for node in scopes.all(ast.Call):  # setattr(self, <computed>, ...) in a class: that class, and those around it
        if (isinstance(node.func, ast.Name) and node.func.id == "setattr" and len(node.args) >= 2
                and not isinstance(node.args[1], ast.Constant) and isinstance(node.args[0], ast.Name)
                and node.args[0].id == "self"):
            p = parents.get(id(node))
            while p is not None:
                if isinstance(p, ast.ClassDef):
                    poisoned.add(id(p))
                    node.args[0].golf_self_setattr = True
                p = parents.get(id(p))
    for node in scopes.all(ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Delete, ast.Call, ast.With, ast.For,
                           ast.comprehension):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in walk(t):
                    if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                        value = node.value if (isinstance(node, ast.Assign) and t is n) or (
                            isinstance(node, ast.AnnAssign) and t is n) else None
                        if isinstance(node, ast.Assign) and isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                                and n in t.elts and len(t.elts) == len(node.value.elts):
                            value = node.value.elts[t.elts.index(n)]
                        stores.setdefault(n.attr, []).append(value)
        elif isinstance(node, (ast.Delete,)):
            for t in node.targets:
                if isinstance(t, ast.Attribute):
                    stores.setdefault(t.attr, []).append(None)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
                if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                    stores.setdefault(node.args[1].value, []).append(None)
                elif not getattr(node.args[0], "golf_self_setattr", False):
                    dynamic = True
        elif isinstance(node, (ast.With, ast.For, ast.comprehension)):
            targets = [i.optional_vars for i in node.items] if isinstance(node, ast.With) else [node.target]
            for t in targets:
                for n in walk(t) if t is not None else ():
                    if isinstance(n, ast.Attribute):
                        stores.setdefault(n.attr, []).append(None)
    if dynamic:
        return False
    # a store of what was read from the same attribute (``was = m.a`` ... ``m.a = was``) adds no value
    restores = _restoring_names(module)
    for attr, values in stores.items():
        stores[attr] = [v for v in values if not (isinstance(v, ast.Name) and restores.get(id(v)) == attr)]
    constant: dict[str, object] = {}
    library = None
    for attr, values in stores.items():
        if not values or any(v is None or not is_const(v) for v in values):
            continue
        consts = {(type(const(v)), const(v)) for v in values}
        if len(consts) != 1:
            continue
        if library is None:
            library = _library_attributes()
        if attr in library:
            continue
        constant[attr] = const(values[0])
    if not constant:
        return False
    classes = scopes.all(ast.ClassDef)
    defined = {n.name for c in classes for n in c.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for c in classes for n in c.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    changed = False
    if not poisoned:  # x.name anywhere, for a name no class defines and no library object has
        modules = {n for st in module.body if isinstance(st, (ast.Import, ast.ImportFrom)) for n in top_level_names(st)}
        for n in scopes.all(ast.Attribute):
            if (isinstance(n.ctx, ast.Load) and n.attr in constant
                    and n.attr not in defined and not (isinstance(n.value, ast.Name) and n.value.id in modules)
                    and id(n) in parents and _contains(parents[id(n)], n)):
                _replace(parents[id(n)], n, literal(constant[n.attr]))
                changed = True
    # the functions holding a read of ``<name>.<one of constant>``: the methods below that may read one
    holders = set()
    for n in scopes.all(ast.Attribute):
        if isinstance(n.ctx, ast.Load) and isinstance(n.value, ast.Name) and n.attr in constant:
            p = parents.get(id(n))
            while p is not None:
                if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    holders.add(id(p))
                p = parents.get(id(p))
    subclassed = {b.id for c in classes for b in c.bases if isinstance(b, ast.Name)}
    golf_classes = {c.name for c in module.body if isinstance(c, ast.ClassDef)}
    for cls in classes:
        if id(cls) in poisoned:
            continue
        own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} | {
            t.id for n in cls.body if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        if cls.bases and not all(isinstance(b, ast.Attribute) or (isinstance(b, ast.Name) and b.id not in golf_classes)
                                 for b in cls.bases):
            own |= defined  # a base of golf's may define it
        if cls.name in subclassed:
            own |= defined  # and so may a subclass
        for method in cls.body:
            if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) or not method.args.args:
                continue
            if any(isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod") for d in method.decorator_list):
                continue
            if id(method) not in holders:
                continue  # (no read to fold in it)
            self_name = method.args.args[0].arg
            rebound = any(isinstance(n, ast.Name) and n.id == self_name and isinstance(n.ctx, ast.Store)
                          for n in walk(method))
            if rebound:
                continue
            method_parents = parent_map(method) if changed else parents
            for n in list(walk(method)):
                if (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load) and isinstance(n.value, ast.Name)
                        and n.value.id == self_name and n.attr in constant and n.attr not in own):
                    _replace(method_parents[id(n)], n, literal(constant[n.attr]))
                    changed = True
    return changed


def drop_dead_attributes(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """``self.name = value`` in a method where no code reads an attribute ``name`` (nor names it in a string,
    for getattr), and no library reads it either: the store goes (the value's effects stay). Also the parts of
    ``a, b = x, y`` that store into a local name nothing reads."""
    scopes = scopes_of(module)  # (in what order the nodes come: no matter)
    parents = parents_of(module)
    read = {n.attr for n in scopes.all(ast.Attribute) if isinstance(n.ctx, ast.Load)}
    read |= {n.value for n in scopes.all(ast.Constant) if isinstance(n.value, str)}
    library = _library_attributes()
    # the functions holding a store into an attribute nothing reads: the methods below that may drop one
    holders = set()
    for st in scopes.all(ast.Assign):
        if len(st.targets) == 1 and any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                        and t.attr not in read and t.attr not in library
                                        for t in (st.targets[0], *getattr(st.targets[0], "elts", ()))):
            p = parents.get(id(st))
            while p is not None:
                if isinstance(p, ast.FunctionDef):
                    holders.add(id(p))
                p = parents.get(id(p))
    changed = False
    for cls in scopes.all(ast.ClassDef):  # (what the pass changes holds no class)
        if any(isinstance(m, ast.FunctionDef) and m.name in ("__getattr__", "__getattribute__", "__setattr__",
                                                             "__getstate__", "__reduce__") for m in cls.body):
            continue
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef) or not method.args.args:
                continue
            if id(method) not in holders:
                continue  # (no store to drop in it)
            me = method.args.args[0].arg

            def dead(t):
                return (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me
                        and t.attr not in read and t.attr not in library)

            def without_dead(st):
                nonlocal changed
                if isinstance(st, ast.Assign) and len(st.targets) == 1:
                    t = st.targets[0]
                    if dead(t):
                        changed = True
                        return [] if queries(st.value, free) else [ast.Expr(st.value)]
                    if isinstance(t, ast.Tuple) and isinstance(st.value, ast.Tuple) \
                            and len(t.elts) == len(st.value.elts) and not any(isinstance(e, ast.Starred)
                                                                               for e in t.elts):
                        keep = [(a, b) for a, b in zip(t.elts, st.value.elts) if not (dead(a) and queries(b, free))]
                        if len(keep) != len(t.elts):
                            changed = True
                            if not keep:
                                return []
                            if len(keep) == 1:
                                return [ast.Assign([keep[0][0]], keep[0][1])]
                            t.elts, st.value.elts = [a for a, _ in keep], [b for _, b in keep]
                return [st]

            for node in _blocks(method):
                _rewrite_blocks(node, without_dead)
    return changed


def drop_idle_method_calls(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """``v.m(...)`` as a statement, where ``v`` is a local bound once to ``C(...)`` (a class of golf's) and
    ``C.m`` does nothing: the call goes (what it passes has no effect)."""
    classes = {st.name: st for st in module.body if isinstance(st, ast.ClassDef)}
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for scope, var, site in bound_once(scopes.root):
        assign = parents.get(id(site))
        if not (isinstance(assign, ast.Assign) and assign.targets == [site] and isinstance(assign.value, ast.Call)
                and isinstance(assign.value.func, ast.Name) and assign.value.func.id in classes):
            continue
        cls = classes[assign.value.func.id]
        idle = {m.name for m in cls.body if isinstance(m, ast.FunctionDef) and all(
            isinstance(b, (ast.Pass,)) or (isinstance(b, ast.Expr) and is_const(b.value))
            or (isinstance(b, ast.Return) and b.value is None) for b in m.body)}
        for name, sc in scopes.names:
            if name.id != var or sc.owner(var) is not scope:
                continue
            attr = parents.get(id(name))
            call = parents.get(id(attr))
            st = parents.get(id(call))
            if (isinstance(attr, ast.Attribute) and attr.attr in idle and isinstance(call, ast.Call)
                    and call.func is attr and isinstance(st, ast.Expr)
                    and all(queries(a, free) for a in (*call.args, *(k.value for k in call.keywords)))):
                holder = parents.get(id(st))
                for field, body in ast.iter_fields(holder):
                    if isinstance(body, list) and st in body:
                        body[body.index(st)] = ast.Pass()
                        changed = True
    return changed
