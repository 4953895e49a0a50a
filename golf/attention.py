"""Causal GQA attention kernels, picked at start-up, fastest first.

All take q (B, T, H, hd), k and v (B, T, KV, hd) and return (B, T, H, hd); query head h reads
KV head h // (H / KV), softmax scale 1/sqrt(hd). They compute the same function:
- ``fa3``: FlashAttention-3 (``flash_attn_interface``), what the record ran on H100;
- ``fa4``: FlashAttention-4 (``flash_attn.cute``), CuTe DSL;
- ``sdpa``: PyTorch SDPA with native GQA; on CUDA it prefers the cuDNN backend, which measured
  1.5x the flash backend at the record's shape (spec §7.3);
- ``math``: an explicit softmax, the reference the others are tested against.
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("golf")


def math_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    B, T, H, hd = q.shape
    rep = H // k.size(2)
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / hd**0.5
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshd->bthd", probs, v.float()).to(q.dtype)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
    )
    return y.transpose(1, 2)


def _sdpa_cuda_attention(native_gqa_scoring: bool = True) -> Callable:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

    def attn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # Training expands the KV heads: cuDNN's backward with native GQA was 4.5% slower in a compiled
        # step. Scoring (no grad) lets cuDNN read the shared KV heads itself: the same output, 0.6x the
        # forward time at the scorer's batch (bench/RESULTS.md, "Native GQA for scoring").
        native = native_gqa_scoring and not torch.is_grad_enabled()
        if not native:
            rep = q.size(2) // k.size(2)
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        with sdpa_kernel(order, set_priority=True):
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, enable_gqa=native)
        return y.transpose(1, 2)

    return attn


def document_ids(ids: Tensor, bos_id: int, max_len: int = 0) -> Tensor:
    """(B, T) segment index of each position: a segment starts at the row's start, at every BOS and,
    with ``max_len``, every ``max_len`` tokens into a document, as #1855's cu_seqlens cut a packed row
    (documents longer than the training length are attended in pieces)."""
    bos = ids == bos_id
    if max_len <= 0:
        return bos.cumsum(1)
    pos = torch.arange(ids.size(1), device=ids.device).expand_as(ids)
    doc_start = torch.where(bos, pos, torch.zeros_like(pos)).cummax(1).values
    into = pos - doc_start
    return (bos | ((into % max_len == 0) & (into > 0))).cumsum(1)


def _dense_document_attention(q: Tensor, k: Tensor, v: Tensor, doc: Tensor) -> Tensor:
    """SDPA with an explicit (B, 1, T, T) mask: causal and same document. The reference, and the path
    outside ``torch.compile`` (CPU, or CUDA with compile off)."""
    T = q.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    allowed = (causal & (doc[:, :, None] == doc[:, None, :]))[:, None]
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=allowed, enable_gqa=True)
    return y.transpose(1, 2)


def _flex_document_attention(q: Tensor, k: Tensor, v: Tensor, doc: Tensor) -> Tensor:
    """FlexAttention with a block mask built from ``doc``: fully masked blocks are skipped, so packed
    short documents cost less than full causal attention. Used inside ``torch.compile``."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, T = doc.shape

    def same_doc_causal(b, h, qi, ki):
        return (qi >= ki) & (doc[b, qi] == doc[b, ki])

    mask = create_block_mask(same_doc_causal, B, None, T, T, device=q.device)
    y = flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=mask, enable_gqa=True)
    return y.transpose(1, 2)


SEGMENTED_FROM = 4096  # rows longer than this attend segment by segment outside torch.compile


