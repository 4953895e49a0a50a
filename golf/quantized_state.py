"""The model's unbanked state dict quantized (§5.3, §5.4): GPTQ for the matrices, absmax int8 for the
gates, fp16 passthrough for small tensors; and back (``dequantize_state_dict``), keys and shapes checked.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from golf.artifact import ArtifactError
from golf.gptq import absmax_int8, gptq_quantize
from golf.lqer import LQER_SUFFIXES, dequantize_matrix
from golf.runtime import GolfError, progress_bar

MATRIX_SUFFIXES = ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight",
                   "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")
EMBED_NAME = "tok_emb.weight"
GATE_SUFFIXES = (".attn_gate_w",)  # the sparse attention gate (#1787); #1855 keeps the SmearGate fp16


def tensor_plan(name: str, t: Tensor, cfg) -> tuple[int, float] | None:
    """(bits, k) for a tensor GPTQ quantizes, None for passthrough."""
    if not t.is_floating_point() or t.numel() <= cfg.quant_passthrough_numel or t.ndim != 2:
        return None
    if name == EMBED_NAME:
        return cfg.embed_bits, cfg.embed_clip_sigmas
    if name.endswith(MATRIX_SUFFIXES):
        by_class = cfg.attn_clip_sigmas if ".attn." in name else cfg.mlp_clip_sigmas  # #1626; 0: the shared k
        return cfg.matrix_bits, by_class or cfg.matrix_clip_sigmas
    return None


def quantize_state_dict(unbanked_sd: dict[str, Tensor], hessians: dict[str, Tensor], cfg,
                        device: torch.device | str | None = None, timings: dict[str, float] | None = None,
                        progress: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """GPTQ every matrix (``NAME.q`` int8 + ``NAME.scale`` fp16) and keep small tensors as fp16.

    meta[name] is {"type": "int6"/"int8", "bits", "clip_sigmas"}, {"type": "int8", "bits": 8, "rounding":
    "absmax"} for a gate (``gate_int8``), or {"type": "passthrough"}.
    ``timings``, if given, receives the GPTQ seconds per tensor; ``progress`` shows a bar over them.
    """
    quantized: dict[str, Tensor] = {}
    meta: dict[str, Any] = {}
    missing = [n for n, t in unbanked_sd.items() if tensor_plan(n, t, cfg) and n not in hessians]
    if missing:
        raise GolfError(f"no Hessian for {missing[:8]}: were they captured by collect_hessians?")
    bar = progress_bar(sum(tensor_plan(n, t, cfg) is not None for n, t in unbanked_sd.items()), "GPTQ", progress, "matrix")
    for name, t in unbanked_sd.items():
        plan = tensor_plan(name, t, cfg)
        if plan is None and cfg.gate_int8 and name.endswith(GATE_SUFFIXES) and t.ndim == 2 and 32 <= t.numel() <= 8192:
            quantized[name + ".q"], quantized[name + ".scale"] = absmax_int8(t.detach().cpu())
            meta[name] = {"type": "int8", "bits": 8, "rounding": "absmax"}
            continue
        if plan is None:
            t = t.detach().cpu()
            quantized[name] = t.to(torch.float16) if t.is_floating_point() else t
            meta[name] = {"type": "passthrough"}
            continue
        bits, k = plan
        bar.set_postfix_str(name)
        dev = torch.device(device) if device is not None else t.device
        t0 = time.perf_counter()
        q, scale = gptq_quantize(t.to(dev), hessians[name].to(dev), bits, k,
                                 cfg.gptq_block_size, cfg.gptq_damp)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
        quantized[name + ".q"], quantized[name + ".scale"] = q.cpu(), scale.cpu()
        meta[name] = {"type": f"int{bits}", "bits": bits, "clip_sigmas": float(k)}
        bar.update()
    bar.close()
    return quantized, meta


def _stored_suffixes(m: dict[str, Any]) -> tuple[str, ...]:
    if m["type"] == "passthrough":
        return ("",)
    return (".q", ".scale") + (LQER_SUFFIXES if m.get("lqer_rank") else ())


def dequantize_state_dict(quantized: dict[str, Tensor], meta: dict[str, Any],
                          template_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """W = q·s_row (+ A·B where LQER corrected it), cast to the template's dtype; keys and shapes checked."""
    missing, unexpected = sorted(set(template_sd) - set(meta)), sorted(set(meta) - set(template_sd))
    if missing or unexpected:
        raise ArtifactError(f"artifact keys do not match the model: missing keys {missing[:10]}"
                            f"{'...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}")
    stored = {n + suffix for n, m in meta.items() for suffix in _stored_suffixes(m)}
    if stored != set(quantized):
        raise ArtifactError(f"artifact is corrupt: its tensors and its meta disagree on {sorted(stored ^ set(quantized))[:10]}")
    out: dict[str, Tensor] = {}
    for name, ref in template_sd.items():
        if meta[name]["type"] == "passthrough":
            w = quantized[name]
        else:
            w = dequantize_matrix(quantized, name, meta[name])
        if tuple(w.shape) != tuple(ref.shape):
            raise ArtifactError(f"artifact tensor {name!r} has shape {tuple(w.shape)}, model has {tuple(ref.shape)}")
        out[name] = w.to(ref.dtype)
    return out
