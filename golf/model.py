"""The banked GPT of PR #1533 (spec §2, §3.1).

- All attention and MLP matrices live in four fp32 3-D banks, sliced by *physical* layer, so
  depth recurrence reuses weights and Muon can orthogonalize a whole bank in one batched call.
- Depth recurrence (#1493): layers loop_start..loop_end run num_loops+1 times once looping is on.
- U-net skips with sigmoid gates indexed by decoder position.
- Parallel residual lanes (#1477/#1533, GPT-J style two streams) from ``parallel_start_layer``;
  ``lanes_mix``: #1530/#1855's learned 2x2 cross-lane mix and mean merge (docs/record.md §8.2).
- Attention: QK RMSNorm, partial RoPE (16 of 64 dims), learnable per-head q-gain, causal GQA, and
  XSA (Exclusive Self-Attention, arXiv 2603.09078) removing the token's own value direction.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.attention import attention_fn, document_attention, document_ids
from golf.config import Config
from golf.runtime import GolfError, cpu_threads

log = logging.getLogger("golf")
BANK_NAMES = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
LANE_RESID_INIT = 1.1  # lanes_mix: each lane's residual multiplier at start (#1530), bf16-rounded at init
BOS_ID = 1  # every document starts with BOS (spec §1.2; golf.tokenizer writes it)
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
FP32_EPS = torch.finfo(torch.float32).eps  # the record's F.rms_norm(eps=None) uses fp32 eps (spec §2.3)


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMSNorm over the last dim, computed in fp32, returned in x's dtype."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + FP32_EPS)).to(x.dtype)


def virtual_layers(cfg: Config, looping: bool) -> list[int]:
    """Physical layer index of each virtual layer, in order (spec §2.7)."""
    n = cfg.num_layers
    if not looping or cfg.num_loops == 0:
        return list(range(n))
    loop = list(range(cfg.loop_start, cfg.loop_end + 1))
    return list(range(cfg.loop_start)) + loop * (cfg.num_loops + 1) + list(range(cfg.loop_end + 1, n))


def encoder_decoder(cfg: Config, looping: bool) -> tuple[list[int], list[int]]:
    layers = virtual_layers(cfg, looping)
    half = len(layers) // 2
    return layers[:half], layers[half:]


def num_skip_weights(cfg: Config) -> int:
    # Sized for the deeper (looped) plan; the shallow phase uses the first few (spec §2.7).
    enc, dec = encoder_decoder(cfg, looping=cfg.num_loops > 0)
    return min(len(enc), len(dec))


def skip_pairings(cfg: Config, looping: bool) -> list[dict]:
    """For each decoder position: its physical layer and the encoder slot whose output it merges."""
    enc, dec = encoder_decoder(cfg, looping)
    n_skip, stack, rows = num_skip_weights(cfg), list(range(len(enc))), []
    for pos, layer in enumerate(dec):
        src = stack.pop() if (pos < n_skip and stack) else None
        rows.append({"decoder_pos": pos, "layer": layer, "skip_from_encoder_slot": src})
    return rows


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


def softcap_nll(h: Tensor, weight: Tensor, targets: Tensor, cap: float, chunk_rows: int = 8192) -> Tensor:
    """Cross-entropy of the tied, softcapped head, fp32, in row chunks; only the NLL, no logits kept.

    z = cap·tanh((h Wᵀ)/cap) in fp32 as in ``forward_logits``; NLL = logsumexp(z) − z[target], which is
    ``F.cross_entropy(z, target)``. At most ``chunk_rows`` × V fp32 logits exist at once.
    h: (..., D) in the compute dtype; targets: (...) int64; returns (...) fp32.
    """
    h2, t = h.reshape(-1, h.size(-1)), targets.reshape(-1)
    w = weight.to(h.dtype)
    parts = []
    for i in range(0, h2.size(0), chunk_rows):
        z = F.linear(h2[i:i + chunk_rows], w).float()  # (rows, V)
        z = cap * torch.tanh(z / cap)
        parts.append(torch.logsumexp(z, -1) - z.gather(1, t[i:i + chunk_rows, None]).squeeze(1))
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).view(targets.shape)


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
    def __init__(self, cfg: Config, layer: int):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.rope_dims, self.rope_base, self.train_seq_len = cfg.rope_dims, cfg.rope_base, cfg.train_seq_len
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

    def __init__(self, cfg: Config, layer: int):
        super().__init__()
        d = cfg.model_dim
        self.layer = layer
        self.ln_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.fused_mlp = False  # set by GPT.set_fused_kernels
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.attn = Attention(cfg, layer)

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


class GPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        L, D, KV, Hm = cfg.num_layers, cfg.model_dim, cfg.kv_dim, cfg.mlp_hidden
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.qo_bank = nn.Parameter(torch.empty(2 * L, D, D))  # [i] = W_q, [L+i] = W_o
        self.kv_bank = nn.Parameter(torch.empty(2 * L, KV, D))  # [i] = W_k, [L+i] = W_v
        self.mlp_up_bank = nn.Parameter(torch.empty(L, Hm, D))
        self.mlp_down_bank = nn.Parameter(torch.empty(L, D, Hm))
        n_skip = num_skip_weights(cfg)
        self.skip_weights = nn.Parameter(torch.ones(n_skip, D))
        self.skip_gates = nn.Parameter(torch.zeros(n_skip, D))
        if cfg.parallel_mode == "lanes_mix":  # #1530: per layer, [from output][to lane] and each lane's λ
            self.parallel_post_lambdas = nn.Parameter(torch.ones(L, 2, 2))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((L, 2), LANE_RESID_INIT))
        else:
            self.lane_merge = nn.Parameter(torch.tensor(0.5))
        if cfg.smear_gate:  # identity at start: both zero (#1667); the record's names and shapes
            self.smear_gate = nn.Linear(cfg.gate_dims, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(L))
        self.looping = False
        self.capture: Callable | None = None  # (name, input) hook for GPTQ Hessians
        self.weight_hook: Callable | None = None  # (virtual slot, layer weights) -> weights: LoRA TTT (golf.lora_ttt)
        self.compute_dtype = torch.float32
        self.fused_ce = False  # set_fused_kernels
        self.attention_backend = "math"
        self._attn = attention_fn("math")
        # attention_mask: document; GPTQ calibration turns it off, as #1855 calibrates on causal rows
        self.document_mask = cfg.attention_mask == "document"
        self.segment_len = cfg.train_seq_len  # a document is attended in pieces of this many tokens (#1855)

    # --- set-up ----------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Spec §2.5: same draw order as the record, on CPU, seeded by SEED.

        On one CPU thread: the orthogonal draws' QR rounds differently with the thread count (about
        0.05% of the bf16 bank entries differ between 1 and 2 threads), and one thread is what the
        record's torchrun ranks ran on (OMP_NUM_THREADS=1), so a run starts from the same weights on
        every host, under ``golf train`` and torchrun alike."""
        cfg, L = self.cfg, self.cfg.num_layers
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            with cpu_threads(1):
                self.tok_emb.weight.normal_(0.0, 1.0)  # nn.Embedding's own default fill comes first
                if cfg.smear_gate:  # then the record's SmearGate nn.Linear draws its default fill (zeroed below)
                    nn.init.kaiming_uniform_(self.smear_gate.weight, a=math.sqrt(5))
                self.tok_emb.weight.normal_(0.0, cfg.tied_embed_init_std)
                for i in range(L):
                    nn.init.orthogonal_(self.qo_bank[i])
                    nn.init.orthogonal_(self.kv_bank[i])
                    nn.init.orthogonal_(self.kv_bank[L + i])
                    if not cfg.init_mlp_banks_last:
                        nn.init.orthogonal_(self.mlp_up_bank[i])
                for i in range(L if cfg.init_mlp_banks_last else 0):
                    nn.init.orthogonal_(self.mlp_up_bank[i])
            self.qo_bank[L:].zero_()  # W_o and W_down start at zero (the 1/sqrt(2L) scale is a no-op, §9.12)
            self.mlp_down_bank.zero_()
            if cfg.smear_gate:
                self.smear_gate.weight.zero_()
            for p in self.parameters():  # the record casts the model to bf16 before restoring fp32 (λ 1.1 rounds)
                p.copy_(p.bfloat16().float())
        finally:
            torch.random.set_rng_state(gen_state)
        self.use_embedding_dtype()

    def use_embedding_dtype(self) -> None:
        """tok_emb in the dtype the record trains it in: bf16 (spec §9.11), fp32 under fix_embed_fp32."""
        if not self.cfg.fix_embed_fp32:
            self.tok_emb.to(torch.bfloat16)

    def set_looping(self, flag: bool) -> None:
        self.looping = bool(flag)

    def set_attention_backend(self, name: str) -> None:
        self.attention_backend = name
        self._attn = attention_fn(name)

    def set_fused_kernels(self, mlp: bool, ce: bool, qkv: bool) -> None:
        """``fused_mlp``, ``fused_ce``: golf.kernels' Triton kernels where CUDA and Triton are (else unfused);
        ``fused_qkv``: one GEMM for the q, k and v projections (any device)."""
        for block in self.blocks:
            block.fused_mlp = bool(mlp)
            block.attn.fused_qkv = bool(qkv)
        self.fused_ce = bool(ce)
        if mlp or ce:
            load_kernels()

    def fused_kernels(self) -> dict[str, bool]:
        """Which fusion switches are in effect (the params keys ask; CUDA and Triton decide for golf.kernels')."""
        return {"fused_mlp": any(block.fused_mlp for block in self.blocks), "fused_ce": self.fused_ce,
                "fused_qkv": any(block.attn.fused_qkv for block in self.blocks)}

    def layer_weights(self, i: int) -> tuple:
        L, dt = self.cfg.num_layers, self.compute_dtype
        return (self.qo_bank[i].to(dt), self.kv_bank[i].to(dt), self.kv_bank[L + i].to(dt),
                self.qo_bank[L + i].to(dt), self.mlp_up_bank[i].to(dt), self.mlp_down_bank[i].to(dt))

    def slot_weights(self, slot: int, layer: int) -> tuple:
        """Weights of virtual layer ``slot`` (physical ``layer``), through ``weight_hook`` when one is set."""
        w = self.layer_weights(layer)
        return w if self.weight_hook is None else self.weight_hook(slot, w)

    # --- forward ---------------------------------------------------------------------------
    def smear(self, e: Tensor, ids: Tensor) -> Tensor:
        """SmearGate (#1667): e_t + λ·σ(W·e_t[:gate_dims])·e_{t−1}, with no term where token t is BOS
        (#1851: else a document's first token would read the previous document's last one)."""
        prev = F.pad(e[:, :-1], (0, 0, 1, 0))  # e_{t-1}; zeros before the row's first token
        gate = self.smear_lambda.to(e.dtype) * torch.sigmoid(F.linear(e[..., :self.cfg.gate_dims],
                                                                       self.smear_gate.weight.to(e.dtype)))  # (B, T, 1)
        return e + gate * (ids != BOS_ID).unsqueeze(-1).to(e.dtype) * prev

    def hidden(self, ids: Tensor, start: int = 0) -> Tensor:
        """Final-norm hidden states (B, T − start, D) of positions start..T−1, in the compute dtype.

        All T positions run through every layer whose output later feeds attention's keys and
        values. The rest runs on positions ``start:`` alone: the last virtual layer's queries, its
        attention output and MLP (``Attention.forward``'s ``q_start``); the MLP lane from its split
        (``parallel_mode: lanes`` — it reads only itself and MLPs, never attention); the lane merge
        and the final norm. At the record config that is the last four virtual layers' MLPs and the
        last layer's attention: a sliding window that scores its last 64 of 2048 positions skips them
        for the other 1984. ``start`` = 0 is the full forward, unchanged.
        """
        cfg, capture, attn = self.cfg, self.capture, self._attn
        if self.document_mask:
            attn = document_attention(document_ids(ids, BOS_ID, self.segment_len))
        e = self.tok_emb(ids).to(self.compute_dtype)
        x = rms_norm(self.smear(e, ids) if cfg.smear_gate else e)
        x0 = x
        enc, dec = encoder_decoder(cfg, self.looping)
        skips: list[Tensor] = []
        for slot, layer in enumerate(enc):
            x = self.blocks[layer](x, x0, self.slot_weights(slot, layer), attn, capture)
            skips.append(x)
        n_skip = self.skip_weights.size(0)
        lane1 = None  # the MLP lane once lanes are split; x is then the attention lane
        mixed_lanes = cfg.parallel_mode == "lanes_mix"
        for pos, layer in enumerate(dec):
            block = self.blocks[layer]
            tail = start if pos == len(dec) - 1 else 0  # the last layer returns positions start.. only
            parallel = layer >= cfg.parallel_start_layer
            if mixed_lanes and parallel and lane1 is None:
                lane1 = x  # #1530: the lanes split before this layer's skip, which joins the attention lane only
            if pos < n_skip and skips:
                s = self.skip_weights[pos].to(x.dtype) * skips.pop()
                if cfg.skip_gates_enabled:
                    x = torch.lerp(s, x, torch.sigmoid(self.skip_gates[pos]).to(x.dtype))
                else:
                    x = x + s
            w = self.slot_weights(len(enc) + pos, layer)
            if cfg.parallel_mode == "lanes" and (parallel or lane1 is not None):
                if lane1 is None:
                    lane1 = x[:, start:].clone()  # position-wise from here on
                x_in = block.mix(x, x0)
                x = x_in[:, tail:] + block.attn_out(x_in, w, attn, capture, tail)
                lane1 = lane1 + block.mlp_out(lane1, w, capture)
            elif mixed_lanes and lane1 is not None:
                x, lane1 = self.mixed_lanes_step(block, x, lane1, x0, w, attn, capture, tail)
            elif cfg.parallel_mode == "single_stream" and parallel:
                x = block.forward_single_stream(x, x0, w, attn, capture, tail)
            else:
                x = block(x, x0, w, attn, capture, tail)
        if lane1 is not None and mixed_lanes:
            x = 0.5 * (x + lane1)  # #1530's mean merge
        elif lane1 is not None:
            lam = self.lane_merge.to(x.dtype)
            x = lam * x + (1 - lam) * lane1
        x = rms_norm(x)
        if capture is not None:
            capture("tok_emb", x)
        return x

    def mixed_lanes_step(self, block: Block, a: Tensor, m: Tensor, x0: Tensor, w: tuple, attn: Callable, capture,
                         tail: int = 0) -> tuple[Tensor, Tensor]:
        """One #1530 layer on the two lanes: attention reads the resid-mixed attention lane, the MLP the
        MLP lane; each lane keeps λ times its *raw* self and takes a learned share of both outputs
        (``parallel_post_lambdas[layer]`` is [from output][to lane], all ones at start)."""
        a_out = block.attn_out(block.mix(a, x0), w, attn, capture, tail)
        a, m = a[:, tail:], m[:, tail:]
        m_out = block.mlp_out(m, w, capture)
        lam = self.parallel_resid_lambdas[block.layer].to(a.dtype)
        post = self.parallel_post_lambdas[block.layer].to(a.dtype)
        return (lam[0] * a + post[0, 0] * a_out + post[1, 0] * m_out,
                lam[1] * m + post[0, 1] * a_out + post[1, 1] * m_out)

    def forward_logits(self, ids: Tensor) -> Tensor:
        """Softcapped fp32 logits (B, T, V)."""
        return self.head(self.hidden(ids))

    def head(self, h: Tensor) -> Tensor:
        """The tied, softcapped head: fp32 logits of final-norm hidden states."""
        logits = F.linear(h, self.tok_emb.weight.to(h.dtype)).float()
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(logits / cap)

    def nll_at(self, ids: Tensor, targets: Tensor, start: int = 0) -> Tensor:
        """Per-position NLL (B, T − start) of ``targets[:, start:]``: what scoring needs, no (B, T, V) logits.

        Equal to ``forward(ids, targets, reduction="none")[:, start:]``; ``start`` is a Python int,
        so a compiled scorer sees static shapes (one graph per value).
        """
        h = self.hidden(ids, start)  # (B, T - start, D)
        return softcap_nll(h, self.tok_emb.weight, targets[:, start:], self.cfg.logit_softcap)

    def forward(self, ids: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        h = self.hidden(ids)
        if self.fused_ce and kernels.ce_supported(h, self.tok_emb.weight):
            nll = kernels.fused_softcap_nll(h.flatten(0, 1), self.tok_emb.weight, targets.flatten(),
                                            self.cfg.logit_softcap)
        else:
            nll = F.cross_entropy(self.head(h).flatten(0, 1), targets.flatten(), reduction="none")
        nll = nll.view_as(targets)
        return nll.mean() if reduction == "mean" else nll

    # --- parameter groups (spec §4.1) --------------------------------------------------------
    def bank_params(self) -> list[nn.Parameter]:
        return [getattr(self, n) for n in BANK_NAMES]

    def scalar_params(self) -> list[nn.Parameter]:
        banks = {id(p) for p in self.bank_params()} | {id(self.tok_emb.weight)}
        return [p for p in self.parameters() if id(p) not in banks]


def build_model(cfg: Config, device: torch.device | str = "cpu", attention_backend: str | None = None,
                init: bool = True) -> GPT:
    """The model on ``device``. ``init=False`` skips the seeded draw of the initial weights (the
    orthogonal QRs): for a model whose every tensor is loaded next (strict), as quantize and evaluate do."""
    from golf.attention import select_backend

    model = GPT(cfg)
    if init:
        model.reset_parameters(cfg.seed)
    else:
        model.use_embedding_dtype()
    device = torch.device(device)
    model.to(device)
    model.compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.set_attention_backend(select_backend(attention_backend or cfg.attention_backend, device))
    usable = (cfg.fused_mlp or cfg.fused_ce) and device.type == "cuda" and load_kernels().triton is not None
    for key in ("fused_mlp", "fused_ce"):
        if getattr(cfg, key) and not usable:
            log.warning("%s needs CUDA and Triton; the unfused PyTorch path runs here (same math)", key)
    model.set_fused_kernels(mlp=cfg.fused_mlp and usable, ce=cfg.fused_ce and usable, qkv=cfg.fused_qkv)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- checkpoint layouts: the banked state dict <-> per-layer (unbanked) names ----------------

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


def load_state_dict_checked(model: GPT, sd: dict[str, Tensor]) -> None:
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


def save_checkpoint(model: GPT, path, layout: str = "banked") -> None:
    from golf.runtime import atomic_torch_save

    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if layout == "unbanked":
        sd = unbank_state_dict(sd, model.cfg.num_layers)
    elif layout != "banked":
        raise ValueError(f"layout must be 'banked' or 'unbanked', got {layout!r}")
    atomic_torch_save(sd, path)


def load_checkpoint(model: GPT, path) -> None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GolfError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # a truncated or foreign file
        raise GolfError(f"checkpoint {str(path)!r} could not be read as a torch state dict: {exc}") from None
    load_state_dict_checked(model, sd)


def model_info(cfg: Config) -> dict:
    model = GPT(cfg)
    return {
        "n_params": count_params(model),
        "banks": {n: list(getattr(model, n).shape) for n in BANK_NAMES},
        "n_state_dict_tensors": len(model.state_dict()),
        "virtual_layers": {"plain": virtual_layers(cfg, False), "looped": virtual_layers(cfg, True)},
        "encoder_decoder": {
            phase: dict(zip(("encoder", "decoder"), encoder_decoder(cfg, flag)))
            for phase, flag in (("plain", False), ("looped", True))
        },
        "skip_pairings_looped": skip_pairings(cfg, True),
        "parallel_mode": cfg.parallel_mode,
        "parallel_start_layer": cfg.parallel_start_layer,
    }
