"""golf's modules as one namespace: their imports of each other become references to the one definition
of each name (a name two modules bind differently is renamed); a module held as a value stays a module."""
from __future__ import annotations

import ast
from pathlib import Path

from golf.specialize.analyses import locate
from golf.specialize.scopes import Scopes
from golf.specialize.tree import SpecializeError, _is_docstring, parent_map, _replace, top_level_names, walk


PACKAGE_DIR = Path(__file__).resolve().parent.parent  # golf/


def _is_main_guard(st: ast.stmt) -> bool:
    return isinstance(st, ast.If) and "__main__" in ast.unparse(st.test) and "__name__" in ast.unparse(st.test)


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
