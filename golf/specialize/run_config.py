"""The run's config as constants: its values, ``cfg.key`` read as its value (``FoldConfig``), the data
paths made absolute when the file runs, and the check that a name ``cfg`` is only ever the run's config."""
from __future__ import annotations

import ast

from golf.specialize.fold import _Transformer, literal
from golf.specialize.scopes import Scopes
from golf.specialize.tree import SpecializeError, copy_tree, walk


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
