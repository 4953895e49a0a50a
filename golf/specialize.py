"""golf's code as one module specialized to one run, for a submission's ``train_gpt.py`` (issue 32).

The exported file knows every config value and the evaluation stages, so the code it carries is
partially evaluated: golf's modules become one namespace (their imports of each other vanish), the
config's reads become constants, what those constants decide is folded away, and what only a failed
run reaches (a raise nothing catches, and the branch that leads to it) goes. Each pass keeps the
behaviour of a run that succeeds; what no kept code names is dropped. golf.submission minifies the result.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_AST = ast.AST
_SCALARS = {"identifier", "string", "constant", "int"}


class _ChildFields(dict):
    """Node class -> the fields that may hold nodes: its ASDL signature (the class's docstring) less the
    identifiers, strings, constants and ints; every field where the signature is not readable."""

    def __missing__(self, cls: type) -> tuple[str, ...]:
        fields = tuple(cls._fields)
        signature = (cls.__doc__ or "").split("\n")[0].strip()
        if fields and signature.startswith(cls.__name__ + "(") and signature.endswith(")"):
            types = {}
            for part in signature[len(cls.__name__) + 1:-1].split(","):
                typ, _, name = part.strip().rpartition(" ")
                types[name] = typ.rstrip("*?")
            if set(types) == set(fields):
                fields = tuple(f for f in fields if types[f] not in _SCALARS)
        self[cls] = fields
        return fields


_CHILD_FIELDS = _ChildFields()


def children(node: ast.AST):
    """ast.iter_child_nodes, faster (the passes walk the whole program many times)."""
    for field in _CHILD_FIELDS[node.__class__]:
        value = getattr(node, field, None)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, _AST):
                    yield item
        elif isinstance(value, _AST):
            yield value


def walk(node: ast.AST):
    """Every node under ``node`` (itself first), depth first: ast.walk's nodes, faster. A node's children
    are read when the walk goes on after it (so a caller may change them first)."""
    todo = [node]
    pop, push, append, plans = todo.pop, todo.extend, todo.append, _CHILD_FIELDS
    while todo:
        n = pop()
        yield n
        for field in plans[n.__class__]:
            value = getattr(n, field, None)
            if isinstance(value, list):
                push([v for v in value if isinstance(v, _AST)])
            elif isinstance(value, _AST):
                append(value)


def _nodes_and_parents(node: ast.AST) -> tuple[list[ast.AST], dict[int, ast.AST]]:
    """``list(walk(node))`` and ``parent_map(node)`` in one pass."""
    nodes, parents, todo = [], {}, [node]
    pop, append, add, plans = todo.pop, todo.append, nodes.append, _CHILD_FIELDS
    while todo:
        p = pop()
        add(p)
        for field in plans[p.__class__]:
            value = getattr(p, field, None)
            if isinstance(value, list):
                for v in value:
                    if isinstance(v, _AST):
                        parents[id(v)] = p
                        append(v)
            elif isinstance(value, _AST):
                parents[id(value)] = p
                append(value)
    return nodes, parents


_STATELESS = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)


def copy_tree(value):
    """copy.deepcopy of a node (or a list of them), faster: every node and list anew, with the node's
    fields and locations; a context or an operator (which holds nothing) is shared."""
    if isinstance(value, list):
        return [copy_tree(v) for v in value]
    if not isinstance(value, _AST) or isinstance(value, _STATELESS):
        return value  # (a str, a number, None; a tuple or bytes constant: immutable)
    new = value.__class__.__new__(value.__class__)
    new.__dict__.update({k: copy_tree(v) for k, v in value.__dict__.items()})
    return new


def parent_map(node: ast.AST) -> dict[int, ast.AST]:
    """id(child) -> parent, for every node under ``node``."""
    return _nodes_and_parents(node)[1]
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class SpecializeError(Exception):
    """golf's code has a form the specializer does not handle (so it refuses rather than guess)."""


# --- scopes ------------------------------------------------------------------------------------

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
        for field in _CHILD_FIELDS[node.__class__]:
            value = getattr(node, field, None)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, _AST):
                        parents[id(item)] = node
            elif isinstance(value, _AST):
                parents[id(value)] = node

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

    def _visit_function(self, node, scope) -> bool:
        self._link(node)
        self._link_arguments(node.args)
        scope.bind(node.name, node)
        for d in node.decorator_list:
            self._visit(d, scope)
        self._arguments_outside(node.args, scope)
        if node.returns is not None:
            self._visit(node.returns, scope)
        inner = Scope(node, scope, "function")
        scope.children.append(inner)
        self.scope_of_node[id(node)] = inner
        self._arguments_inside(node.args, inner)
        self._visit_body(node.body, inner)
        return True

    def _visit_lambda(self, node, scope) -> bool:
        self._link(node)
        self._link_arguments(node.args)
        self._arguments_outside(node.args, scope)
        inner = Scope(node, scope, "function")
        scope.children.append(inner)
        self.scope_of_node[id(node)] = inner
        self._arguments_inside(node.args, inner)
        self._visit(node.body, inner)
        return True

    def _visit_class(self, node, scope) -> bool:
        self._link(node)
        scope.bind(node.name, node)
        for d in (*node.decorator_list, *node.bases, *node.keywords):
            self._visit(d, scope)
        inner = Scope(node, scope, "class")
        scope.children.append(inner)
        self.scope_of_node[id(node)] = inner
        self._visit_body(node.body, inner)
        return True

    def _visit_comprehension(self, node, scope) -> bool:
        self._link(node)
        for gen in node.generators:
            self._link(gen)
            self.indexed[ast.comprehension].append(gen)
        gens = node.generators
        self._visit(gens[0].iter, scope)
        inner = Scope(node, scope, "comp")
        scope.children.append(inner)
        self.scope_of_node[id(node)] = inner
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


# --- what the passes read of the whole tree, kept while it does not change -------------------------

class _Analyses:
    """The whole module's nodes (in ``walk`` order), parents and scopes, made when a pass first asks and
    kept until the tree changes (``tree_changed``): the passes of a round read them afresh only after one
    changed something. (Kept only while the tree is as it was, every id they map is a live node's.)"""

    module: ast.Module | None = None
    generation = 0  # bumped at every change of the tree
    made_at = -1
    nodes: list[ast.AST] | None = None
    parents: dict[int, ast.AST] | None = None
    scopes: Scopes | None = None
    targets: list | None = None  # _targets'
    located_at = -1  # the generation whose nodes all have locations (``locate``)


def tree_changed() -> None:
    """The tree changed (a pass's own changes, or what it rewrites without counting it as one)."""
    _Analyses.generation += 1


def _current(module: ast.Module) -> type[_Analyses]:
    a = _Analyses
    if a.module is not module or a.made_at != a.generation:
        a.module, a.made_at = module, a.generation
        a.nodes = a.parents = a.scopes = a.targets = None
    return a


def nodes_of(module: ast.Module) -> list[ast.AST]:
    """``list(walk(module))``, kept while the tree does not change."""
    a = _current(module)
    if a.nodes is None:
        a.nodes, parents = _nodes_and_parents(module)
        if a.parents is None:
            a.parents = parents
    return a.nodes


def parents_of(module: ast.Module) -> dict[int, ast.AST]:
    """``parent_map(module)``, kept while the tree does not change (``Scopes`` makes one too)."""
    a = _current(module)
    if a.parents is None:
        if a.scopes is not None:
            a.parents = a.scopes.parents
        else:
            a.nodes, a.parents = _nodes_and_parents(module)
    return a.parents


def scopes_of(module: ast.Module) -> Scopes:
    """``Scopes(module)``, kept while the tree does not change (read only: a pass never changes it)."""
    a = _current(module)
    if a.scopes is None:
        a.scopes = Scopes(module)
    return a.scopes


def forget_analyses() -> None:
    a = _Analyses
    a.module = a.nodes = a.parents = a.scopes = a.targets = None
    _Analyses.located_at = -1


_LOCATED = ("lineno", "col_offset", "end_lineno", "end_col_offset")


