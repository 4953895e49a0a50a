"""The banked GPT of PR #1533 (§2, §3.1), assembled from golf.blocks: the four weight banks, depth
recurrence (golf.layer_plan), U-net skips with sigmoid gates, parallel residual lanes (§2.6; ``lanes_mix``
§8.2), SmearGate, the tied softcapped head; and ``build_model``, ``model_info``.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.attention import attention_fn, document_attention, document_ids
from golf.banking import BANK_NAMES
from golf.blocks import Block, load_kernels, rms_norm
from golf.config import Config
from golf.config_sections import ModelConfig
from golf.layer_plan import encoder_decoder, num_skip_weights, skip_pairings, virtual_layers
from golf.runtime import cpu_threads

log = logging.getLogger("golf")
LANE_RESID_INIT = 1.1  # lanes_mix: each lane's residual multiplier at start (#1530), bf16-rounded at init
BOS_ID = 1  # every document starts with BOS (spec §1.2; golf.tokenizer writes it)


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


class GPT(nn.Module):
    """The banked GPT of its model section (docs/record.md §2); ``train_seq_len``: the length RoPE scales
    from and documents are attended in pieces of; ``fix_embed_fp32``: the §9.11 fix."""

    def __init__(self, cfg: ModelConfig, train_seq_len: int = 2048, fix_embed_fp32: bool = False):
        super().__init__()
        self.cfg = cfg
        self.fix_embed_fp32 = fix_embed_fp32
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
        self.blocks = nn.ModuleList(Block(cfg, i, train_seq_len) for i in range(L))
        self.looping = False
        self.capture: Callable | None = None  # (name, input) hook for GPTQ Hessians
        self.weight_hook: Callable | None = None  # (virtual slot, layer weights) -> weights: LoRA TTT (golf.lora_ttt)
        self.compute_dtype = torch.float32
        self.fused_ce = False  # set_fused_kernels
        self.attention_backend = "math"
        self._attn = attention_fn("math")
        # attention_mask: document; GPTQ calibration turns it off, as #1855 calibrates on causal rows
        self.document_mask = cfg.attention_mask == "document"
        self.segment_len = train_seq_len  # a document is attended in pieces of this many tokens (#1855)

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
        if not self.fix_embed_fp32:
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
        if lane1 is not None:
            if mixed_lanes:
                x = 0.5 * (x + lane1)  # #1530's mean merge
            else:
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
        if self.fused_ce and load_kernels().ce_supported(h, self.tok_emb.weight):  # loaded by set_fused_kernels
            nll = load_kernels().fused_softcap_nll(h.flatten(0, 1), self.tok_emb.weight, targets.flatten(),
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

    model = GPT(cfg.model, cfg.train_seq_len, cfg.fix_embed_fp32)
    if init:
        model.reset_parameters(cfg.seed)
    else:
        model.use_embedding_dtype()
    device = torch.device(device)
    model.to(device)
    model.compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.set_attention_backend(select_backend(attention_backend or cfg.attention_backend, device))
    usable = (cfg.fused_mlp or cfg.fused_ce) and device.type == "cuda" and load_kernels().triton is not None
    # each key read by name, not getattr(cfg, key): golf.specialize folds such reads into constants
    if cfg.fused_mlp and not usable:
        log.warning("fused_mlp needs CUDA and Triton; the unfused PyTorch path runs here (same math)")
    if cfg.fused_ce and not usable:
        log.warning("fused_ce needs CUDA and Triton; the unfused PyTorch path runs here (same math)")
    model.set_fused_kernels(mlp=cfg.fused_mlp and usable, ce=cfg.fused_ce and usable, qkv=cfg.fused_qkv)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_info(cfg: Config) -> dict:
    model = GPT(cfg.model, cfg.train_seq_len)
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
