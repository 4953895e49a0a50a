"""The golf modules carried as source (golf.kernels: Triton's jit reads its kernels' source). Each becomes a
module again at its first import, made from a string, and that string holds only the module's top-level
definitions the rest of the code reaches: the attributes it reads on the module, and what those name."""
from __future__ import annotations

import ast
import re

from golf.specialize.analyses import locate
from golf.specialize.tree import FUNCTIONS, SpecializeError, parent_map, top_level_names, walk

LOADER = "golf_embedded_module"
EMBEDDED_LOADER = f'''
def {LOADER}(name):
    import builtins, linecache, sys, types
    source = GOLF_EMBEDDED_SOURCES[name]
    module = types.ModuleType("golf." + name)
    path = f"<golf.{{name}}>"
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    sys.modules[module.__name__] = module
    builtins.exec(compile(source, path, "exec"), module.__dict__)  # exec by name would keep every global's name
    return module
'''


def _placeholder(m: str) -> str:
    """Where the source of ``m`` goes once the rest is specialized (over 12 characters: like the source, a
    string no pass copies to where it is read)."""
    return f"golf embedded source of {m}"


def embed(module: ast.Module, names) -> None:
    """A golf module held as a value becomes a real module again, made from its source at the import
    (in linecache, so that Triton's jit finds the source of its kernels). Its source is a placeholder
    until ``fill_embedded``: what of it is carried depends on what the specialized code reads of it."""
    for node in walk(module):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__golf_embedded__":
            node.func.id = LOADER
    module.body += ast.parse(EMBEDDED_LOADER).body
    module.body.append(ast.Assign([ast.Name("GOLF_EMBEDDED_SOURCES", ast.Store())],
                                  ast.Dict([ast.Constant(m) for m in names],
                                           [ast.Constant(_placeholder(m)) for m in names])))


def fill_embedded(module: ast.Module, trees: dict[str, ast.Module]) -> None:
    """Each embedded module's placeholder becomes its minified source, less the definitions ``module``
    (specialized) cannot reach; all of it where what ``module`` reads of it cannot be followed, or where
    embedded modules hold each other."""
    roots = attributes_read(module, trees)
    holds_others = any(isinstance(n, ast.Name) and n.id == "__golf_embedded__" for t in trees.values() for n in walk(t))
    sources = {}
    for m, tree in trees.items():
        if roots is not None and not holds_others:
            drop_unreached(tree, roots)
        sources[_placeholder(m)] = minify_embedded(ast.unparse(locate(tree)))
    for node in walk(module):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in sources:
            node.value = sources[node.value]
    for node in walk(module):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and any(p in node.value for p in sources):
            raise SpecializeError(f"an embedded module's placeholder was changed by a pass: {node.value[:80]!r}")


def minify_embedded(source: str) -> str:
    """An embedded module keeps its names and annotations (Triton reads ``tl.constexpr`` ones, and the
    autotuner passes its block sizes by name): only docstrings and comments go."""
    import python_minifier

    return python_minifier.minify(source, remove_literal_statements=True, rename_globals=False, rename_locals=False,
                                  hoist_literals=False, remove_annotations=False, remove_asserts=False,
                                  remove_debug=False)


