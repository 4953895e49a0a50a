"""A state dict's two layouts (§3.1): the banked one the model trains with and the per-layer
(unbanked) names GPTQ and the artifact use; and checkpoint files in either.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from golf.runtime import GolfError

BANK_NAMES = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")


def _unbanked_names(i: int) -> dict[str, tuple[str, int]]:
    """Per-layer key -> (bank, slot offset multiplier): slot = i + offset * num_layers."""
    return {
        f"blocks.{i}.attn.c_q.weight": ("qo_bank", 0),
        f"blocks.{i}.attn.proj.weight": ("qo_bank", 1),
        f"blocks.{i}.attn.c_k.weight": ("kv_bank", 0),
        f"blocks.{i}.attn.c_v.weight": ("kv_bank", 1),
        f"blocks.{i}.mlp.fc.weight": ("mlp_up_bank", 0),
        f"blocks.{i}.mlp.proj.weight": ("mlp_down_bank", 0),
    }


def unbank_state_dict(sd: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Banked -> per-layer matrices (the layout GPTQ and the artifact use)."""
    out = {k: v for k, v in sd.items() if k not in BANK_NAMES}
    missing = [b for b in BANK_NAMES if b not in sd]
    if missing:
        raise GolfError(f"banked state dict lacks {missing}")
    for i in range(num_layers):
        for key, (bank, off) in _unbanked_names(i).items():
            out[key] = sd[bank][i + off * num_layers]
    return out


def bank_state_dict(sd: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Per-layer matrices -> banked, with a strict check of the per-layer keys."""
    expected = {k for i in range(num_layers) for k in _unbanked_names(i)}
    matrix_keys = {k for k in sd if k.endswith(("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight",
                                                   "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight"))}
    missing, unexpected = sorted(expected - matrix_keys), sorted(matrix_keys - expected)
    if missing or unexpected:
        raise GolfError(f"unbanked state dict does not match {num_layers} layers: "
                        f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}")
    out = {k: v for k, v in sd.items() if k not in expected}
    slots: dict[str, list] = {b: [None] * ((1 if b.startswith("mlp") else 2) * num_layers) for b in BANK_NAMES}
    for i in range(num_layers):
        for key, (bank, off) in _unbanked_names(i).items():
            slots[bank][i + off * num_layers] = sd[key]
    for bank, parts in slots.items():
        out[bank] = torch.stack(parts)
    return out


def load_state_dict_checked(model: nn.Module, sd: dict[str, Tensor]) -> None:
    """Load a banked or unbanked state dict; an error lists missing and unexpected keys."""
    if "qo_bank" not in sd and any(k.endswith("attn.c_q.weight") for k in sd):
        sd = bank_state_dict(sd, model.cfg.num_layers)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise GolfError(f"checkpoint does not match the model: missing keys {missing}, unexpected keys {unexpected}")
    bad = [f"{k}: {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise GolfError("checkpoint shapes differ from the model: " + "; ".join(bad[:8]))
    model.load_state_dict(sd, strict=True)


def save_checkpoint(model: nn.Module, path, layout: str = "banked") -> None:
    from golf.runtime import atomic_torch_save

    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if layout == "unbanked":
        sd = unbank_state_dict(sd, model.cfg.num_layers)
    elif layout != "banked":
        raise ValueError(f"layout must be 'banked' or 'unbanked', got {layout!r}")
    atomic_torch_save(sd, path)


def load_checkpoint(model: nn.Module, path) -> None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GolfError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # a truncated or foreign file
        raise GolfError(f"checkpoint {str(path)!r} could not be read as a torch state dict: {exc}") from None
    load_state_dict_checked(model, sd)
