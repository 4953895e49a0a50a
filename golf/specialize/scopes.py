"""Python's scoping over the one module: every scope, what each name reads or binds; on the way, each
node's parent and the nodes of the classes the passes look for (so most passes need no walk of their own)."""
from __future__ import annotations

import ast

from golf.specialize.tree import _AST, _CHILD_FIELDS, COMPREHENSIONS, _node_classes, children


class Scope:
    """A namespace of the program: the module, a function or lambda, a class body, a comprehension."""

    def __init__(self, node: ast.AST, parent: Scope | None, kind: str):
        self.node, self.parent, self.kind = node, parent, kind
        self.bound: dict[str, list[ast.AST]] = {}  # name -> its binding sites (Name, arg, def, alias...)
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()
        self.children: list[Scope] = []

    def bind(self, name: str, site: ast.AST) -> None:
        if name in self.globals or name in self.nonlocals:
            self.parent.owner(name).bound.setdefault(name, []).append(site) if name in self.nonlocals \
                else self.module().bound.setdefault(name, []).append(site)
            return
        self.bound.setdefault(name, []).append(site)

    def owner(self, name: str) -> Scope:
        """The scope whose binding of ``name`` a use here reads (the module scope for a global or builtin)."""
        scope: Scope | None = self
        first = True
        while scope is not None:
            if scope.kind == "module":
                return scope
            if name in scope.globals:
                return scope.module()
            if name in scope.nonlocals:
                scope = scope.parent
                first = False
                continue
            if name in scope.bound and (first or scope.kind != "class"):
                return scope
            first = False
            scope = scope.parent
        raise AssertionError("no module scope")

    def module(self) -> Scope:
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope


class Scopes:
    """Every scope of a module and, for every Name, the scope it is read or bound in; on the way, every
    node's parent (``parents``: parent_map's, but for a node held in several places, such as ast.Load())."""

    def __init__(self, tree: ast.Module):
        self.root = Scope(tree, None, "module")
        self.of: dict[int, Scope] = {}  # id(node) -> the scope a Name, Call or import appears in
        self.names: list[tuple[ast.Name, Scope]] = []
        self.scope_of_node: dict[int, Scope] = {id(tree): self.root}
        self.parents: dict[int, ast.AST] = {}
        self.indexed: dict[type, list[ast.AST]] = {c: [] for c in _INDEXED}  # (in no order to rely on)
        # where each top-level statement's names and listed nodes start: (len(names), {class: len(list)})
        self.marks: list[tuple[int, dict[type, int]]] = []
        self._link(tree)
        for st in tree.body:
            self.marks.append((len(self.names), {c: len(v) for c, v in self.indexed.items()}))
            self._visit(st, self.root)
        self.marks.append((len(self.names), {c: len(v) for c, v in self.indexed.items()}))

    def of_statement(self, i: int) -> tuple[list[tuple[ast.Name, Scope, Scope]], dict[type, list[ast.AST]]]:
        """The module's ``i``-th statement's ``resolved`` names and listed nodes."""
        (n0, c0), (n1, c1) = self.marks[i], self.marks[i + 1]
        return self.resolved()[n0:n1], {c: v[c0[c]:c1[c]] for c, v in self.indexed.items()}

    def all(self, *classes: type) -> list[ast.AST]:
        """The nodes of these classes (of _INDEXED), in no order to rely on."""
        return [n for c in classes for n in self.indexed[c]]

    def _link(self, node) -> None:
        """Record ``node`` as the parent of each node it holds."""
        parents = self.parents
        for child in children(node):
            parents[id(child)] = node

    def _function_scope(self, scope: Scope) -> Scope:
        while scope.kind == "comp":
            scope = scope.parent
        return scope

    def _visit_body(self, body, scope):
        for st in body:
            self._visit(st, scope)

    def _visit(self, node, scope):
        """Record ``node`` (and what it holds) in ``scope``: its names read and bound, its inner scopes.
        (A Name, the commonest node, is taken on the spot; so are nodes that hold none.)"""
        cls = node.__class__
        if cls is ast.Name:
            self._visit_name(node, scope)
            return
        if cls in _OF:
            self.of[id(node)] = scope
        if cls in _INDEX:
            self.indexed[cls].append(node)
        special = _SCOPE_VISITS.get(cls)
        if special is not None and special(self, node, scope):
            return
        of, visit, leaves, parents, names = self.of, self._visit, _LEAVES, self.parents, self.names
        for field in _CHILD_FIELDS[cls]:
            value = getattr(node, field, None)
            if isinstance(value, list):
                items = value
            elif value is None:
                continue
            else:
                items = (value,)
            for item in items:
                kind = item.__class__
                if kind in leaves:
                    parents[id(item)] = node
                    if kind is ast.Constant:
                        self.indexed[ast.Constant].append(item)
                elif kind is ast.Name:
                    key = id(item)
                    parents[key] = node
                    of[key] = scope
                    parents[id(item.ctx)] = item
                    names.append((item, scope))
                    if item.ctx.__class__ is not ast.Load:
                        scope.bind(item.id, item)
                elif isinstance(item, _AST):
                    parents[id(item)] = node
                    visit(item, scope)

    def _link_arguments(self, args: ast.arguments) -> None:
        self._link(args)
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                self._link(a)

    def _open(self, node, scope: Scope, kind: str) -> Scope:
        """A new scope of ``kind`` for ``node``, inside ``scope``."""
        inner = Scope(node, scope, kind)
        scope.children.append(inner)
        self.scope_of_node[id(node)] = inner
        return inner

    def _open_function(self, node, scope: Scope) -> Scope:
        """A function's or lambda's scope, its parameters (linked to their parents) bound in it."""
        self._link_arguments(node.args)
        inner = self._open(node, scope, "function")
        self._arguments_inside(node.args, inner)
        return inner

    def _visit_function(self, node, scope) -> bool:
        self._link(node)
        scope.bind(node.name, node)
        for d in node.decorator_list:
            self._visit(d, scope)
        self._arguments_outside(node.args, scope)
        if node.returns is not None:
            self._visit(node.returns, scope)
        self._visit_body(node.body, self._open_function(node, scope))
        return True

    def _visit_lambda(self, node, scope) -> bool:
        self._link(node)
        self._arguments_outside(node.args, scope)
        self._visit(node.body, self._open_function(node, scope))
        return True

    def _visit_class(self, node, scope) -> bool:
        self._link(node)
        scope.bind(node.name, node)
        for d in (*node.decorator_list, *node.bases, *node.keywords):
            self._visit(d, scope)
        inner = self._open(node, scope, "class")
        self._visit_body(node.body, inner)
        return True

    def _visit_comprehension(self, node, scope) -> bool:
        self._link(node)
        for gen in node.generators:
            self._link(gen)
            self.indexed[ast.comprehension].append(gen)
        gens = node.generators
        self._visit(gens[0].iter, scope)
        inner = self._open(node, scope, "comp")
        for i, gen in enumerate(gens):
            if i:
                self._visit(gen.iter, inner)
            self._visit(gen.target, inner)
            for cond in gen.ifs:
                self._visit(cond, inner)
        if isinstance(node, ast.DictComp):
            self._visit(node.key, inner)
            self._visit(node.value, inner)
        else:
            self._visit(node.elt, inner)
        return True

    def _visit_augassign(self, node, scope) -> bool:
        if isinstance(node.target, ast.Name):
            read = ast.Name(node.target.id, ast.Load())  # x += 1 reads x too (a node outside the tree)
            self.of[id(read)] = scope
            self.names.append((read, scope))
        return False

    def _visit_name(self, node, scope) -> bool:
        self.of[id(node)] = scope
        self.parents[id(node.ctx)] = node
        self.names.append((node, scope))
        if node.ctx.__class__ is not ast.Load:  # Store, Del
            scope.bind(node.id, node)
        return True

    def _visit_namedexpr(self, node, scope) -> bool:
        self._link(node)
        self._link(node.target)
        target_scope = self._function_scope(scope)
        self.of[id(node.target)] = target_scope
        self.names.append((node.target, target_scope))
        target_scope.bind(node.target.id, node.target)
        self._visit(node.value, scope)
        return True

    def _visit_import(self, node, scope) -> bool:
        self._link(node)
        for a in node.names:
            if a.name != "*":
                scope.bind(a.asname or a.name.split(".")[0], node)
        return True

    def _visit_handler(self, node, scope) -> bool:
        if node.name:
            scope.bind(node.name, node)
        return False

    def _visit_global(self, node, scope) -> bool:
        scope.globals.update(node.names)
        return False

    def _visit_nonlocal(self, node, scope) -> bool:
        scope.nonlocals.update(node.names)
        return False

    def _arguments_outside(self, args: ast.arguments, scope):
        for d in (*args.defaults, *(x for x in args.kw_defaults if x is not None)):
            self._visit(d, scope)
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None and a.annotation is not None:
                self._visit(a.annotation, scope)

    def _arguments_inside(self, args: ast.arguments, inner):
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                inner.bind(a.arg, a)

    def owner(self, name: ast.Name) -> Scope:
        return self.of[id(name)].owner(name.id) if id(name) in self.of else self.root

    def resolved(self) -> list[tuple[ast.Name, Scope, Scope]]:
        """(name, the scope it appears in, the scope whose binding it reads) for each of ``names``."""
        if not hasattr(self, "_resolved"):
            self._resolved = [(n, s, s.owner(n.id)) for n, s in self.names]
        return self._resolved

    def loads(self) -> dict[tuple[int, str], list[ast.Name]]:
        """(id(owner scope), name) -> the Name nodes that read it, in order (read only)."""
        if not hasattr(self, "_loads"):
            self._loads: dict[tuple[int, str], list[ast.Name]] = {}
            for n, _, owner in self.resolved():
                if isinstance(n.ctx, ast.Load):
                    self._loads.setdefault((id(owner), n.id), []).append(n)
        return self._loads

    def module_refs(self, name: str) -> list[ast.Name]:
        """The Name nodes that read or bind the module-level ``name``."""
        if not hasattr(self, "_refs"):
            self._refs: dict[str, list[ast.Name]] = {}
            for n, _, owner in self.resolved():
                if owner is self.root:
                    self._refs.setdefault(n.id, []).append(n)
        return self._refs.get(name, [])