def attributes_read(module: ast.Module, trees: dict[str, ast.Module]) -> set[str] | None:
    """The attribute names ``module`` reads on the embedded modules' objects (all of them together); None
    where an object goes anywhere but an attribute read, ``is None``, a name, a top-level function's
    return, or where it is reached other than through the loader's calls."""
    def carrying(st) -> bool:  # the loader and its sources
        return (isinstance(st, ast.FunctionDef) and st.name == LOADER or isinstance(st, ast.Assign)
                and [ast.unparse(t) for t in st.targets] == ["GOLF_EMBEDDED_SOURCES"])

    rest = ast.Module([st for st in module.body if not carrying(st)], [])
    if sum(isinstance(st, ast.FunctionDef) for st in module.body if carrying(st)) != 1:
        return None
    names = {f"golf.{m}" for m in trees} | {_placeholder(m) for m in trees}
    if any(isinstance(n, ast.Constant) and n.value in names or isinstance(n, ast.Name)
           and n.id == "GOLF_EMBEDDED_SOURCES" for n in walk(rest)):
        return None  # (sys.modules["golf.kernels"], or the source moved out of the loader)
    parents = parent_map(rest)
    top_functions = {id(st): st.name for st in rest.body if isinstance(st, ast.FunctionDef)}
    carrier_functions, carrier_names = {LOADER}, set()  # calls and names whose value may be such a module
    while True:
        size = len(carrier_functions) + len(carrier_names)
        attributes = set()
        for node in walk(rest):
            if isinstance(node, ast.Name) and node.id in carrier_functions and isinstance(node.ctx, ast.Load):
                if not (isinstance(parents[id(node)], ast.Call) and parents[id(node)].func is node):
                    return None  # the loader (or a function returning the module) held as a value
                continue
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in carrier_functions
                    or isinstance(node, ast.Name) and node.id in carrier_names and isinstance(node.ctx, ast.Load)):
                continue
            parent = parents[id(node)]
            if isinstance(parent, ast.Attribute) and isinstance(parent.ctx, ast.Load):
                attributes.add(parent.attr)
            elif isinstance(parent, ast.Assign) and parent.value is node and all(
                    isinstance(t, ast.Name) for t in parent.targets):
                carrier_names.update(t.id for t in parent.targets)
            elif isinstance(parent, ast.Return):
                function = parent
                while not isinstance(function, (*FUNCTIONS, ast.Module)):
                    function = parents[id(function)]
                if id(function) not in top_functions:
                    return None
                carrier_functions.add(top_functions[id(function)])
            elif isinstance(parent, ast.Compare) and all(isinstance(op, (ast.Is, ast.IsNot)) for op in parent.ops) \
                    and all(e is node or isinstance(e, ast.Constant) and e.value is None
                            for e in (parent.left, *parent.comparators)):
                pass
            elif not isinstance(parent, ast.Expr):
                return None
        if len(carrier_functions) + len(carrier_names) == size:
            return attributes


def drop_unreached(tree: ast.Module, roots: set[str]) -> None:
    """Drop the top-level definitions (also under a top-level ``if`` or ``try``) that no name in ``roots``
    reaches, where reaching is naming: a kept statement keeps every definition of each name it reads,
    anywhere in it (a decorator, a default, an annotation, a body, a string's words). A statement that
    acts on a definition (``f.register_x(g)``, ``@f.register_fake``, ``f.x = ...``) goes with it; imports
    and statements of other kinds stay, and all of it where it may read its own names by string."""
    if any(isinstance(n, ast.Name) and n.id in _BY_STRING or isinstance(n, ast.Attribute) and n.attr == "__dict__"
           or isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in _BY_STRING for n in walk(tree)):
        return  # it may read its names by string (or make attributes): any definition may be reached
    units = [_Unit(st) for st in _statements(tree.body)]
    fixed = {n for u in units if u.always for n in u.binds}
    droppable = {n for u in units for n in u.binds} - fixed
    needed, kept = set(roots) | _tested(tree.body), set()
    changed = True
    while changed:
        changed = False
        for u in units:
            if id(u.st) in kept or not u.keep(needed, droppable):
                continue
            kept.add(id(u.st))
            needed |= u.reads
            changed = True
    tree.body = _kept(tree.body, kept)


_BY_STRING = {"globals", "locals", "vars", "dir", "eval", "exec", "__import__", "__getattr__", "__dir__"}
_WORD = re.compile(r"[A-Za-z_]\w*")


def _statements(body: list[ast.stmt]):
    """The statements of ``body``, those under an ``if`` or ``try`` in place of it."""
    for st in body:
        if isinstance(st, ast.If):
            yield from _statements(st.body + st.orelse)
        elif isinstance(st, ast.Try):
            yield from _statements(st.body + [s for h in st.handlers for s in h.body] + st.orelse + st.finalbody)
        else:
            yield st


def _tested(body: list[ast.stmt]) -> set[str]:
    """The names the tests of the ``if`` statements in ``body`` read, and the types of its ``except`` clauses."""
    out = set()
    for st in body:
        if isinstance(st, ast.If):
            out |= {n.id for n in walk(st.test) if isinstance(n, ast.Name)} | _tested(st.body + st.orelse)
        elif isinstance(st, ast.Try):
            out |= {n.id for h in st.handlers if h.type for n in walk(h.type) if isinstance(n, ast.Name)}
            out |= _tested(st.body + [s for h in st.handlers for s in h.body] + st.orelse + st.finalbody)
    return out