def _segmented_document_attention(q: Tensor, k: Tensor, v: Tensor, doc: Tensor) -> Tensor:
    """Causal attention inside each segment, one segment a row: the segments are gathered into a padded
    batch, run through causal SDPA and scattered back. Padding follows each segment and attention is
    causal, so this is the masked attention exactly, in memory of (segments x longest segment²) rather
    than T² — what a packed row of tens of thousands of tokens needs outside ``torch.compile``."""
    B, T, H, D = q.shape
    flat = (doc + torch.arange(B, device=doc.device)[:, None] * (T + 1)).flatten()  # increasing over rows too
    new = torch.ones_like(flat, dtype=torch.bool)
    new[1:] = flat[1:] != flat[:-1]
    seg = new.cumsum(0) - 1
    first = torch.nonzero(new).flatten()
    col = torch.arange(B * T, device=doc.device) - first[seg]
    n, width = first.numel(), int(col.max()) + 1

    def pack(t: Tensor) -> Tensor:
        out = t.new_zeros(n, width, t.size(2), t.size(3))
        out[seg, col] = t.flatten(0, 1)
        return out.transpose(1, 2)

    y = F.scaled_dot_product_attention(pack(q), pack(k), pack(v), is_causal=True, enable_gqa=True)
    return y.transpose(1, 2)[seg, col].view(B, T, H, D)


class document_attention:  # noqa: N801  (used like the attention functions above)
    """Causal attention that stays inside each document (``attention_mask: document``, VarLen #1530).

    Same signature as the other kernels; ``doc`` (B, T) from ``document_ids``. Compiled training on
    CUDA runs FlexAttention, everything else an explicit mask through SDPA (the math they agree with).
    The ``doc`` attribute is read by the model's suffix attention (sliding-window scoring).
    """

    def __init__(self, doc: Tensor):
        self.doc = doc

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # Flex for compiled training (forward and backward); scoring (no grad) keeps the explicit mask,
        # as its compiled inference kernel faulted on the H100 in a small test (bench/RESULTS.md).
        if q.is_cuda and torch.compiler.is_compiling() and torch.is_grad_enabled() and q.size(-1) >= 16:
            return _flex_document_attention(q, k, v, self.doc)
        if q.size(1) > SEGMENTED_FROM and not torch.compiler.is_compiling():  # a packed row: T² would not fit
            return _segmented_document_attention(q, k, v, self.doc)
        return _dense_document_attention(q, k, v, self.doc)


def _flash(module: str, attr: str = "flash_attn_func") -> Callable | None:
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception:  # not installed, or built for another GPU / torch
        return None

    def attn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = fn(q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out

    return attn


_FLASH_MODULES = {"fa3": "flash_attn_interface", "fa4": "flash_attn.cute"}


def attention_fn(name: str) -> Callable:
    if name == "math":
        return math_attention
    if name == "sdpa":
        return sdpa_attention
    if name == "sdpa_cuda":
        return _sdpa_cuda_attention()
    if name == "sdpa_cuda_expanded":  # the scorer before native GQA: benchmarks and tests only
        return _sdpa_cuda_attention(native_gqa_scoring=False)
    if name in _FLASH_MODULES:
        fn = _flash(_FLASH_MODULES[name])
        if fn is None:
            raise RuntimeError(f"attention backend {name!r} is not importable ({_FLASH_MODULES[name]})")
        return fn
    raise ValueError(f"unknown attention backend {name!r}")


def check_backend_available(requested: str) -> None:
    """A FlashAttention kernel asked for by name must import here; checked before any work starts."""
    from golf.runtime import GolfError

    if requested in _FLASH_MODULES and _flash(_FLASH_MODULES[requested]) is None:
        raise GolfError(f"params key 'attention_backend' is {requested!r} but {_FLASH_MODULES[requested]} is not "
                        "importable here (not installed, or built for another GPU); use auto or sdpa")


def select_backend(requested: str, device: torch.device) -> str:
    """Resolve ``auto`` to the fastest importable kernel for the device, and log the choice."""
    if requested == "auto":
        if device.type == "cuda":
            chosen = next((n for n in ("fa3", "fa4") if _flash(_FLASH_MODULES[n]) is not None), "sdpa_cuda")
        else:
            chosen = "sdpa"
    elif requested == "sdpa" and device.type == "cuda":
        chosen = "sdpa_cuda"
    else:
        chosen = requested
        check_backend_available(chosen)
    log.info("attention backend: %s", chosen)
    return chosen