def _locate_nodes(nodes: list[ast.AST], parents: dict[int, ast.AST]) -> None:
    """ast.fix_missing_locations on ``nodes`` (in walk order, parents first): a node without a location
    takes its parent's (ast.unparse reads a statement's lineno)."""
    for n in nodes:
        if "lineno" in n._attributes and not hasattr(n, "lineno"):
            p = parents.get(id(n))
            while p is not None and not hasattr(p, "lineno"):
                p = parents.get(id(p))
            for attr, default in zip(_LOCATED, (1, 0, 1, 0)):
                if getattr(n, attr, None) is None:
                    setattr(n, attr, getattr(p, attr, default) if p is not None else default)


def locate(tree: ast.AST) -> ast.AST:
    """``ast.fix_missing_locations(tree)``, faster; for the module the passes work on, only where the tree
    changed since the last time."""
    if isinstance(tree, ast.Module) and _Analyses.module is tree:
        if _Analyses.located_at != _Analyses.generation:
            _locate_nodes(nodes_of(tree), parents_of(tree))
            _Analyses.located_at = _Analyses.generation
        return tree
    _locate_nodes(*_nodes_and_parents(tree))
    return tree


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


def _node_classes(cls: type = ast.AST):
    for sub in cls.__subclasses__():
        yield sub
        yield from _node_classes(sub)


# nodes that hold no nodes and need no visit of their own (contexts, operators, constants, pass...)
_LEAVES = {c for c in _node_classes() if c._fields is not None and not _CHILD_FIELDS[c] and c not in _SCOPE_VISITS}


# --- one namespace -------------------------------------------------------------------------------

def _is_main_guard(st: ast.stmt) -> bool:
    return isinstance(st, ast.If) and "__main__" in ast.unparse(st.test) and "__name__" in ast.unparse(st.test)


def _is_docstring(st: ast.stmt) -> bool:
    return isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str)


