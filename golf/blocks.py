"""One layer of the banked GPT (§2.3, §2.4): attention with QK RMSNorm, partial RoPE, per-head q-gain,
causal GQA and XSA (Exclusive Self-Attention, arXiv 2603.09078), the MLP, and the block that mixes
them into the residual stream. A block holds only its control parameters; matrices come from GPT's banks.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.config_sections import ModelConfig

FP32_EPS = torch.finfo(torch.float32).eps  # the record's F.rms_norm(eps=None) uses fp32 eps (spec §2.3)

# golf.kernels (Triton), imported by load_kernels only when a fused switch asks for it: a submission's
# train_gpt.py without fused_mlp / fused_ce does not carry it (golf.submission).
kernels = None


def load_kernels():
    """golf.kernels, imported on first use (into this module's ``kernels``)."""
    global kernels
    if kernels is None:
        from golf import kernels as module

        kernels = module
    return kernels


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMSNorm over the last dim, computed in fp32, returned in x's dtype."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + FP32_EPS)).to(x.dtype)


def apply_partial_rope(x: Tensor, rope_dims: int, base: float, train_seq_len: int, yarn: bool = True) -> Tensor:
    """Half-split RoPE on the first ``rope_dims`` dims of each head. x: (B, T, H, hd).
    ``yarn``: rescale the base beyond ``train_seq_len`` (#1533); #1855 runs without (ROPE_YARN=0)."""
    T = x.size(1)
    if yarn and T > train_seq_len:  # NTK-aware base scaling beyond the training length
        base = base * (T / train_seq_len) ** (rope_dims / (rope_dims - 2))
    half = rope_dims // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) * 2 / rope_dims)
    angles = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # (T, half)
    cos = angles.cos().to(x.dtype)[None, :, None, :]
    sin = angles.sin().to(x.dtype)[None, :, None, :]
    x1, x2, rest = x[..., :half], x[..., half:rope_dims], x[..., rope_dims:]
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos, rest), dim=-1)


