"""What a config may hold: each key's range or choices, the rules that tie keys together, and the
notes a run gets for valid settings that quietly switch a feature off (docs/config.md).

These read a config's keys by name only, so golf.config (the tree and its loader) builds on them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable


class ConfigError(ValueError):
    """A params file or override names an unknown key or gives a value of the wrong type or range."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key  # the params key at fault, where there is one


CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "compile": ("auto", "on", "off"),
    "attention_backend": ("auto", "fa3", "fa4", "sdpa", "math"),
    "parallel_mode": ("lanes", "lanes_mix", "single_stream", "none"),
    "attention_mask": ("causal", "document"),
    "muon_ns_coefficients": ("record", "polar_express"),
    "compressor": ("brotli", "lzma", "rans", "best"),
}


def _number(v) -> str:
    """A bound as a user would type it: whole numbers in full (a seed's 2**64 - 1), others short."""
    return str(v) if isinstance(v, int) else f"{v:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take: ``lo``..``hi``, each end closed unless marked open."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        lo = "(-inf" if self.lo is None else ("(" if self.lo_open else "[") + _number(self.lo)
        hi = "inf)" if self.hi is None else _number(self.hi) + (")" if self.hi_open else "]")
        return f"{lo}, {hi}"


_COUNT = Range(1)  # a size or count that must exist: >= 1
_NONNEG = Range(0)  # 0 allowed (0 = off / none / uncapped where the comment says so)
_POSITIVE = Range(0, lo_open=True)
_FRACTION = Range(0, 1)
_DECAY = Range(0, 1, hi_open=True)  # momenta and betas: 1 would never forget

# Every int and float key, its allowed range; cross-key rules follow in `validate`.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**64 - 1), "vocab_size": Range(2, 2**16),  # uint16 shards; BOS is id 1
    "train_seq_len": _COUNT, "eval_seq_len": _COUNT, "train_batch_tokens": _COUNT, "val_batch_tokens": _COUNT,
    "grad_accum_total": _COUNT, "max_val_tokens": _NONNEG, "iterations": _NONNEG,
    "max_wallclock_seconds": _NONNEG, "gptq_reserve_seconds": _NONNEG, "warmup_steps": _NONNEG,
    "val_loss_every": _NONNEG, "train_log_every": _NONNEG,
    "num_layers": _COUNT, "model_dim": _COUNT, "num_heads": _COUNT,
    "num_kv_heads": _COUNT, "mlp_mult": _POSITIVE, "tied_embed_init_std": _NONNEG, "logit_softcap": _POSITIVE,
    "rope_base": _POSITIVE, "rope_dims": _NONNEG, "qk_gain_init": Range(), "xsa_last_n": _NONNEG,
    "num_loops": _NONNEG, "loop_start": _NONNEG, "loop_end": _NONNEG, "enable_looping_at": _FRACTION,
    "parallel_start_layer": _NONNEG,
    "matrix_lr": _NONNEG, "tied_embed_lr": _NONNEG, "scalar_lr": _NONNEG, "muon_momentum": _DECAY,
    "muon_momentum_warmup_start": _DECAY, "muon_momentum_warmup_steps": _NONNEG, "muon_backend_steps": _COUNT,
    "muon_wd": _NONNEG, "embed_wd": _NONNEG, "adam_wd": _NONNEG, "beta1": _DECAY, "beta2": _DECAY,
    "adam_eps": _POSITIVE, "grad_clip_norm": _POSITIVE, "warmdown_frac": Range(0, 1, lo_open=True),
    "min_lr": _FRACTION, "ema_decay": _FRACTION,
    "matrix_bits": Range(2, 8), "matrix_clip_sigmas": _POSITIVE, "embed_bits": Range(2, 8),  # int8 storage
    "embed_clip_sigmas": _POSITIVE, "gptq_calibration_batches": _COUNT, "gptq_damp": _POSITIVE,
    "gptq_block_size": _COUNT, "artifact_limit_bytes": _COUNT, "quant_passthrough_numel": _NONNEG,
    "lqer_rank": _NONNEG, "lqer_top_k": _NONNEG, "attn_clip_sigmas": _NONNEG, "mlp_clip_sigmas": _NONNEG,
    "eval_stride": _COUNT, "eval_batch_seqs": _COUNT, "ttt_lr": _NONNEG, "ttt_momentum": _DECAY,
    "ttt_epochs": _NONNEG, "ttt_chunk_tokens": _COUNT, "ttt_batch_seqs": _COUNT, "ttt_grad_clip": _POSITIVE,
    "ttt_freeze_blocks": _NONNEG, "ttt_lora_rank": _COUNT, "ttt_lora_alpha": _NONNEG, "ttt_lora_lr": _NONNEG,
    "ttt_lora_beta2": _DECAY, "ttt_lora_wd": _NONNEG, "ttt_lora_chunk": _COUNT, "ttt_lora_batch_docs": _COUNT,
    "ttt_phase_docs": _NONNEG, "ttt_phases": _COUNT, "ttt_global_lr": _NONNEG, "ttt_global_momentum": _DECAY,
    "ttt_global_epochs": _NONNEG, "ttt_global_chunk_tokens": _COUNT,
    "attn_gate_scale": _POSITIVE, "gate_dims": _COUNT, "muon_wd_taper_at": Range(0, 1, hi_open=True),
    "muon_wd_taper_final": _NONNEG,
}


