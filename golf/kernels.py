"""Fused Triton kernels for CUDA, each behind a params switch; the unfused PyTorch path is the reference.

``fused_mlp`` fuses the MLP's LeakyReLU(0.5)² into the GEMMs around it (same maths, bit-equal up to
summation order); ``fused_ce`` makes the softcapped cross-entropy's gradient in the forward pass
(bf16 rounding noise, not bit-equal). What each saves and why the rounding differs: §10.5.
"""
from __future__ import annotations

import functools
import inspect
import os

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch come without Triton; fused_mlp then stays off (golf.blocks)
    triton = None

NEGATIVE_SLOPE = 0.5
BLOCK_K = 64
BLOCK_N_MAX = 256


def mlp_supported(h: Tensor, w_up: Tensor) -> bool:
    """Whether the fused kernels take these operands: CUDA bf16/fp16 and block-aligned widths."""
    rows = h.numel() // max(h.size(-1), 1)
    return (triton is not None and h.is_cuda and h.dtype in (torch.bfloat16, torch.float16)
            and w_up.dtype == h.dtype and h.size(-1) % BLOCK_K == 0 and w_up.size(0) % BLOCK_N_MAX == 0
            and rows * w_up.size(0) < 2**31)  # the kernels index the (rows, 4·D) tensors in int32


def reference_mlp(h: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """The unfused MLP (golf.blocks.mlp without its capture hook)."""
    return F.linear(F.leaky_relu(F.linear(h, w_up), NEGATIVE_SLOPE).square(), w_down)


if triton is not None:
    # PERSISTENT: one program per SM walks the tiles, so one tile's stores overlap the next one's loads
    # (K is short here, 512: the stores of the (rows, 4·D) outputs weigh as much as the products).
    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8, "PERSISTENT": p}, num_stages=s, num_warps=w)
        for bm, bn, s, w in ((128, 256, 3, 8), (128, 128, 4, 4), (128, 128, 3, 8), (256, 128, 3, 8),
                             (64, 256, 4, 4))
        for p in (False, True)
    ]

    @triton.jit
    def _tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        """Grouped tile order: GROUP_M row blocks share their column blocks while they sit in L2."""
        num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * num_n
        first_m = (pid // per_group) * GROUP_M
        group_rows = tl.minimum(num_m - first_m, GROUP_M)
        return first_m + (pid % per_group) % group_rows, (pid % per_group) // group_rows

    @triton.jit
    def _matmul_tile(a_ptr, b_ptr, M, K, s_am, s_ak, s_bk, s_bn, pid_m, pid_n,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """fp32 (BLOCK_M, BLOCK_N) tile of A (M, K) @ B (K, N); K and N are multiples of the blocks."""
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + rm[:, None] * s_am + rk[None, :] * s_ak
        b_ptrs = b_ptr + rk[:, None] * s_bk + rn[None, :] * s_bn
        row_ok = rm[:, None] < M
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for _ in range(0, K, BLOCK_K):
            acc = tl.dot(tl.load(a_ptrs, mask=row_ok, other=0.0), tl.load(b_ptrs), acc)
            a_ptrs += BLOCK_K * s_ak
            b_ptrs += BLOCK_K * s_bk
        return acc, rm, rn

    @triton.jit
    def _up_act_kernel(x_ptr, w_ptr, act_ptr, pre_ptr, M, N, K, s_xm, s_xk, s_wn, s_wk,
                       STORE_PRE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, PERSISTENT: tl.constexpr):
        """act = leaky(x @ wᵀ)², from the pre-activation rounded to the output dtype; pre stored when asked.
        Each program takes tiles pid, pid + programs, ... (one tile when the grid has one per tile)."""
        num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
        for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=PERSISTENT):
            pid_m, pid_n = _tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
            acc, rm, rn = _matmul_tile(x_ptr, w_ptr, M, K, s_xm, s_xk, s_wk, s_wn, pid_m, pid_n,
                                       BLOCK_M, BLOCK_N, BLOCK_K)
            pre = acc.to(act_ptr.dtype.element_ty)
            p = pre.to(tl.float32)
            y = tl.where(p > 0, p, p * 0.5)
            offs = rm[:, None] * N + rn[None, :]
            mask = rm[:, None] < M
            tl.store(act_ptr + offs, (y * y).to(act_ptr.dtype.element_ty), mask=mask)
            if STORE_PRE:
                tl.store(pre_ptr + offs, pre, mask=mask)

    @triton.jit
    def _act_grad_kernel(g_ptr, w_ptr, pre_ptr, out_ptr, M, N, K, s_gm, s_gk, s_wk, s_wn,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr, PERSISTENT: tl.constexpr):
        """d pre = leaky'(pre) · 2·leaky(pre) · (g @ w), with g @ w rounded to the dtype first (it is a
        stored tensor on the unfused path) and the rest in fp32, rounded once."""
        num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
        for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=PERSISTENT):
            pid_m, pid_n = _tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
            acc, rm, rn = _matmul_tile(g_ptr, w_ptr, M, K, s_gm, s_gk, s_wk, s_wn, pid_m, pid_n,
                                       BLOCK_M, BLOCK_N, BLOCK_K)
            offs = rm[:, None] * N + rn[None, :]
            mask = rm[:, None] < M
            d_act = acc.to(out_ptr.dtype.element_ty).to(tl.float32)
            p = tl.load(pre_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            d_y = 2.0 * tl.where(p > 0, p, p * 0.5) * d_act
            tl.store(out_ptr + offs, tl.where(p > 0, d_y, d_y * 0.5).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _softcap_ce_kernel(logits_ptr, targets_ptr, nll_ptr, grad_ptr, V, s_row, cap, BLOCK_V: tl.constexpr):
        """One row: z = cap·tanh(l/cap), NLL = logsumexp(z) − z[t], d NLL/d l = (softmax(z) − onehot)·(1 − tanh²)."""
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_V)
        inside = cols < V
        logits = tl.load(logits_ptr + row * s_row + cols, mask=inside, other=0.0).to(tl.float32)
        th = 2.0 / (1.0 + tl.exp(-2.0 * logits / cap)) - 1.0  # tanh, from exp (≤ 2e-7 off libdevice's)
        z = tl.where(inside, cap * th, float("-inf"))
        z_max = tl.max(z, 0)
        e = tl.exp(z - z_max)
        total = tl.sum(e, 0)
        is_target = cols == tl.load(targets_ptr + row)
        tl.store(nll_ptr + row, z_max + tl.log(total) - tl.sum(tl.where(is_target, z, 0.0), 0))
        d_z = e / total - is_target.to(tl.float32)
        d_logits = (d_z * (1.0 - th * th)).to(grad_ptr.dtype.element_ty)
        tl.store(grad_ptr + row * s_row + cols, d_logits, mask=inside)

    if os.environ.get("TRITON_INTERPRET") == "1":  # the CPU interpreter (tests): one fixed tile shape, no timing;
        # persistent, on a grid smaller than the tiles, so a program walks several
        _INTERPRET_META = {"BLOCK_M": 64, "BLOCK_N": 128, "GROUP_M": 2, "PERSISTENT": True}
    else:
        _INTERPRET_META = {}
        # the timings are kept with the compiled kernels (Triton's cache) where this Triton can, so a
        # second run does not tune again
        _KEEP = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
        _up_act_kernel = triton.autotune(_CONFIGS, key=["M", "N", "K", "STORE_PRE"], **_KEEP)(_up_act_kernel)
        _act_grad_kernel = triton.autotune(_CONFIGS, key=["M", "N", "K"], **_KEEP)(_act_grad_kernel)


INTERPRETER_PROGRAMS = 3  # the persistent grid under the CPU interpreter (no SMs to count)


def _programs(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_PROGRAMS
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:  # asked at every launch of the persistent kernels: read once a device
    return torch.cuda.get_device_properties(index).multi_processor_count


def _grid(M: int, N: int, device: torch.device):
    def grid(meta):
        tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])
        return (min(tiles, _programs(device)) if meta["PERSISTENT"] else tiles,)
    return grid


