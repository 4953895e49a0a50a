"""What only a failed run reaches goes: a raise nothing catches (but the run's checks before any work),
and the branch or except clause that always ends in one."""
from __future__ import annotations

import ast

from golf.specialize.analyses import parents_of, scopes_of, tree_changed
from golf.specialize.effects import queries
from golf.specialize.prune import ENTRY
from golf.specialize.scopes import Scopes, _all_scopes
from golf.specialize.tree import COMPREHENSIONS, children, walk


# Functions whose except clauses hand the exception on, to be raised where a run goes on (the prefetch
# thread's to the training loop, rank 0's run-folder error to every rank): they end a run as failed too.
FORWARDING_HANDLERS = {"_work", "_shared_run_dir"}
# The run's checks before any work (golf.commands._preflight): their GolfErrors and ConfigErrors (a
# setting the world size does not allow) stay in the submission.
USER_ERRORS = {"GolfError", "ConfigError"}
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
        if raised is not None and USER_ERRORS & excs.ancestry(raised)[0] and checks.intersection(fn_names):
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
