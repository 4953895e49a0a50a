"""golf's code as one module specialized to one run, for a submission's ``train_gpt.py`` (issue 32).

The exported file knows every config value and the evaluation stages, so the code it carries is
partially evaluated: golf's modules become one namespace (their imports of each other vanish), the
config's reads become constants, what those constants decide is folded away, and what only a failed
run reaches (a raise nothing catches, and the branch that leads to it) goes. Each pass keeps the
behaviour of a run that succeeds; what no kept code names is dropped. golf.submission minifies the result.
"""
from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
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
    """Every scope of a module and, for every Name, the scope it is read or bound in."""

    def __init__(self, tree: ast.Module):
        self.root = Scope(tree, None, "module")
        self.of: dict[int, Scope] = {}  # id(node) -> the scope the node appears in
        self.names: list[tuple[ast.Name, Scope]] = []
        self.scope_of_node: dict[int, Scope] = {id(tree): self.root}
        self._visit_body(tree.body, self.root)

    def _function_scope(self, scope: Scope) -> Scope:
        while scope.kind == "comp":
            scope = scope.parent
        return scope

    def _visit_body(self, body, scope):
        for st in body:
            self._visit(st, scope)

    def _visit(self, node, scope):
        self.of[id(node)] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
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
            return
        if isinstance(node, ast.Lambda):
            self._arguments_outside(node.args, scope)
            inner = Scope(node, scope, "function")
            scope.children.append(inner)
            self.scope_of_node[id(node)] = inner
            self._arguments_inside(node.args, inner)
            self._visit(node.body, inner)
            return
        if isinstance(node, ast.ClassDef):
            scope.bind(node.name, node)
            for d in (*node.decorator_list, *node.bases, *node.keywords):
                self._visit(d, scope)
            inner = Scope(node, scope, "class")
            scope.children.append(inner)
            self.scope_of_node[id(node)] = inner
            self._visit_body(node.body, inner)
            return
        if isinstance(node, COMPREHENSIONS):
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
            return
        if isinstance(node, ast.Name):
            self.names.append((node, scope))
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                scope.bind(node.id, node)
            return
        if isinstance(node, ast.NamedExpr):
            target_scope = self._function_scope(scope)
            self.of[id(node.target)] = target_scope
            self.names.append((node.target, target_scope))
            target_scope.bind(node.target.id, node.target)
            self._visit(node.value, scope)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name != "*":
                    scope.bind(a.asname or a.name.split(".")[0], node)
            return
        if isinstance(node, ast.ExceptHandler) and node.name:
            scope.bind(node.name, node)
        if isinstance(node, ast.Global):
            scope.globals.update(node.names)
        if isinstance(node, ast.Nonlocal):
            scope.nonlocals.update(node.names)
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

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

    def module_refs(self, name: str) -> list[ast.Name]:
        """The Name nodes that read or bind the module-level ``name``."""
        return [n for n, s in self.names if n.id == name and s.owner(name) is self.root]


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
        return (alias.name, None) if (PACKAGE_DIR / f"{alias.name}.py").is_file() else ("__init__", alias.name)
    if node.module and node.module.startswith("golf."):
        return node.module[5:], alias.name
    return None


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
        out += [n.id for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    if isinstance(st, (ast.If, ast.Try, ast.With, ast.For, ast.While)):  # e.g. try: import x except: x = None
        out += [n.id for n in ast.walk(st) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
        for node in ast.walk(st):
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
        self.skip = set(skip)
        self.trees: dict[str, ast.Module] = {}
        for path in sorted(PACKAGE_DIR.glob("*.py")):
            m = path.stem
            if m in self.skip or m == "__main__":
                continue
            tree = ast.parse(path.read_text())
            tree.body = [st for st in tree.body if not _is_main_guard(st) and not _is_docstring(st)]
            self.trees[m] = tree
        self.embedded: set[str] = set()
        for m, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "golf":
                    for a in node.names:
                        t = golf_target(node, a)
                        if t[1] is None and t[0] not in self.skip:
                            self.embedded.add(t[0])  # `from golf import x as m`: held as a value (golf.model)

    def _plan_renames(self) -> None:
        """A top-level name two modules bind differently keeps its first binding's name; the later module's
        becomes ``name_module`` (both its definition and every read of it)."""
        self.renamed: dict[tuple[str, str], str] = {}
        first: dict[str, tuple[str, str]] = {}  # name -> (module, text)
        for m in self.order():
            for st in self.trees[m].body:
                if isinstance(st, (ast.Import, ast.ImportFrom)):
                    items = [(a.asname or a.name.split(".")[0], _import_text(st, a)) for a in st.names
                             if golf_target(st, a) is None and getattr(st, "module", None) != "__future__"]
                else:
                    items = [(n, ast.dump(st)) for n in top_level_names(st)]
                for name, text in items:
                    if name not in first:
                        first[name] = (m, text)
                    elif first[name][0] != m and first[name][1] != text and not _same_root_imports(first[name][1], text):
                        self.renamed[(m, name)] = f"{name}_{m}"

    def defined(self, m: str) -> set[str]:
        """The names module ``m`` defines itself (not by importing them)."""
        return {n for st in self.trees[m].body if not isinstance(st, (ast.Import, ast.ImportFrom))
                for n in top_level_names(st)}

    def resolve(self, m: str, name: str, seen=()) -> str:
        """The flat name of module ``m``'s ``name`` (following golf's re-exports)."""
        if (m, name) in seen:
            raise SpecializeError(f"import cycle at golf.{m}.{name}")
        for st in self.trees[m].body:
            if isinstance(st, ast.ImportFrom):
                for a in st.names:
                    if (a.asname or a.name) == name:
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
        owner: dict[str, tuple[str, str]] = {}  # flat name -> (module, its source)
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
                text = ast.dump(st)
                clash = [n for n in names if n in owner or n in seen_imports]
                if clash:
                    if len(names) == 1 and owner.get(names[0], (None, None))[1] == text:
                        continue  # the same definition in two modules (log = logging.getLogger("golf"))
                    if all(owner.get(n, (m,))[0] == m for n in clash):
                        pass  # rebinding within one module (try/except fallbacks, registered `_`s)
                    else:
                        raise SpecializeError(f"golf.{m} defines {clash} as another module does: rename one")
                for n in names:
                    owner.setdefault(n, (m, text))
                body.append(st)
        for n in seen_imports:
            if n in owner:
                raise SpecializeError(f"{n!r} is both imported and defined in golf")
        module = ast.Module(body=[*future, *imports, *body], type_ignores=[])
        embedded = {m: self._rewrite(m) for m in self.embedded}
        return ast.fix_missing_locations(module), embedded

    def _rewrite(self, m: str) -> ast.Module:
        """Module ``m`` with its golf imports gone: names read through them renamed to their flat names."""
        tree = copy.deepcopy(self.trees[m])
        scopes = Scopes(tree)
        renames: dict[tuple[int, str], str] = {}  # (id(scope), local name) -> flat name
        module_aliases: dict[tuple[int, str], str] = {}  # (id(scope), local name) -> golf module
        drop: dict[int, list[ast.alias]] = {}
        for node in ast.walk(tree):
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
                    for node in ast.walk(st) if isinstance(st, (ast.Import, ast.ImportFrom, ast.Try, ast.If)) else ():
                        if isinstance(node, (ast.Import, ast.ImportFrom)) and scopes.of[id(node)] is scopes.root:
                            for a in node.names:
                                if (a.asname or a.name.split(".")[0]) == name:
                                    if isinstance(node, ast.Import) and "." in a.name:
                                        raise SpecializeError(f"golf.{m}: cannot rename {a.name}")
                                    a.asname = new
        parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for name, scope in scopes.names:
            key = (id(scope.owner(name.id)), name.id)
            if key in renames:
                name.id = renames[key]
            elif key in module_aliases:
                parent = parents[id(name)]
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
        for node in list(ast.walk(tree)):
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
        return ast.fix_missing_locations(tree)


def _import_text(st, a) -> str:
    return ast.unparse(type(st)(**{**{f: getattr(st, f) for f in st._fields}, "names": [a]}))


def _same_root_imports(a: str, b: str) -> bool:
    """``import x`` and ``import x.y`` both bind x: not a clash."""
    return a.startswith("import ") and b.startswith("import ") and " as " not in a + b


def _embedded_call(module: str) -> ast.expr:
    return ast.Call(func=ast.Name(id="__golf_embedded__", ctx=ast.Load()), args=[ast.Constant(module)], keywords=[])


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


def prune(module: ast.Module, entry: str) -> None:
    """Keep the top-level statements the entry function reaches by name (and those binding nothing, such
    as a setting of torch's), and of each kept class the methods some kept code could call."""
    while True:
        scopes = Scopes(module)
        binds: dict[str, list[int]] = {}
        for i, st in enumerate(module.body):
            for n in _binds(st):
                binds.setdefault(n, []).append(i)
        refs: dict[int, set[str]] = {i: set() for i in range(len(module.body))}
        top = {id(st): i for i, st in enumerate(module.body)}
        stmt_of: dict[int, int] = {}
        for i, st in enumerate(module.body):
            for node in ast.walk(st):
                stmt_of[id(node)] = i
        for name, scope in scopes.names:
            if scope.owner(name.id) is scopes.root:
                refs[stmt_of[id(name)]].add(name.id)
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
        module.body = [st for i, st in enumerate(module.body) if i in kept]
        for st in module.body:
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                used = set().union(*(refs[top[id(s)]] for s in module.body))
                st.names = [a for a in st.names if (a.asname or a.name.split(".")[0]) in used] or st.names
        module.body = [st for st in module.body if not isinstance(st, (ast.Import, ast.ImportFrom))
                       or any((a.asname or a.name.split(".")[0]) in _all_refs(module, scopes) for a in st.names)
                       or getattr(st, "module", None) == "__future__"]
        dropped = _prune_methods(module)
        if len(module.body) == before and not dropped:
            return


def _binds(st: ast.stmt) -> list[str]:
    if isinstance(st, ast.ImportFrom) and st.module == "__future__":
        return []
    return top_level_names(st)


def _all_refs(module: ast.Module, scopes: Scopes) -> set[str]:
    return {n.id for n, s in scopes.names if isinstance(n.ctx, ast.Load) and s.owner(n.id) is scopes.root}


def _prune_methods(module: ast.Module) -> int:
    """Drop the methods of kept classes that no kept code names (as an attribute or a string)."""
    used = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used.add(node.value)
        elif isinstance(node, ast.keyword) and node.arg:
            used.add(node.arg)
    dropped = 0
    for node in ast.walk(module):
        if isinstance(node, ast.ClassDef):
            body = []
            for st in node.body:
                if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)) and not (
                        st.name in used or st.name in FRAMEWORK_METHODS
                        or (st.name.startswith("__") and st.name.endswith("__"))):
                    dropped += 1
                    continue
                body.append(st)
            node.body = body or [ast.Pass()]
    return dropped


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
    for node in ast.walk(module):
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
    """``getattr(golf.evaluate, EVAL_FUNCS[mode])`` (golf.pipeline): the module's ``eval_<stage>``
    functions of the stages this run scores, in a dict looked up by the same name."""
    for node in ast.walk(module):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and isinstance(node.args[0], ast.Name) and node.args[0].id.startswith("__golf_module__")):
            m = node.args[0].id.removeprefix("__golf_module__")
            names = [f"eval_{mode}" for mode in modes if f"eval_{mode}" in flattener.defined(m)]
            table = ast.Dict(keys=[ast.Constant(n) for n in names],
                             values=[ast.Name(flattener.resolve(m, n), ast.Load()) for n in names])
            node.func, node.args = ast.Attribute(table, "__getitem__", ast.Load()), [node.args[1]]


def _wait_for_training(module: ast.Module) -> None:
    """golf.cli.run_submission goes from train() to quantize_run() with no barrier between, so a rank may
    look for model.pt before rank 0 has written it (golf's lazy imports of golf.quant hid the race; in
    one module there are none): every rank waits for the others after training."""
    entry = next(st for st in module.body if isinstance(st, ast.FunctionDef) and st.name == ENTRY)
    for node in ast.walk(entry):
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
    differ from golf's defaults) and scores ``modes``: ``run_submission(values, modes, <this file's size>)``."""
    flattener = Flattener(skip)
    module, embedded = flattener.flat()
    _stage_lookups(module, flattener, modes)
    if embedded:
        _embed(module, {m: minify_embedded(ast.unparse(tree)) for m, tree in embedded.items()})
    _wait_for_training(module)
    prune(module, ENTRY)
    call = ast.parse(f"import os as _os, sys as _sys\n"
                     f"_sys.exit({ENTRY}({values!r}, {tuple(modes)!r}, _os.path.getsize(__file__)))").body
    module.body += call
    return ast.unparse(ast.fix_missing_locations(module))