def _up_act(x2: Tensor, w_up: Tensor, store_pre: bool) -> tuple[Tensor, Tensor]:
    M, K = x2.shape
    N = w_up.size(0)
    act = x2.new_empty(M, N)
    pre = x2.new_empty(M, N) if store_pre else act  # unused when not stored
    _up_act_kernel[_grid(M, N, x2.device)](x2, w_up, act, pre, M, N, K, x2.stride(0), x2.stride(1), w_up.stride(0),
                                w_up.stride(1), STORE_PRE=store_pre, BLOCK_K=BLOCK_K, **_INTERPRET_META)
    return act, pre


@torch.library.custom_op("golf::mlp_train", mutates_args=())
def _mlp_train(h: Tensor, w_up: Tensor, w_down: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(out, act, pre) of the rows of h (M, D); act and pre are kept for the backward."""
    act, pre = _up_act(h, w_up.contiguous(), store_pre=True)
    return act @ w_down.t(), act, pre


@_mlp_train.register_fake
def _(h, w_up, w_down):
    M, N = h.size(0), w_up.size(0)
    return h.new_empty(M, w_down.size(0)), h.new_empty(M, N), h.new_empty(M, N)


@torch.library.custom_op("golf::mlp_infer", mutates_args=())
def _mlp_infer(h: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """The forward alone: the pre-activation is never stored."""
    act, _ = _up_act(h, w_up.contiguous(), store_pre=False)
    return act @ w_down.t()


@_mlp_infer.register_fake
def _(h, w_up, w_down):
    return h.new_empty(h.size(0), w_down.size(0))


@torch.library.custom_op("golf::mlp_act_grad", mutates_args=())
def _mlp_act_grad(g: Tensor, w_down: Tensor, pre: Tensor) -> Tensor:
    """Gradient of the pre-activation from the output gradient g (M, D)."""
    g = g.contiguous()
    M, K = g.shape
    N = w_down.size(1)
    out = torch.empty_like(pre)
    _act_grad_kernel[_grid(M, N, g.device)](g, w_down, pre, out, M, N, K, g.stride(0), g.stride(1),
                                  w_down.stride(0), w_down.stride(1), BLOCK_K=BLOCK_K, **_INTERPRET_META)
    return out


@_mlp_act_grad.register_fake
def _(g, w_down, pre):
    return torch.empty_like(pre)


def _setup(ctx, inputs, output):
    h, w_up, w_down = inputs
    _, act, pre = output
    ctx.save_for_backward(h, w_up, w_down, act, pre)


def _backward(ctx, g_out, _g_act, _g_pre):
    h, w_up, w_down, act, pre = ctx.saved_tensors
    d_pre = _mlp_act_grad(g_out, w_down, pre)
    return d_pre @ w_up, d_pre.t() @ h, g_out.t() @ act


_mlp_train.register_autograd(_backward, setup_context=_setup)


MAX_CE_CLASSES = 16384  # one row of logits is held in registers: beyond this it would spill


def ce_supported(h: Tensor, weight: Tensor) -> bool:
    """Whether the fused cross-entropy takes these operands: CUDA bf16/fp16, at most MAX_CE_CLASSES classes."""
    return (triton is not None and h.is_cuda and h.dtype in (torch.bfloat16, torch.float16)
            and weight.size(0) <= MAX_CE_CLASSES)


def reference_softcap_nll(h: Tensor, weight: Tensor, targets: Tensor, cap: float) -> Tensor:
    """The unfused per-row NLL (golf.model.GPT.forward's math): fp32 softcapped logits, cross-entropy."""
    z = cap * torch.tanh(F.linear(h, weight.to(h.dtype)).float() / cap)
    return F.cross_entropy(z, targets, reduction="none")


@torch.library.custom_op("golf::softcap_ce", mutates_args=())
def _softcap_ce(h: Tensor, weight: Tensor, targets: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """(NLL (R,) fp32, d NLL / d logits (R, V) for a unit upstream gradient) of the rows of h (R, D)."""
    logits = h @ weight.t()
    R, V = logits.shape
    nll = torch.empty(R, device=h.device, dtype=torch.float32)
    grad = torch.empty_like(logits)
    _softcap_ce_kernel[(R,)](logits, targets.contiguous(), nll, grad, V, logits.stride(0), cap,
                             BLOCK_V=triton.next_power_of_2(V), num_warps=16)
    return nll, grad


@_softcap_ce.register_fake
def _(h, weight, targets, cap):
    return h.new_empty(h.size(0), dtype=torch.float32), h.new_empty(h.size(0), weight.size(0))


def _ce_setup(ctx, inputs, output):
    h, weight, _, _ = inputs
    ctx.save_for_backward(h, weight, output[1])


def _ce_backward(ctx, g_nll, _g_grad):
    h, weight, grad = ctx.saved_tensors
    g = g_nll.unsqueeze(1)  # (R, 1) fp32: the upstream gradient of each row, e.g. 1/R for a mean
    d_h = ((grad @ weight).float() * g).to(h.dtype)
    d_weight = grad.t() @ (h.float() * g).to(h.dtype)
    return d_h, d_weight, None, None


_softcap_ce.register_autograd(_ce_backward, setup_context=_ce_setup)


def fused_softcap_nll(h: Tensor, weight: Tensor, targets: Tensor, cap: float) -> Tensor:
    """Per-row NLL of the tied softcapped head for rows h (R, D) and targets (R,); see ``ce_supported``.
    Without autograd (scoring) there is no gradient to make ahead, so the unfused path runs."""
    if not (torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)):
        return reference_softcap_nll(h, weight, targets, cap)
    return _softcap_ce(h, weight.to(h.dtype), targets, float(cap))[0]


def fused_mlp(h: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """leaky(h @ w_upᵀ)² @ w_downᵀ over the last dim of h; the caller checks ``mlp_supported`` first."""
    h2 = h.reshape(-1, h.size(-1))
    if torch.is_grad_enabled() and (h.requires_grad or w_up.requires_grad or w_down.requires_grad):
        out = _mlp_train(h2, w_up, w_down)[0]
    else:
        out = _mlp_infer(h2, w_up, w_down)
    return out.view(*h.shape[:-1], w_down.size(0))
