"""Constant folding: the value of a constant expression and the expression of a value (``const``,
``literal``), and ``Fold``, which folds what constants decide (operators, pure calls, tests, dead code)."""
from __future__ import annotations

import ast
import math

from golf.specialize.analyses import tree_changed
from golf.specialize.effects import _golf_query, pure, queries
from golf.specialize.tree import _CHILD_FIELDS


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
