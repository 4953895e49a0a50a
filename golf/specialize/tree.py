"""The AST plumbing every pass uses: walking (only the fields that may hold nodes), parents, copying and
replacing nodes, locations, a statement's top-level names. Faster than ast's own: the passes walk the
whole program many times."""
from __future__ import annotations

import ast


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


def _node_classes(cls: type = ast.AST):
    for sub in cls.__subclasses__():
        yield sub
        yield from _node_classes(sub)


def _is_docstring(st: ast.stmt) -> bool:
    return isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str)


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


def _remove_statement(holder: ast.AST, st: ast.stmt) -> None:
    """Take ``st`` out of the block of ``holder`` that holds it; a body left empty holds ``pass``."""
    for field, body in ast.iter_fields(holder):
        if isinstance(body, list) and st in body:
            body.remove(st)
            if not body and field == "body":
                body.append(ast.Pass())


def _rewrite_blocks(node: ast.AST, rewrite) -> bool:
    """Each statement of ``node``'s blocks (body, orelse, finalbody) becomes the statements ``rewrite(st)``
    lists; a body left empty holds ``pass``. Whether a block changed."""
    changed = False
    for field in ("body", "orelse", "finalbody"):
        body = getattr(node, field, None)
        if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
            continue
        new = [out for st in body for out in rewrite(st)]
        if len(new) != len(body) or any(a is not b for a, b in zip(new, body)):
            setattr(node, field, new or ([ast.Pass()] if field == "body" else []))
            changed = True
    return changed


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