_SCOPE_VISITS = {ast.FunctionDef: Scopes._visit_function, ast.AsyncFunctionDef: Scopes._visit_function,
                 ast.Lambda: Scopes._visit_lambda, ast.ClassDef: Scopes._visit_class,
                 **{c: Scopes._visit_comprehension for c in COMPREHENSIONS}, ast.AugAssign: Scopes._visit_augassign,
                 ast.Name: Scopes._visit_name, ast.NamedExpr: Scopes._visit_namedexpr,
                 ast.Import: Scopes._visit_import, ast.ImportFrom: Scopes._visit_import,
                 ast.ExceptHandler: Scopes._visit_handler, ast.Global: Scopes._visit_global,
                 ast.Nonlocal: Scopes._visit_nonlocal}
# the node classes Scopes lists (Scopes.all)
_INDEXED = (ast.Attribute, ast.Constant, ast.keyword, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Try,
            ast.Call, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Delete, ast.With, ast.For, ast.comprehension,
            ast.Yield, ast.YieldFrom)
_INDEX = frozenset(_INDEXED)
_OF = frozenset((ast.Call, ast.Import, ast.ImportFrom))  # (and Name): the nodes Scopes.of maps


# nodes that hold no nodes and need no visit of their own (contexts, operators, constants, pass...)
_LEAVES = {c for c in _node_classes() if c._fields is not None and not _CHILD_FIELDS[c] and c not in _SCOPE_VISITS}


def _all_scopes(scope: Scope):
    yield scope
    for child in scope.children:
        yield from _all_scopes(child)


def bound_once(root: Scope, kinds: tuple[str, ...] = ("function",)):
    """(scope, name, the Name that binds it) for each name a scope of these kinds binds once, by a Name."""
    for scope in _all_scopes(root):
        if scope.kind in kinds:
            for name, sites in scope.bound.items():
                if len(sites) == 1 and isinstance(sites[0], ast.Name):
                    yield scope, name, sites[0]