def _cross_key_problems(cfg) -> Iterable[tuple[str, str]]:
    """(key, what is wrong) for every rule that ties two or more keys together."""
    if cfg.model_dim % cfg.num_heads:
        yield "model_dim", f"({cfg.model_dim}) must be divisible by num_heads ({cfg.num_heads})"
    if cfg.num_heads % cfg.num_kv_heads:
        yield "num_kv_heads", f"({cfg.num_kv_heads}) must divide num_heads ({cfg.num_heads})"
    if cfg.rope_dims > cfg.head_dim or cfg.rope_dims % 2:
        yield "rope_dims", f"({cfg.rope_dims}) must be even and at most head_dim ({cfg.head_dim})"
    if not cfg.loop_start <= cfg.loop_end < cfg.num_layers:
        yield "loop_start", (f"need loop_start ({cfg.loop_start}) <= loop_end ({cfg.loop_end}) < num_layers "
                             f"({cfg.num_layers})")
    if cfg.mlp_hidden < 1:
        yield "mlp_mult", f"({cfg.mlp_mult}) x model_dim ({cfg.model_dim}) leaves no MLP hidden unit"
    if cfg.train_batch_tokens % (cfg.grad_accum_total * cfg.train_seq_len):
        yield "train_batch_tokens", (f"({cfg.train_batch_tokens}) must split into grad_accum_total "
                                     f"({cfg.grad_accum_total}) micro-batches of whole train_seq_len "
                                     f"({cfg.train_seq_len})-token sequences")
    if (cfg.smear_gate or cfg.attn_out_gate) and cfg.gate_dims > cfg.model_dim:
        yield "gate_dims", f"({cfg.gate_dims}) must be at most model_dim ({cfg.model_dim})"
    if cfg.lqer_rank and not cfg.lqer_top_k:
        yield "lqer_top_k", f"(0) gives no matrix the rank-{cfg.lqer_rank} LQER correction: 1 or more, or lqer_rank 0"
    if cfg.pack_documents and cfg.attention_mask != "document":
        yield "pack_documents", "(true) packs documents into one row, which needs attention_mask: document"
    if cfg.eval_stride > cfg.eval_seq_len:
        yield "eval_stride", f"({cfg.eval_stride}) must be in 1..eval_seq_len ({cfg.eval_seq_len})"
    if cfg.ttt_freeze_blocks > cfg.num_layers:
        yield "ttt_freeze_blocks", f"({cfg.ttt_freeze_blocks}) must be at most num_layers ({cfg.num_layers})"
    if 0 < cfg.max_wallclock_seconds <= cfg.gptq_reserve_seconds:
        yield "gptq_reserve_seconds", (f"({cfg.gptq_reserve_seconds}) must be less than max_wallclock_seconds "
                                       f"({cfg.max_wallclock_seconds}), or no time is left to train")


def inert_settings(cfg) -> list[str]:
    """Valid settings that switch a feature off without saying so, each as a line for the train log."""
    notes = []
    if cfg.parallel_mode != "none" and cfg.parallel_start_layer >= cfg.num_layers:
        notes.append(f"parallel_start_layer ({cfg.parallel_start_layer}) is not below num_layers ({cfg.num_layers}): "
                     f"no layer runs the parallel_mode {cfg.parallel_mode!r}")
    share = ema_init_share(cfg.ema_decay, cfg.iterations)
    if cfg.iterations and share > EMA_INIT_SHARE_WARN:
        at_most = math.floor(1000 * EMA_INIT_SHARE_WARN ** (1 / cfg.iterations)) / 1000  # under the limit
        notes.append(f"ema_decay ({cfg.ema_decay}) over at most {cfg.iterations} step{'s' * (cfg.iterations != 1)} "
                     f"leaves at least {share:.0%} of the initial weights in the saved model: ema_decay {at_most:.3f} "
                     f"or lower keeps it under {EMA_INIT_SHARE_WARN:.0%}")
    return notes


EMA_INIT_SHARE_WARN = 0.05  # the initial weights' share of the EMA above which a run is told


def ema_init_share(decay: float, steps: int) -> float:
    """The initial weights' share of a plain EMA after ``steps`` updates (0 when there is no averaging)."""
    return decay ** steps if decay > 0 else 0.0


def validate(cfg) -> None:
    """Every key's choices or range, then every cross-key rule; the first problem raises, naming the key."""
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"params key {key!r}: expected one of {choices}, got {getattr(cfg, key)!r}", key)
    for key, allowed in RANGES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"params key {key!r}: expected a value in {allowed}, got {getattr(cfg, key)!r}", key)
    for key, problem in _cross_key_problems(cfg):
        raise ConfigError(f"params key {key!r}: {problem}", key)


def validate_for_world(cfg, world_size: int) -> None:
    """The rules that depend on the number of processes (``cfg`` itself was validated as it was loaded);
    run it before creating any folder.

    ``grad_accum_total`` is the global number of micro-batches: each of the ``world_size`` ranks
    runs ``grad_accum_total / world_size`` of them (spec §1.5), so it must divide evenly.
    """
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    if cfg.grad_accum_total % world_size:
        raise ConfigError(f"params key 'grad_accum_total' ({cfg.grad_accum_total}) must be a multiple of the "
                          f"world size ({world_size} processes)")