def _root(node: ast.expr) -> str | None:
    """The name ``a.b(c)[d].e`` acts on: a."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _run(st: ast.stmt) -> list[ast.AST]:
    """The parts of ``st`` that run when it does: a function's decorators, defaults and annotations (not
    its body); a class's decorators, bases and body (its methods as functions); any other, all of it.
    A decorator stands as the call it makes."""
    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = st.args
        heads = [*a.defaults, *(d for d in a.kw_defaults if d), st.returns,
                 *(x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x)]
        return [*(ast.Call(d, [], []) for d in st.decorator_list), *(h for h in heads if h)]
    if isinstance(st, ast.ClassDef):
        return [*(ast.Call(d, [], []) for d in st.decorator_list), *st.bases, *(k.value for k in st.keywords),
                *(p for s in st.body for p in _run(s))]
    return [st]


class _Unit:
    """A statement as drop_unreached reads it: the names it binds and reads, and the definitions its
    effects act on (``acts_on``: the roots of its calls, decorators, stored attributes and items, and the
    names it passes; None where one has no name)."""

    def __init__(self, st: ast.stmt):
        self.st = st
        nodes = list(walk(st))
        docstrings = {id(n.value) for n in nodes if isinstance(n, ast.Expr)}  # (a bare string names nothing)
        self.reads = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
        self.reads |= {w for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)
                       and id(n) not in docstrings for w in _WORD.findall(n.value)}  # getattr(x, "name")
        self.binds = top_level_names(st)
        run = [n for part in _run(st) for n in walk(part)]  # what runs when the statement does
        simple = isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Expr, ast.Assign,
                                 ast.AnnAssign, ast.AugAssign))
        self.always = (isinstance(st, (ast.Import, ast.ImportFrom)) or not simple
                       or any(isinstance(n, (ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)) for n in run))
        acted = []
        for n in run:
            if isinstance(n, ast.Call):
                acted += [n.func, *(a for a in n.args if isinstance(a, ast.Name)),
                          *(k.value for k in n.keywords if isinstance(k.value, ast.Name))]
            elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)):
                acted.append(n)
        roots = [_root(a) for a in acted]
        self.acts_on = None if None in roots else set(roots)

    def keep(self, needed: set[str], droppable: set[str]) -> bool:
        """Kept: an import, a statement of another kind (a loop, a ``with``), one that binds a needed name
        or acts on a needed definition. Else a definition goes, and a statement that binds nothing goes
        where all it acts on are definitions that go (a bare string: always)."""
        if self.always or set(self.binds) & needed:
            return True
        if self.acts_on is not None and self.acts_on & needed & droppable:
            return True
        if self.binds or isinstance(self.st, ast.Expr) and isinstance(self.st.value, ast.Constant):
            return False
        return self.acts_on is None or not self.acts_on or not self.acts_on <= droppable


def _kept(body: list[ast.stmt], kept: set[int]) -> list[ast.stmt]:
    """``body`` with only the statements in ``kept``; an ``if`` or ``try`` left with nothing goes where its
    test calls nothing, else stays with ``pass``."""
    out = []
    for st in body:
        if isinstance(st, ast.If):
            st.body, st.orelse = _kept(st.body, kept), _kept(st.orelse, kept)
            if not st.body and not st.orelse and not any(isinstance(n, ast.Call) for n in walk(st.test)):
                continue
            st.body = st.body or [ast.Pass()]
        elif isinstance(st, ast.Try):
            st.body, st.orelse, st.finalbody = (_kept(b, kept) for b in (st.body, st.orelse, st.finalbody))
            for h in st.handlers:
                h.body = _kept(h.body, kept)
            if not (st.body or st.orelse or st.finalbody or any(h.body for h in st.handlers)):
                continue
            st.body = st.body or [ast.Pass()]
            for h in st.handlers:
                h.body = h.body or [ast.Pass()]
        elif id(st) not in kept:
            continue
        out.append(st)
    return out
