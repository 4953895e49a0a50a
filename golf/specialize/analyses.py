"""The whole module's analyses (its nodes, parents and scopes), kept while the tree does not change: the
passes of a round read them afresh only after one changed something (``tree_changed``). And ``locate``."""
from __future__ import annotations

import ast

from golf.specialize.scopes import Scopes
from golf.specialize.tree import _locate_nodes, _nodes_and_parents


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