def exclusive_self_attention(y: Tensor, v: Tensor) -> Tensor:
    """XSA: remove from each head's output its component along the token's own value vector.

    y: (B, T, H, hd) attention output; v: (B, T, KV, hd). Query head h reads KV head h // (H/KV).
    """
    B, T, H, hd = y.shape
    kv = v.size(2)
    v_hat = F.normalize(v.float(), dim=-1, eps=1e-12).to(y.dtype)[:, :, :, None, :]  # (B,T,KV,1,hd)
    yg = y.view(B, T, kv, H // kv, hd)
    yg = yg - (yg * v_hat).sum(-1, keepdim=True) * v_hat
    return yg.view(B, T, H, hd)


def suffix_attention(q: Tensor, k: Tensor, v: Tensor, doc: Tensor | None = None) -> Tensor:
    """Causal GQA attention of the last Tq queries over all Tk keys, as an explicit fp32 softmax.

    q: (B, Tq, H, hd), query i at position Tk − Tq + i; k, v: (B, Tk, KV, hd). Equal to the last Tq rows
    of the full causal attention; small (Tq·Tk scores a head), so one formula serves every backend
    (SDPA's is_causal aligns the mask top-left when Tq ≠ Tk). ``doc`` (B, Tk): document index of each
    position, to keep attention inside documents (``attention_mask: document``).
    """
    B, Tq, H, hd = q.shape
    Tk, rep = k.size(1), H // k.size(2)
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / hd**0.5  # (B, H, Tq, Tk)
    mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
    if doc is not None:
        mask = mask & (doc[:, Tk - Tq:, None] == doc[:, None, :])[:, None]  # (B, 1, Tq, Tk)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshd->bthd", probs, v.float()).to(q.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, train_seq_len: int):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.rope_dims, self.rope_base, self.train_seq_len = cfg.rope_dims, cfg.rope_base, train_seq_len
        self.rope_yarn = cfg.rope_yarn
        self.use_xsa = layer >= cfg.num_layers - cfg.xsa_last_n
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        # Sparse output gate (#1787): zero weights, so every head starts at half its output (σ(0) = 0.5).
        self.attn_gate_w = nn.Parameter(torch.zeros(cfg.num_heads, cfg.gate_dims)) if cfg.attn_out_gate else None
        self.gate_scale, self.gate_dims = cfg.attn_gate_scale, cfg.gate_dims
        self.fused_qkv = False  # set by GPT.set_fused_kernels

    def forward(self, h: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, attn: Callable,
                capture: Callable | None, q_start: int = 0) -> Tensor:
        """Output (B, T − q_start, D) of positions q_start..T−1; keys and values come from all T."""
        B, T, _ = h.shape
        if capture is not None:
            capture(f"blocks.{self.layer}.attn.c_q", h)
        # one GEMM reads h once; each output is the same dot product. Plain tensors only: LoRA TTT's
        # adapted weights (golf.lora_ttt) take part in F.linear alone.
        if self.fused_qkv and all(isinstance(w, Tensor) for w in (wq, wk, wv)):
            q, k, v = F.linear(h, torch.cat((wq, wk, wv))).split((wq.size(0), wk.size(0), wv.size(0)), -1)
        else:
            q, k, v = F.linear(h, wq), F.linear(h, wk), F.linear(h, wv)
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm before RoPE
        q = apply_partial_rope(q, self.rope_dims, self.rope_base, self.train_seq_len, self.rope_yarn)
        k = apply_partial_rope(k, self.rope_dims, self.rope_base, self.train_seq_len, self.rope_yarn)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        if q_start:
            q, v_own = q[:, q_start:], v[:, q_start:]
            y = suffix_attention(q, k, v, getattr(attn, "doc", None))  # (B, T - q_start, H, hd)
        else:
            v_own = v
            y = attn(q, k, v)  # (B, T, H, hd), causal GQA
        if self.use_xsa:
            y = exclusive_self_attention(y, v_own)
        if self.attn_gate_w is not None:  # per head: y_h · σ(s · W_g · h[:gate_dims])
            g = torch.sigmoid(self.gate_scale * F.linear(h[:, q_start:, :self.gate_dims], self.attn_gate_w.to(h.dtype)))
            y = y * g.unsqueeze(-1)
        y = y.reshape(B, T - q_start, self.num_heads * self.head_dim)
        if capture is not None:
            capture(f"blocks.{self.layer}.attn.proj", y)
        return F.linear(y, wo)


def mlp(h: Tensor, w_up: Tensor, w_down: Tensor, layer: int, capture: Callable | None,
        fused: bool = False) -> Tensor:
    if fused and capture is None and isinstance(w_up, Tensor) and isinstance(w_down, Tensor) \
            and kernels.mlp_supported(h, w_up):  # LoRA TTT's adapted weights: the unfused path
        return kernels.fused_mlp(h, w_up, w_down)
    if capture is not None:
        capture(f"blocks.{layer}.mlp.fc", h)
    hidden = F.leaky_relu(F.linear(h, w_up), 0.5).square()
    if capture is not None:
        capture(f"blocks.{layer}.mlp.proj", hidden)
    return F.linear(hidden, w_down)


class Block(nn.Module):
    """Holds only the per-layer control parameters; matrices come from the banks."""

    def __init__(self, cfg: ModelConfig, layer: int, train_seq_len: int):
        super().__init__()
        d = cfg.model_dim
        self.layer = layer
        self.ln_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.fused_mlp = False  # set by GPT.set_fused_kernels
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.attn = Attention(cfg, layer, train_seq_len)

    def mix(self, x: Tensor, x0: Tensor) -> Tensor:
        m = self.resid_mix.to(x.dtype)
        return m[0] * x + m[1] * x0

    def attn_out(self, x_in: Tensor, w: tuple, attn: Callable, capture, q_start: int = 0) -> Tensor:
        h = rms_norm(x_in) * self.ln_scale
        return self.attn_scale.to(x_in.dtype) * self.attn(h, *w[:4], attn, capture, q_start)

    def mlp_out(self, x: Tensor, w: tuple, capture) -> Tensor:
        h = rms_norm(x) * self.ln_scale
        return self.mlp_scale.to(x.dtype) * mlp(h, w[4], w[5], self.layer, capture, self.fused_mlp)

    def forward(self, x: Tensor, x0: Tensor, w: tuple, attn: Callable, capture, q_start: int = 0) -> Tensor:
        """``q_start``: return positions q_start.. only (attention still reads every position)."""
        x_in = self.mix(x, x0)
        x = x_in[:, q_start:] + self.attn_out(x_in, w, attn, capture, q_start)
        return x + self.mlp_out(x, w, capture)

    def forward_single_stream(self, x: Tensor, x0: Tensor, w: tuple, attn: Callable, capture,
                              q_start: int = 0) -> Tensor:
        """#1493's "parallel residual": attention and MLP both read x_in and are summed."""
        x_in = self.mix(x, x0)
        tail = x_in[:, q_start:]
        return tail + self.attn_out(x_in, w, attn, capture, q_start) + self.mlp_out(tail, w, capture)