def golf_target(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> tuple[str, str | None] | None:
    """What an imported name is in golf: (module, name), (module, None) for a whole module, or None."""
    if isinstance(node, ast.Import):
        if alias.name.startswith("golf."):
            if alias.asname is None:
                raise SpecializeError(f"import {alias.name} without 'as' (golf's code uses import golf.x as y)")
            return alias.name[5:], None
        return None
    if node.level:
        raise SpecializeError("relative import in golf")
    if node.module == "golf":
        return (alias.name, None) if _is_module(alias.name) else ("__init__", alias.name)
    if node.module and node.module.startswith("golf."):
        return node.module[5:], alias.name
    return None


_MODULE_FILES: dict[str, bool] = {}  # (made afresh by each Flattener)


def _is_module(name: str) -> bool:
    """Whether golf has a module ``name``."""
    if name not in _MODULE_FILES:
        _MODULE_FILES[name] = (PACKAGE_DIR / f"{name}.py").is_file()
    return _MODULE_FILES[name]


def top_level_names(st: ast.stmt) -> list[str]:
    """The names a top-level statement binds (none for an expression or an attribute assignment)."""
    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [st.name]
    if isinstance(st, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in st.names]
    targets = st.targets if isinstance(st, ast.Assign) else [st.target] if isinstance(st, (ast.AnnAssign, ast.AugAssign)) \
        else []
    out = []
    for t in targets:
        out += [n.id for n in walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    if isinstance(st, (ast.If, ast.Try, ast.With, ast.For, ast.While)):  # e.g. try: import x except: x = None
        out += [n.id for n in walk(st) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
        for node in walk(st):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out += [a.asname or a.name.split(".")[0] for a in node.names]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.append(node.name)
    return out


class Flattener:
    """golf's modules (but ``skip``) as one module: their imports of each other become references to the
    one definition of each name. A golf module that code holds as a value (``from golf import kernels as
    module``, then ``module.x`` later through a variable) stays a module of its own: ``embedded``."""

    def __init__(self, skip: set[str]):
        _MODULE_FILES.clear()
        self.skip = set(skip)
        self.trees: dict[str, ast.Module] = {}  # (each rewritten in place by flat: see _froms, _defined)
        for path in sorted(PACKAGE_DIR.glob("*.py")):
            m = path.stem
            if m in self.skip or m == "__main__":
                continue
            tree = ast.parse(path.read_text())
            tree.body = [st for st in tree.body if not _is_main_guard(st) and not _is_docstring(st)]
            self.trees[m] = tree
        # what resolve and defined read of each module, as it is before any rewriting: its top-level
        # `from x import a as b` (each alone) and the names it defines
        self._froms = {m: [(a.asname or a.name, ast.ImportFrom(st.module, [], st.level), ast.alias(a.name, a.asname))
                           for st in tree.body if isinstance(st, ast.ImportFrom) for a in st.names]
                       for m, tree in self.trees.items()}
        self._defined = {m: {n for st in tree.body if not isinstance(st, (ast.Import, ast.ImportFrom))
                             for n in top_level_names(st)} for m, tree in self.trees.items()}
        self.embedded: set[str] = set()
        for m, tree in self.trees.items():
            for node in walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "golf":
                    for a in node.names:
                        t = golf_target(node, a)
                        if t[1] is None and t[0] not in self.skip:
                            self.embedded.add(t[0])  # `from golf import x as m`: held as a value (golf.model)

    def _plan_renames(self) -> None:
        """A top-level name two modules bind differently keeps its first binding's name; the later module's
        becomes ``name_module`` (both its definition and every read of it)."""
        self.renamed: dict[tuple[str, str], str] = {}
        first: dict[str, tuple[str, object]] = {}  # name -> (module, its text: a str, or the statement to dump)
        dumps: dict[int, str] = {}

        def text_of(x) -> str:  # (a statement's dump only where two modules bind its name)
            if isinstance(x, str):
                return x
            if id(x) not in dumps:
                dumps[id(x)] = ast.dump(x)
            return dumps[id(x)]

        for m in self.order():
            for st in self.trees[m].body:
                if isinstance(st, (ast.Import, ast.ImportFrom)):
                    items = [(a.asname or a.name.split(".")[0], _import_text(st, a)) for a in st.names
                             if golf_target(st, a) is None and getattr(st, "module", None) != "__future__"]
                else:
                    items = [(n, st) for n in top_level_names(st)]
                for name, text in items:
                    if name not in first:
                        first[name] = (m, text)
                    elif first[name][0] != m and text_of(first[name][1]) != text_of(text) and not _same_root_imports(
                            text_of(first[name][1]), text_of(text)):
                        self.renamed[(m, name)] = f"{name}_{m}"

    def defined(self, m: str) -> set[str]:
        """The names module ``m`` defines itself (not by importing them)."""
        return set(self._defined[m])

    def resolve(self, m: str, name: str, seen=()) -> str:
        """The flat name of module ``m``'s ``name`` (following golf's re-exports)."""
        if (m, name) in seen:
            raise SpecializeError(f"import cycle at golf.{m}.{name}")
        for local, st, a in self._froms[m]:
            if local == name:
                t = golf_target(st, a)
                if t is None:
                    return self.renamed.get((m, name), name)
                if t[1] is None:
                    raise SpecializeError(f"golf.{m} imports module golf.{t[0]} as {name} at the top")
                if t[0] in self.skip:
                    raise SpecializeError(f"golf.{m} imports golf.{t[0]} at the top, which this "
                                          "submission leaves out: import it inside the function that needs it")
                return self.resolve(t[0], t[1], (*seen, (m, name)))
        return self.renamed.get((m, name), name)

    def order(self) -> list[str]:
        """Modules in an order where each one's top-level imports of golf come before it."""
        out: list[str] = []

        def visit(m, path=()):
            if m in out or m in self.embedded:
                return
            if m in path:
                raise SpecializeError(f"golf modules import each other at the top: {' -> '.join((*path, m))}")
            for st in self.trees[m].body:
                if isinstance(st, ast.ImportFrom):
                    for a in st.names:
                        t = golf_target(st, a)
                        if t is not None and t[0] in self.trees:
                            visit(t[0], (*path, m))
            out.append(m)

        for m in self.trees:
            visit(m)
        return out

    def flat(self) -> tuple[ast.Module, dict[str, ast.Module]]:
        """The one module, and each embedded module as its own."""
        self._plan_renames()
        imports: list[ast.stmt] = []
        seen_imports: dict[str, str] = {}
        body: list[ast.stmt] = []
        owner: dict[str, tuple[str, ast.stmt]] = {}  # flat name -> (module, the statement binding it)
        dumps: dict[int, str] = {}

        def text_of(st) -> str | None:  # (a statement's dump only where two statements bind one name)
            if st is None:
                return None
            if id(st) not in dumps:
                dumps[id(st)] = ast.dump(st)
            return dumps[id(st)]

        future = []
        for m in self.order():
            tree = self._rewrite(m)
            for st in tree.body:
                if isinstance(st, ast.ImportFrom) and st.module == "__future__":
                    future = [st]
                    continue
                if isinstance(st, (ast.Import, ast.ImportFrom)):
                    for a in st.names:
                        one = type(st)(**{**{f: getattr(st, f) for f in st._fields}, "names": [a]})
                        bound, text = a.asname or a.name.split(".")[0], ast.unparse(one)
                        if text in seen_imports.values():
                            continue
                        if bound in seen_imports:
                            if not (text.startswith("import ") and seen_imports[bound].startswith("import ")
                                    and " as " not in text + seen_imports[bound]):
                                raise SpecializeError(f"{bound!r} is imported as {seen_imports[bound]!r} and {text!r}")
                            continue
                        seen_imports[bound] = text
                        imports.append(one)
                    continue
                names = top_level_names(st)
                clash = [n for n in names if n in owner or n in seen_imports]
                if clash:
                    if len(names) == 1 and text_of(owner.get(names[0], (None, None))[1]) == text_of(st):
                        continue  # the same definition in two modules (log = logging.getLogger("golf"))
                    if all(owner.get(n, (m,))[0] == m for n in clash):
                        pass  # rebinding within one module (try/except fallbacks, registered `_`s)
                    else:
                        raise SpecializeError(f"golf.{m} defines {clash} as another module does: rename one")
                for n in names:
                    owner.setdefault(n, (m, st))
                body.append(st)
        for n in seen_imports:
            if n in owner:
                raise SpecializeError(f"{n!r} is both imported and defined in golf")
        module = ast.Module(body=[*future, *imports, *body], type_ignores=[])
        embedded = {m: self._rewrite(m) for m in self.embedded}
        return locate(module), embedded

    def _rewrite(self, m: str) -> ast.Module:
        """Module ``m`` with its golf imports gone: names read through them renamed to their flat names."""
        tree = self.trees[m]  # (rewritten once: resolve and defined read what they need from before)
        scopes = Scopes(tree)
        renames: dict[tuple[int, str], str] = {}  # (id(scope), local name) -> flat name
        module_aliases: dict[tuple[int, str], str] = {}  # (id(scope), local name) -> golf module
        drop: dict[int, list[ast.alias]] = {}
        for node in walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            scope = scopes.of[id(node)]
            for a in node.names:
                t = golf_target(node, a)
                if t is None:
                    continue
                drop.setdefault(id(node), []).append(a)
                local = a.asname or a.name.split(".")[0]
                if t[0] in self.skip:
                    continue  # a lazy import of a module left out: the code using it never runs here
                if t[1] is None:
                    if t[0] in self.embedded:
                        continue  # handled below: the import becomes the embedded module's object
                    module_aliases[(id(scope), local)] = t[0]
                else:
                    flat = self.resolve(t[0], t[1])
                    if flat != local:
                        renames[(id(scope), local)] = flat
                    if scope is not scopes.root and len(scope.bound.get(local, ())) > 1:
                        raise SpecializeError(f"golf.{m}: {local!r} is imported from golf and bound again "
                                              "in the same function")
        for (mod, name), new in self.renamed.items():
            if mod == m:
                renames[(id(scopes.root), name)] = new
                for st in tree.body:
                    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and st.name == name:
                        st.name = new
                    for node in walk(st) if isinstance(st, (ast.Import, ast.ImportFrom, ast.Try, ast.If)) else ():
                        if isinstance(node, (ast.Import, ast.ImportFrom)) and scopes.of[id(node)] is scopes.root:
                            for a in node.names:
                                if (a.asname or a.name.split(".")[0]) == name:
                                    if isinstance(node, ast.Import) and "." in a.name:
                                        raise SpecializeError(f"golf.{m}: cannot rename {a.name}")
                                    a.asname = new
        parents = parent_map(tree)
        for name, scope in scopes.names:
            key = (id(scope.owner(name.id)), name.id)
            if key in renames:
                name.id = renames[key]
            elif key in module_aliases:
                parent = parents.get(id(name))
                target = module_aliases[key]
                if isinstance(parent, ast.Attribute) and parent.value is name:
                    flat = self.resolve(target, parent.attr)
                    new = ast.Name(id=flat, ctx=parent.ctx)
                    _replace(parents[id(parent)], parent, new)
                    continue
                if (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "getattr"
                        and parent.args[0] is name and len(parent.args) == 2):
                    parent.args[0] = ast.Name(id=f"__golf_module__{target}", ctx=ast.Load())
                    continue  # getattr(module, name): golf.specialize resolves it against the stages
                raise SpecializeError(f"golf.{m} uses the module golf.{target} as a value ({ast.unparse(parent)})")
        for node in list(walk(tree)):
            for field, value in ast.iter_fields(node):
                if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                    new = []
                    for st in value:
                        if id(st) in drop:
                            kept = [a for a in st.names if a not in drop[id(st)]]
                            for a in drop[id(st)]:
                                t = golf_target(st, a)
                                if t[1] is None and t[0] in self.embedded:
                                    new.append(ast.Assign(targets=[ast.Name(id=a.asname or a.name, ctx=ast.Store())],
                                                          value=_embedded_call(t[0])))
                            if kept:
                                st.names = kept
                                new.append(st)
                        else:
                            new.append(st)
                    if not new and field in ("body", "orelse", "finalbody") and not isinstance(node, ast.Module):
                        new = [ast.Pass()] if field == "body" else []
                    setattr(node, field, new)
        return locate(tree)


def _import_text(st, a) -> str:
    return ast.unparse(type(st)(**{**{f: getattr(st, f) for f in st._fields}, "names": [a]}))


def _same_root_imports(a: str, b: str) -> bool:
    """``import x`` and ``import x.y`` both bind x: not a clash."""
    return a.startswith("import ") and b.startswith("import ") and " as " not in a + b


def _embedded_call(module: str) -> ast.expr:
    return ast.Call(func=ast.Name(id="__golf_embedded__", ctx=ast.Load()), args=[ast.Constant(module)], keywords=[])


def _contains(parent: ast.AST, child: ast.AST) -> bool:
    return any(c is child for c in children(parent))


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    """Put ``new`` where ``old`` is among ``parent``'s children."""
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, v in enumerate(value):
                if v is old:
                    value[i] = new
                    return
    raise AssertionError("child not found")


# --- what the entry point reaches --------------------------------------------------------------

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


EMBEDDED_LOADER = '''
def golf_embedded_module(name):
    import linecache, sys, types
    source = GOLF_EMBEDDED_SOURCES[name]
    module = types.ModuleType("golf." + name)
    path = f"<golf.{name}>"
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    sys.modules[module.__name__] = module
    exec(compile(source, path, "exec"), module.__dict__)
    return module
'''


def _embed(module: ast.Module, sources: dict[str, str]) -> None:
    """A golf module held as a value becomes a real module again, made from its source at the import
    (in linecache, so that Triton's jit finds the source of its kernels)."""
    for node in walk(module):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__golf_embedded__":
            node.func.id = "golf_embedded_module"
    module.body += ast.parse(EMBEDDED_LOADER).body
    module.body.append(ast.Assign([ast.Name("GOLF_EMBEDDED_SOURCES", ast.Store())],
                                  ast.Dict([ast.Constant(k) for k in sources], [ast.Constant(v) for v in sources.values()])))


def minify_embedded(source: str) -> str:
    """An embedded module keeps its names and annotations (Triton reads ``tl.constexpr`` ones, and the
    autotuner passes its block sizes by name): only docstrings and comments go."""
    import python_minifier

    return python_minifier.minify(source, remove_literal_statements=True, rename_globals=False, rename_locals=False,
                                  hoist_literals=False, remove_annotations=False, remove_asserts=False,
                                  remove_debug=False)


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


# --- the whole pass -------------------------------------------------------------------------------

ENTRY = "run_submission"  # golf.cli's: what the exported train_gpt.py calls


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
        _embed(module, {m: minify_embedded(ast.unparse(tree)) for m, tree in embedded.items()})
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
    return ast.unparse(locate(module))


# --- constants -----------------------------------------------------------------------------------

_NO_VALUE = object()


def const(node: ast.AST):
    """The value of a constant expression (a literal, -literal, a tuple of them), else _NO_VALUE."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Tuple) and isinstance(node.ctx, ast.Load):
        values = [const(e) for e in node.elts]
        return _NO_VALUE if any(v is _NO_VALUE for v in values) else tuple(values)
    return _NO_VALUE


def literal(value) -> ast.expr | None:
    """An expression for ``value`` (None where it has no exact literal: inf, nan, objects)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return ast.Constant(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if value < 0 or (isinstance(value, float) and math.copysign(1, value) < 0):
            return ast.UnaryOp(ast.USub(), ast.Constant(-value))
        return ast.Constant(value)
    if isinstance(value, tuple):
        elts = [literal(v) for v in value]
        return None if any(e is None for e in elts) else ast.Tuple(elts, ast.Load())
    return None


def is_const(node) -> bool:
    return const(node) is not _NO_VALUE


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


def _small(value) -> bool:
    """A constant worth writing wherever it is read: a number, a bool, None, a short string or tuple."""
    if isinstance(value, str):
        return len(value) <= 12
    if isinstance(value, tuple):
        return len(value) <= 4 and all(_small(v) for v in value)
    return value is None or isinstance(value, (int, float, bool))


_COMPARE = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
            ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
           ast.Pow: lambda a, b: a ** b}
_PURE_BUILTINS = {"int": int, "float": float, "bool": bool, "min": min, "max": max, "abs": abs, "round": round,
                  "len": len}
_PURE_MATH = {"sqrt", "log2", "log", "exp", "floor", "ceil", "isfinite"}


def _foldable_result(value) -> bool:
    if isinstance(value, str):
        return len(value) <= 200
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(value) < 2**63 and literal(value) is not None
    return isinstance(value, (bool, type(None))) or (isinstance(value, tuple) and literal(value) is not None)


class _Transformer(ast.NodeTransformer):
    """ast.NodeTransformer whose ``visit`` finds each node class's ``visit_<class>`` once (per subclass)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._visits = {}

    def visit(self, node):
        cls = node.__class__
        method = self._visits.get(cls)
        if method is None:
            method = self._visits[cls] = getattr(type(self), "visit_" + cls.__name__, type(self).generic_visit)
        return method(self, node)


class Fold(_Transformer):
    """Folds what constants decide: operators and calls of pure builtins on constants, ``and``/``or``/``not``,
    conditional expressions, ``if``/``while`` on a constant, and code after a return or raise."""

    def __init__(self, shadowed: set[str], idle: set[str] = frozenset(), free: frozenset = frozenset()):
        self.shadowed = shadowed  # names the module defines itself: not the builtins
        self.idle = idle  # functions that do nothing: a call of one (with arguments of no effect) goes
        self.free = free  # effect-free functions (effect_free)
        self.changed = False

    def visit_Expr(self, node):
        self.generic_visit(node)
        call = node.value
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in self.idle
                and all(pure(a) for a in call.args) and all(pure(k.value) for k in call.keywords)):
            self.changed = True
            return None
        if self.free and isinstance(call, (ast.Call, ast.Compare, ast.BoolOp, ast.ListComp)) and _golf_query(call, self.free):
            self.changed = True  # a value thrown away, made by golf's effect-free functions and pure builtins
            return None
        if isinstance(call, (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Subscript, ast.BinOp, ast.Name, ast.Attribute)) \
                and queries(call, self.free):
            self.changed = True  # what is left of a check: its value thrown away
            return None
        return node

    def _done(self, new):
        self.changed = True
        return new

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        v = const(node.operand)
        if v is _NO_VALUE:
            return node
        if isinstance(node.op, ast.Not):
            return self._done(ast.Constant(not v))
        if isinstance(node.op, ast.USub) and isinstance(v, (int, float)) and not isinstance(v, bool) \
                and not isinstance(node.operand, ast.Constant):
            return self._done(literal(-v)) if literal(-v) is not None else node
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        is_and = isinstance(node.op, ast.And)
        values = []
        for i, v in enumerate(node.values):
            c = const(v)
            if c is _NO_VALUE:
                values.append(v)
                continue
            decides = (not c) if is_and else bool(c)
            if decides:
                values.append(v)  # the value of the whole expression when reached: the rest never runs
                break
            if i == len(node.values) - 1:
                values.append(v)
        if len(values) == len(node.values):
            return node
        self.changed = True
        if len(values) == 1:
            return values[0]
        node.values = values
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        operands = [node.left, *node.comparators]
        values = [const(o) if not isinstance(o, (ast.List, ast.Set)) else
                  (tuple(const(e) for e in o.elts) if all(is_const(e) for e in o.elts) else _NO_VALUE)
                  for o in operands]
        if any(v is _NO_VALUE for v in values):
            return node
        try:
            result = all(_COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, values, values[1:]))
        except Exception:  # noqa: BLE001 - left to run (and fail) as written
            return node
        return self._done(ast.Constant(result))

    def visit_BinOp(self, node):
        self.generic_visit(node)
        a, b = const(node.left), const(node.right)
        if a is _NO_VALUE or b is _NO_VALUE or type(node.op) not in _BINARY:
            return node
        if isinstance(a, (str, tuple)) or isinstance(b, (str, tuple)):
            if not isinstance(node.op, ast.Add):
                return node  # "%" formatting, repetition: left as written
        if isinstance(node.op, ast.Pow) and isinstance(b, (int, float)) and abs(b) > 64:
            return node
        try:
            value = _BINARY[type(node.op)](a, b)
        except Exception:  # noqa: BLE001
            return node
        return self._done(literal(value)) if _foldable_result(value) else node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        node.test = self._test(node.test)
        c = const(node.test)
        if c is _NO_VALUE:
            return node
        return self._done(node.body if c else node.orelse)

    def visit_Call(self, node):
        self.generic_visit(node)
        if node.keywords or not all(is_const(a) for a in node.args):
            return node
        fn = None
        if isinstance(node.func, ast.Name) and node.func.id in _PURE_BUILTINS and node.func.id not in self.shadowed:
            fn = _PURE_BUILTINS[node.func.id]
        elif (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "math" and node.func.attr in _PURE_MATH):
            fn = getattr(math, node.func.attr)
        if fn is None:
            return node
        try:
            value = fn(*(const(a) for a in node.args))
        except Exception:  # noqa: BLE001
            return node
        return self._done(literal(value)) if _foldable_result(value) else node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if (isinstance(node.value, ast.Dict) and isinstance(node.ctx, ast.Load) and is_const(node.slice)
                and all(k is not None and is_const(k) for k in node.value.keys)
                and all(pure(v) for v in node.value.values)):
            key = const(node.slice)
            hits = [v for k, v in zip(node.value.keys, node.value.values) if const(k) == key]
            if hits:
                return self._done(hits[-1])
        seq, index = const(node.value), const(node.slice)
        if isinstance(node.ctx, ast.Load) and isinstance(seq, (tuple, str)) and isinstance(index, int) \
                and not isinstance(index, bool):
            try:
                value = seq[index]
            except IndexError:
                return node
            return self._done(literal(value)) if _foldable_result(value) else node
        return node

    def visit_Dict(self, node):
        self.generic_visit(node)
        keep = [(k, v) for k, v in zip(node.keys, node.values)
                if not (k is None and isinstance(v, ast.Dict) and not v.keys)]
        if len(keep) != len(node.keys):
            self.changed = True
            node.keys, node.values = [k for k, _ in keep], [v for _, v in keep]
        return node

    def visit_FormattedValue(self, node):
        node.value = self.visit(node.value)
        if node.format_spec is not None:  # stays a JoinedStr (its parts may fold)
            node.format_spec.values = [self.visit(v) for v in node.format_spec.values]
        return node

    def visit_JoinedStr(self, node):
        self.generic_visit(node)
        merged = []  # constant pieces (a formatted constant too) joined with their neighbours
        for v in node.values:
            if isinstance(v, ast.FormattedValue) and is_const(v.value) and v.format_spec is None and v.conversion == -1 \
                    and isinstance(const(v.value), (str, int)) and not isinstance(const(v.value), bool):
                v = ast.Constant(str(const(v.value)))
            if isinstance(v, ast.Constant) and merged and isinstance(merged[-1], ast.Constant):
                merged[-1] = ast.Constant(merged[-1].value + v.value)
            elif not (isinstance(v, ast.Constant) and v.value == ""):
                merged.append(v)
        if len(merged) != len(node.values) or any(a is not b for a, b in zip(merged, node.values)):
            self.changed = True
            node.values = merged
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(v.value)
            elif isinstance(v, ast.FormattedValue) and is_const(v.value) and (
                    v.format_spec is None or all(isinstance(x, ast.Constant) for x in v.format_spec.values)):
                value = const(v.value)
                value = {-1: value, 115: str(value), 114: repr(value), 97: ascii(value)}[v.conversion]
                spec = "".join(x.value for x in v.format_spec.values) if v.format_spec else ""
                try:
                    parts.append(format(value, spec))
                except Exception:  # noqa: BLE001
                    return node
            else:
                return node
        return self._done(ast.Constant("".join(parts)))

    # statements
    def _block(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for st in body:
            new = self.visit(st)
            if new is None:
                self.changed = True
                continue
            items = new if isinstance(new, list) else [new]
            for item in items:
                if isinstance(item, ast.Expr) and is_const(item.value):
                    self.changed = True
                    continue
                if isinstance(item, ast.Pass) and (out or len(body) > 1):
                    tree_changed()  # (not counted as a change: a pass next to code does nothing)
                    continue
                out.append(item)
            if out and isinstance(out[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                if st is not body[-1]:
                    self.changed = True
                break
        return out

    def generic_visit(self, node):
        for field in _CHILD_FIELDS[node.__class__]:  # (a field of names, strings or numbers: nothing to fold)
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                new = self._block(value)
                if not new and field == "body":
                    new = [ast.Pass()]
                    tree_changed()
                setattr(node, field, new)
            elif isinstance(value, list):
                setattr(node, field, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, field, self.visit(value))
        return node

    def _test(self, test):
        """A test, where only its truth counts: ``x and True`` is ``x``, ``x or False`` is ``x``, and
        ``x and False`` is False where ``x`` has no effect."""
        if isinstance(test, ast.BoolOp) and len(test.values) > 1:
            last = const(test.values[-1])
            if last is not _NO_VALUE and bool(last) != isinstance(test.op, ast.And) and all(
                    pure(v) for v in test.values[:-1]):
                self.changed = True
                return ast.Constant(bool(last))
            if last is not _NO_VALUE and bool(last) == isinstance(test.op, ast.And):
                self.changed = True
                test.values = test.values[:-1]
                return self._test(test.values[0] if len(test.values) == 1 else test)
        return test

    def visit_If(self, node):
        self.generic_visit(node)
        node.test = self._test(node.test)
        c = const(node.test)
        if c is not _NO_VALUE:
            self.changed = True
            return (node.body if c else node.orelse) or None
        empty = lambda b: all(isinstance(s, ast.Pass) for s in b)  # noqa: E731
        if empty(node.body) and empty(node.orelse):
            self.changed = True
            return None if pure(node.test) else ast.Expr(node.test)
        if empty(node.orelse) and node.orelse:
            node.orelse = []
            tree_changed()
        return node

    def _drop_trailing_continue(self, node):
        """``continue`` last in a loop's body (or last in an ``if`` last there) does nothing."""
        body = node.body
        while body and isinstance(body[-1], ast.If) and not body[-1].orelse and body[-1].body \
                and isinstance(body[-1].body[-1], ast.Continue):
            body[-1].body.pop()
            self.changed = True
            if not body[-1].body:
                body[-1].body = [ast.Pass()]
            break
        if body and isinstance(body[-1], ast.Continue):
            body.pop()
            self.changed = True
            if not body:
                body.append(ast.Pass())

    def visit_For(self, node):
        self.generic_visit(node)
        self._drop_trailing_continue(node)
        it = node.iter
        empty = (is_const(it) and const(it) == ()) or (isinstance(it, (ast.List, ast.Tuple)) and not it.elts) or (
            isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
            and "range" not in self.shadowed and it.args and all(is_const(a) for a in it.args)
            and not it.keywords and len(range(*(const(a) for a in it.args))) == 0)
        if empty:
            self.changed = True
            return node.orelse or None
        return node

    def visit_While(self, node):
        self.generic_visit(node)
        self._drop_trailing_continue(node)
        node.test = self._test(node.test)
        c = const(node.test)
        if c is not _NO_VALUE and not c:
            self.changed = True
            return node.orelse or None
        return node


# --- the run's config ------------------------------------------------------------------------------

CONFIG_NAME = "cfg"  # in golf, a name cfg (and an attribute .cfg) is always the run's Config
NOT_FOLDED = ("data_dir", "tokenizer_path")  # made absolute at load time, from where the run starts


def config_values(cfg) -> dict:
    """The config's keys and derived properties, as the specialized code reads them."""
    import dataclasses

    values = {k: v for k, v in cfg.to_dict().items() if k not in NOT_FOLDED}  # the keys, flat
    for section in dataclasses.fields(cfg):
        for name, attr in vars(type(getattr(cfg, section.name))).items():
            if isinstance(attr, property):  # head_dim, kv_dim, mlp_hidden
                values[name] = getattr(cfg, name)
    values.update({key: ast.Name(_path_name(key), ast.Load()) for key in NOT_FOLDED})
    return values


def _path_name(key: str) -> str:
    return f"GOLF_{key.upper()}"


def path_constants(values: dict) -> list[ast.stmt]:
    """The data paths, made absolute as load_config makes them, once, when the file runs."""
    from golf.config import Config

    return [ast.parse(f"{_path_name(k)} = str(resolve({values.get(k, getattr(Config(), k))!r}))").body[0]
            for k in NOT_FOLDED]


def _check_config_names(module: ast.Module, scopes: Scopes) -> None:
    """Every binding of ``cfg`` is a parameter, ``load_config(...)`` or another config expression, and
    every ``x.cfg = ...`` stores one: otherwise reading ``cfg.key`` as a constant would be a guess."""
    if CONFIG_NAME in scopes.root.bound:
        raise SpecializeError("golf binds a module-level name cfg")
    for node in walk(module):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))
                for t, v in pairs:
                    binds_cfg = (isinstance(t, ast.Name) and t.id == CONFIG_NAME) or (
                        isinstance(t, ast.Attribute) and t.attr == CONFIG_NAME)
                    if binds_cfg and not (_is_config(v) or (isinstance(v, ast.Call) and ast.unparse(v.func)
                                                            in ("load_config", "Config", "Config.from_flat"))):
                        raise SpecializeError(f"{ast.unparse(node)}: cfg bound to something else than the config")
                    if binds_cfg is False and any(isinstance(n, ast.Name) and n.id == CONFIG_NAME
                                                  and isinstance(n.ctx, ast.Store) for n in walk(t)):
                        raise SpecializeError(f"{ast.unparse(node)}: cfg unpacked from something unknown")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace" \
                and _is_config(node.func.value):
            raise SpecializeError(f"{ast.unparse(node)}: a config other than the run's")
        elif isinstance(node, (ast.For, ast.comprehension, ast.With, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
            targets = [node.target] if hasattr(node, "target") else [i.optional_vars for i in node.items]
            for t in targets:
                if t is not None and any((isinstance(n, ast.Name) and n.id == CONFIG_NAME)
                                         or (isinstance(n, ast.Attribute) and n.attr == CONFIG_NAME)
                                         for n in walk(t)):
                    raise SpecializeError(f"{ast.unparse(node)[:80]}: cfg bound by a loop, with or augmented assignment")


def _is_config(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == CONFIG_NAME) or (
        isinstance(node, ast.Attribute) and node.attr == CONFIG_NAME and isinstance(node.ctx, ast.Load))


class FoldConfig(_Transformer):
    """``cfg.key``, ``self.cfg.key`` and ``getattr(cfg, "key")`` become the run's value."""

    def __init__(self, values: dict):
        self.values = values
        self.changed = False

    @staticmethod
    def reads(nodes) -> bool:
        """Whether any of ``nodes`` may read the config (else a visit changes nothing)."""
        for n in nodes:
            if n.__class__ is ast.Attribute and _is_config(n.value):
                return True
            if (n.__class__ is ast.Call and isinstance(n.func, ast.Name) and n.func.id == "getattr" and n.args
                    and _is_config(n.args[0])):
                return True
        return False

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load) and _is_config(node.value) and node.attr in self.values:
            value = self.values[node.attr]
            new = copy_tree(value) if isinstance(value, ast.AST) else literal(value)
            if new is not None:
                self.changed = True
                return new
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if (isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2
                and _is_config(node.args[0]) and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in self.values and not isinstance(self.values[node.args[1].value], ast.AST)):
            new = literal(self.values[node.args[1].value])
            if new is not None:
                self.changed = True
                return new
        return node


# --- names bound once to a constant -------------------------------------------------------------------

def propagate_constants(module: ast.Module) -> bool:
    """A name bound exactly once, by ``name = <constant>``, in a function (or the module), is read as
    that constant everywhere it is read (a long string only where it is read once); the binding goes."""
    scopes = scopes_of(module)
    loads = scopes.loads()
    parents = parents_of(module)
    changed = False
    for scope in _all_scopes(scopes.root):
        if scope.kind not in ("function", "module"):
            continue
        for name, sites in scope.bound.items():
            if len(sites) != 1 or not isinstance(sites[0], ast.Name):
                continue
            assign = parents.get(id(sites[0]))
            if not (isinstance(assign, (ast.Assign, ast.AnnAssign)) and (
                    assign.targets == [sites[0]] if isinstance(assign, ast.Assign) else assign.target is sites[0])):
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
            holder = parents[id(assign)]
            for field, body in ast.iter_fields(holder):
                if isinstance(body, list) and assign in body:
                    body.remove(assign)
                    if not body and field == "body":
                        body.append(ast.Pass())
            changed = True
    return changed


def _all_scopes(scope: Scope):
    yield scope
    for child in scope.children:
        yield from _all_scopes(child)


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


# --- what only a failed run reaches ----------------------------------------------------------------

# Functions whose except clauses hand the exception on, to be raised where a run goes on (the prefetch
# thread's to the training loop, rank 0's run-folder error to every rank): they end a run as failed too.
FORWARDING_HANDLERS = {"_work", "_shared_run_dir"}
# The run's checks before any work (golf.commands._preflight): their GolfErrors stay in the submission.
PREFLIGHT = ("_preflight", "validate_for_world", "check_data_binding", "check_val_length", "check_model_fits",
             "check_backend_available")
NOT_FAILURES = {"StopIteration", "StopAsyncIteration", "GeneratorExit", "KeyboardInterrupt", "SystemExit"}


class _Exceptions:
    """Which handler catches which raise, from golf's exception classes and Python's."""

    def __init__(self, module: ast.Module):
        import builtins

        self.builtins = builtins
        self.bases: dict[str, list[str]] = {}
        for st in module.body:
            if isinstance(st, ast.ClassDef):
                self.bases[st.name] = [b.id for b in st.bases if isinstance(b, ast.Name)]

    def _builtin(self, name: str):
        cls = getattr(self.builtins, name, None)
        return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None

    def ancestry(self, name: str) -> tuple[set[str], list[type]]:
        """golf's classes a class is (itself included), and the Python exceptions it derives from."""
        own, py, todo = set(), [], [name]
        while todo:
            n = todo.pop()
            if n in self.bases:
                own.add(n)
                todo += self.bases[n]
            elif self._builtin(n) is not None:
                py.append(self._builtin(n))
        return own, py

    def catches(self, handler_type: ast.expr | None, raised: str | None) -> bool:
        """Whether ``except handler_type`` may catch a raise of class ``raised`` (None: unknown)."""
        if handler_type is None:
            return True
        if isinstance(handler_type, ast.Tuple):
            return any(self.catches(e, raised) for e in handler_type.elts)
        if isinstance(handler_type, ast.Name):
            if raised is None:
                return True
            own, py = self.ancestry(raised)
            if handler_type.id in own:
                return True
            cls = self._builtin(handler_type.id)
            return cls is not None and any(issubclass(p, cls) for p in py)
        if isinstance(handler_type, ast.Attribute):
            return raised is None  # a library's exception class: none of golf's or Python's raises is one
        return True  # computed (compile_errors()): anything


def _raised_class(node: ast.Raise) -> str | None:
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    return exc.id if isinstance(exc, ast.Name) else None


def _swallows(handler: ast.ExceptHandler, entry: bool) -> bool:
    """Whether a run may go on after the handler (it does not end in a raise; the entry's print-and-exit
    handlers end a run as failed)."""
    return not entry and not (handler.body and isinstance(handler.body[-1], ast.Raise))


def _called_names(node: ast.AST) -> set[str]:
    """What ``node`` calls: ``f:name`` for a call of a name (a function, a class), ``m:name`` for a method."""
    out = set()
    for n in walk(node):
        if isinstance(n, ast.Call):
            if isinstance(n.func, ast.Name):
                out.add("f:" + n.func.id)
            elif isinstance(n.func, ast.Attribute):
                out.add("m:" + n.func.attr)
    return out


def _callables(scopes: Scopes) -> dict[str, list[ast.AST]]:
    """``f:name``: the functions (top-level or inside one) and the ``__init__`` of the classes of that name;
    ``m:name``: the methods of that name (a function whose scope is a class's). In no order to rely on."""
    out: dict[str, list[ast.AST]] = {}
    for scope in _all_scopes(scopes.root):
        node = scope.node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.setdefault(("m:" if scope.parent.kind == "class" else "f:") + node.name, []).append(node)
        elif isinstance(node, ast.ClassDef):
            out.setdefault("f:" + node.name, []).extend(
                m for m in node.body if isinstance(m, ast.FunctionDef) and m.name in ("__init__", "__post_init__"))
    return out


def drop_failure_paths(module: ast.Module, entry: str = ENTRY, free: frozenset = frozenset()) -> bool:
    """A raise that nothing catches (but the entry's print-and-exit) ends the run as failed, so a run that
    succeeds never executes it: it goes, and so does a branch that always ends in one (the ``if``'s test
    stays where it has effects), and an ``except`` clause that always ends in one."""
    excs = _Exceptions(module)
    scopes = scopes_of(module)
    parents = parents_of(module)
    functions = _callables(scopes)
    called: dict[int, set[str]] = {}

    def calls(fn) -> set[str]:
        if id(fn) not in called:
            called[id(fn)] = _called_names(fn)
        return called[id(fn)]

    # the handlers around each function a try body calls (by name, transitively): raises there may be caught
    protectors: dict[str, list[ast.expr | None]] = {}
    entry_nodes = set(map(id, functions.get("f:" + entry, [])))
    checks, todo = set(), ["f:" + name for name in PREFLIGHT]  # PREFLIGHT and what it calls
    while todo:
        name = todo.pop()
        if name not in checks:
            checks.add(name)
            for fn in functions.get(name, ()):
                todo += calls(fn)

    for node in scopes.all(ast.Try):  # (in what order: no matter, the lists are only searched)
        path = []
        p = parents.get(id(node))
        while p is not None:
            path.append(p)
            p = parents.get(id(p))
        inside_entry = any(id(p) in entry_nodes for p in path)
        fn = next((p for p in path if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        forwarding = fn is not None and fn.name in FORWARDING_HANDLERS
        types = [h.type for h in node.handlers if _swallows(h, inside_entry) and not forwarding]
        if types:
            todo, seen = list(_called_names(ast.Module(body=node.body, type_ignores=[]))), set()
            while todo:
                name = todo.pop()
                if name in seen:
                    continue
                seen.add(name)
                protectors.setdefault(name, []).extend(types)
                for fn in functions.get(name, ()):
                    todo += calls(fn)
    changed = False
    import builtins
    undefined = {id(n) for n, _, owner in scopes.resolved() if isinstance(n.ctx, ast.Load) and owner is scopes.root
                 and n.id not in scopes.root.bound and not hasattr(builtins, n.id)
                 and n.id not in ("__file__", "__name__")}

    def is_protected(fn_names) -> bool:  # an exception of any statement here may be caught by a caller
        return any(name in protectors for name in fn_names)

    def fatal(raise_node, tries, fn_names) -> bool:
        raised = _raised_class(raise_node)
        if raised in NOT_FAILURES:
            return False
        if raised is not None and "GolfError" in excs.ancestry(raised)[0] and checks.intersection(fn_names):
            return False  # the checks before any work: a user's mistake is one line, never a traceback
        if raise_node.exc is not None and raised is None and isinstance(raise_node.exc, ast.Call):
            return False  # raise <expression>(...): unknown
        for types in tries:
            if any(excs.catches(t, raised) for t in types):
                return False
        for name in fn_names:
            if any(excs.catches(t, raised) for t in protectors.get(name, ())):
                return False
        return True

    def block(body, tries, fn_names, guarded, in_while=False) -> tuple[list[ast.stmt], bool]:
        """The block rewritten, and whether it always ends in a failure."""
        nonlocal changed
        out = []
        escapes = False  # a statement so far may leave the block (return, break, continue, yield)
        for st in body:
            fails = False
            if undefined and _reads_undefined(st, undefined):  # a NameError: as a raise of one
                st = ast.Raise(ast.Name("NameError", ast.Load()), None)
                tree_changed()  # (counted as a change only where the raise goes)
            if isinstance(st, ast.Raise):
                if fatal(st, tries, fn_names) and in_while:  # kept, short: a loop waiting on it would spin
                    cls = _raised_class(st)
                    short = ast.Raise(ast.Name(cls, ast.Load()), None) if cls and isinstance(st.exc, ast.Call) else st
                    changed |= short is not st
                    out.append(short)
                    return out, False
                if fatal(st, tries, fn_names):
                    changed = True
                    return out, not escapes and (not guarded or not out)
                out.append(st)
                return out, False
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = (*fn_names, "f:" + st.name)
                st.body, _ = block(st.body, [], names, is_protected(names))
                st.body = st.body or [ast.Pass()]
                out.append(st)
                continue
            if isinstance(st, ast.ClassDef):
                for m in st.body:
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names = (*fn_names, "m:" + m.name) + (
                            ("f:" + st.name,) if m.name in ("__init__", "__post_init__") else ())
                        m.body, _ = block(m.body, [], names, is_protected(names))
                        m.body = m.body or [ast.Pass()]
                out.append(st)
                continue
            if isinstance(st, ast.If):
                st.body, body_fails = block(st.body, tries, fn_names, guarded, in_while)
                st.orelse, else_fails = block(st.orelse, tries, fn_names, guarded, in_while) if st.orelse else ([], False)
                if body_fails and else_fails:
                    fails = True
                elif body_fails or else_fails:
                    changed = True
                    kept = st.orelse if body_fails else st.body
                    if not queries(st.test, free):
                        out.append(ast.Expr(st.test))
                    out += kept
                    escapes = escapes or _may_escape(kept)
                    continue
                if not st.body:
                    st.body = [ast.Pass()]
            elif isinstance(st, ast.Try):
                swallowing = [h.type for h in st.handlers if _swallows(h, fn_names[:1] == ("f:" + entry,))
                              and not (fn_names and fn_names[-1][2:] in FORWARDING_HANDLERS)]
                inner_guard = guarded or bool(swallowing)
                st.body, body_fails = block(st.body, [*tries, swallowing], fn_names, inner_guard, in_while)
                handlers = []
                for h in st.handlers:
                    h.body, h_fails = block(h.body, tries, fn_names, guarded, in_while)
                    if h_fails:  # the entry's handlers stay: a user's mistake is one line, never a traceback
                        changed = True
                        continue
                    handlers.append(h)
                    h.body = h.body or [ast.Pass()]
                st.handlers = handlers
                st.orelse, _ = block(st.orelse, tries, fn_names, guarded, in_while) if st.orelse else ([], False)
                st.finalbody, _ = block(st.finalbody, tries, fn_names, guarded, in_while) if st.finalbody else ([], False)
                st.body = st.body or [ast.Pass()]
                if not handlers and not st.finalbody:
                    changed = True
                    out += st.body + st.orelse
                    escapes = escapes or _may_escape(st.body + st.orelse)
                    continue
                if not handlers and st.orelse:
                    st.body += st.orelse
                    st.orelse = []
                    tree_changed()
            else:
                for field in ("body", "orelse"):
                    sub = getattr(st, field, None)
                    if isinstance(sub, list) and sub:
                        new, _ = block(sub, tries, fn_names, True, in_while or isinstance(st, ast.While))  # a loop's failing body: left as is
                        setattr(st, field, new or ([ast.Pass()] if field == "body" else []))
            before = out[:]
            out.append(st)
            escapes = escapes or _may_escape([st])
            if fails:
                return out, not escapes and (not guarded or (not before and queries(st.test, free)))
        return out, False

    module.body, _ = block(module.body, [], (), False)
    return changed


def _reads_undefined(st: ast.stmt, undefined: set[str]) -> bool:
    """Whether running ``st`` certainly reads one of ``undefined`` (a name bound nowhere: golf imports it
    from a module the submission leaves out) before anything else can happen."""
    if isinstance(st, (ast.Expr, ast.Return)) and st.value is not None:
        first = [st.value]
    elif isinstance(st, (ast.Assign, ast.AugAssign)):
        first = [st.value]
    elif isinstance(st, ast.If):
        first = [st.test]
    else:
        return False
    todo = first
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and id(n) in undefined:
            return True
        if isinstance(n, (ast.Lambda, *COMPREHENSIONS)):
            continue
        if isinstance(n, ast.IfExp):
            todo.append(n.test)
        elif isinstance(n, ast.BoolOp):
            todo.append(n.values[0])
        else:
            todo += children(n)
    return False


def _may_escape(body: list[ast.stmt]) -> bool:
    """Whether running ``body`` may leave its block early other than by an exception."""
    for st in body:
        for n in walk(st):
            if isinstance(n, (ast.Return, ast.Break, ast.Continue, ast.Yield, ast.YieldFrom, ast.Await)):
                return True
    return False


# --- parameters every call passes alike ----------------------------------------------------------

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

    def calls_of(uses) -> list[ast.Call] | None:
        calls = []
        for use in uses:
            call = parents.get(id(use))
            if not (isinstance(call, ast.Call) and call.func is use):
                return None
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
                if st.name in bases or st.decorator_list or len(scopes.root.bound.get(st.name, ())) != 1:
                    continue
                calls = calls_of([n for n in scopes.module_refs(st.name) if isinstance(n.ctx, ast.Load)])
            elif (m.name.startswith("__") or m.name in FRAMEWORK_METHODS or m.name in strings):
                continue
            else:
                calls = calls_of(attr_uses.get(m.name, []))
            if calls:
                out.append((m, calls, 1))
    return out


def specialize_parameters(module: ast.Module) -> bool:
    """A parameter that every call passes the same constant (or leaves at its default) becomes that
    constant; one the function never reads goes, from the calls too (where what they pass has no effect)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    loads = scopes.loads()
    changed = False
    for fn, calls, skip in _targets(module, scopes, parents):
        params = _plain_params(fn)
        if params is None:
            continue
        inner = scopes.scope_of_node[id(fn)]
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


# --- attributes every store sets alike ------------------------------------------------------------

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
    for scope in _all_scopes(scopes.root):
        if scope.kind != "function":
            continue
        for name, sites in scope.bound.items():
            if len(sites) != 1 or not isinstance(sites[0], ast.Name):
                continue
            assign, site = parents.get(id(sites[0])), sites[0]
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


# --- what a submission's run does not need (judgement, each with its reason) -----------------------

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
    for node in list(walk(module)):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            new = [st for st in body if not (
                isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Attribute)
                and st.value.func.attr == "info" and isinstance(st.value.func.value, ast.Name)
                and st.value.func.value.id == "log" and st.value.args and isinstance(st.value.args[0], ast.Constant)
                and not str(st.value.args[0].value).startswith(LOG_KEPT))]
            if len(new) != len(body):
                setattr(node, field, new or ([ast.Pass()] if field == "body" else []))


def _drop_statement(fn: ast.FunctionDef, text: str) -> bool:
    """Drop each innermost statement of ``fn`` whose source holds ``text``."""
    def holds(st):
        return text in ast.unparse(st)

    def innermost(st):
        return holds(st) and not any(isinstance(n, ast.stmt) and n is not st and holds(n) for n in walk(st))

    dropped = False
    for node in list(walk(fn)):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            new = [st for st in body if not innermost(st)]
            if len(new) != len(body):
                dropped = True
                setattr(node, field, new or ([ast.Pass()] if field == "body" else []))
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
            for field in ("body", "orelse", "finalbody"):
                body = getattr(node, field, None)
                if not isinstance(body, list):
                    continue
                new = []
                for st in body:
                    if of_bar(st):
                        removed |= {id(n) for n in walk(st)}
                        continue
                    if isinstance(st, ast.With):
                        items = [i for i in st.items if not (_makes_bar(i.context_expr) and isinstance(
                            i.optional_vars, ast.Name) and i.optional_vars.id in bars)]
                        if len(items) != len(st.items):
                            removed |= {id(n) for i in st.items if i not in items for n in walk(i)}
                            if not items:
                                new += st.body
                                continue
                            st.items = items
                    new.append(st)
                setattr(node, field, new or ([ast.Pass()] if field == "body" else []))
        left = [n for n in uses if id(n) not in removed]
        if left:
            raise SpecializeError(f"{fn.name}: a progress bar is used otherwise: {[ast.unparse(n) for n in left]}")
    for node in walk(module):  # tqdm.write(text, file=stream) -> print(text, file=stream)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "tqdm"):
            node.func = ast.Name("print", ast.Load())


def _makes_bar(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BAR_MAKERS


# --- constants along a function's straight line --------------------------------------------------------

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


_BLOCK_ITEMS = (ast.stmt, ast.excepthandler, ast.match_case)


def _blocks(node: ast.AST):
    """The statements under ``node`` (itself first; and except clauses and match cases), in ``walk``'s order:
    every node that may hold a block. What a statement holds is read when the walk goes on after it."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        for field in _CHILD_FIELDS[n.__class__]:
            value = getattr(n, field, None)
            if isinstance(value, list):
                todo += [v for v in value if isinstance(v, _BLOCK_ITEMS)]


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


# --- stores nothing reads -------------------------------------------------------------------------------

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

            for node in _blocks(method):
                for field in ("body", "orelse", "finalbody"):
                    body = getattr(node, field, None)
                    if not isinstance(body, list):
                        continue
                    new = []
                    for st in body:
                        if isinstance(st, ast.Assign) and len(st.targets) == 1:
                            t = st.targets[0]
                            if dead(t):
                                changed = True
                                if not queries(st.value, free):
                                    new.append(ast.Expr(st.value))
                                continue
                            if isinstance(t, ast.Tuple) and isinstance(st.value, ast.Tuple) \
                                    and len(t.elts) == len(st.value.elts) and not any(isinstance(e, ast.Starred)
                                                                                       for e in t.elts):
                                keep = [(a, b) for a, b in zip(t.elts, st.value.elts)
                                        if not (dead(a) and queries(b, free))]
                                if len(keep) != len(t.elts):
                                    changed = True
                                    if not keep:
                                        continue
                                    if len(keep) == 1:
                                        st = ast.Assign([keep[0][0]], keep[0][1])
                                    else:
                                        t.elts, st.value.elts = [a for a, _ in keep], [b for _, b in keep]
                        new.append(st)
                    if len(new) != len(body) or any(a is not b for a, b in zip(new, body)):
                        setattr(node, field, new or ([ast.Pass()] if field == "body" else []))
    return changed


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
                for field in ("body", "orelse", "finalbody"):
                    body = getattr(inner, field, None)
                    if isinstance(body, list):
                        new = []
                        for st in body:
                            if isinstance(st, ast.AnnAssign):
                                if st.value is None:
                                    continue
                                st = ast.Assign([st.target], st.value)
                            new.append(st)
                        setattr(inner, field, new or ([ast.Pass()] if field == "body" else []))


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
    for scope in _all_scopes(scopes.root):
        if scope.kind != "function":
            continue
        for name, sites in scope.bound.items():
            if len(sites) != 1 or not isinstance(sites[0], ast.Name):
                continue
            assign = parents.get(id(sites[0]))
            if id(assign) in touched:
                continue
            if not (isinstance(assign, ast.Assign) and assign.targets == [sites[0]]
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


def namespace_parameters(module: ast.Module) -> bool:
    """A parameter every call passes the same ``argparse.Namespace(key=<constant>, ...)`` and that the
    function only reads attributes of: each ``p.key`` is the constant (golf.cli.run_submission's args)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for fn, calls, skip in _targets(module, scopes, parents):
        params = _plain_params(fn)
        if params is None:
            continue
        inner = scopes.scope_of_node[id(fn)]
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


def drop_write_only(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """A local list, dict or set that the function only fills (append, update, x[k] = v...) and never reads:
    it goes, and so does each statement that fills it (what they pass has no effect)."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    by_owner: dict[int, dict[str, list[ast.Name]]] = {}
    for name, _, owner in scopes.resolved():
        by_owner.setdefault(id(owner), {}).setdefault(name.id, []).append(name)
    for scope in _all_scopes(scopes.root):
        if scope.kind != "function":
            continue
        uses = by_owner.get(id(scope), {})
        for var, sites in scope.bound.items():
            if len(sites) != 1 or not isinstance(sites[0], ast.Name):
                continue
            assign = parents.get(id(sites[0]))
            if not (isinstance(assign, ast.Assign) and assign.targets == [sites[0]] and (
                    (isinstance(assign.value, (ast.List, ast.Dict, ast.Set)) and pure(assign.value))
                    or (isinstance(assign.value, ast.Call) and isinstance(assign.value.func, ast.Name)
                        and assign.value.func.id in ("list", "dict", "set") and not assign.value.args))):
                continue
            fills = []
            for use in uses.get(var, []):
                if use is sites[0]:
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
                    holder = parents.get(id(st))
                    for field, body in ast.iter_fields(holder):
                        if isinstance(body, list) and st in body:
                            body.remove(st)
                            if not body and field == "body":
                                body.append(ast.Pass())
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


def drop_idle_method_calls(module: ast.Module, free: frozenset = frozenset()) -> bool:
    """``v.m(...)`` as a statement, where ``v`` is a local bound once to ``C(...)`` (a class of golf's) and
    ``C.m`` does nothing: the call goes (what it passes has no effect)."""
    classes = {st.name: st for st in module.body if isinstance(st, ast.ClassDef)}
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for scope in _all_scopes(scopes.root):
        if scope.kind != "function":
            continue
        for var, sites in scope.bound.items():
            if len(sites) != 1 or not isinstance(sites[0], ast.Name):
                continue
            assign = parents.get(id(sites[0]))
            if not (isinstance(assign, ast.Assign) and assign.targets == [sites[0]] and isinstance(assign.value, ast.Call)
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


def narrow_parameters(module: ast.Module) -> bool:
    """A parameter every call passes a constant or a loop variable over a tuple of constants has a known set
    of values; down each branch of an if on it (``p == c``, ``p in (...)``) the set narrows: a test it
    decides is that constant, and where one value is left, ``p`` is that value."""
    scopes = scopes_of(module)
    parents = parents_of(module)
    changed = False
    for fn, calls, skip in _targets(module, scopes, parents):
        params = _plain_params(fn)
        if params is None:
            continue
        inner = scopes.scope_of_node[id(fn)]
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
