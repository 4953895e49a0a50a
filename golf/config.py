"""One typed config for every run, loaded from YAML plus overrides.

Defaults are the hyperparameters *logged* by the five #1533 runs (spec Appendix A), not the
values its README claims (spec §0, §9.1). Each known flaw of the record (spec §9) has a
``fix_*`` switch, off by default, so the defaults reproduce the record as it ran.

Usage::

    cfg = load_config("params/record.yaml", ["seed=314", "iterations=200"])
    cfg = load_config(None, {"model_dim": 64})      # papermill parameters arrive as a dict
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class ConfigError(ValueError):
    """A params file or override names an unknown key or gives a value of the wrong type."""


@dataclass(frozen=True)
class Config:
    # --- run and data ---------------------------------------------------------------------
    seed: int = 1337
    data_dir: str = "data/datasets/fineweb10B_sp8192"  # folder of fineweb_{train,val}_*.bin
    tokenizer_path: str = "data/tokenizers/fineweb_8192_bpe.model"
    vocab_size: int = 8192
    train_seq_len: int = 2048
    eval_seq_len: int = 2048
    train_batch_tokens: int = 786_432  # global tokens per optimizer step
    val_batch_tokens: int = 524_288
    grad_accum_total: int = 8  # grad_accum = grad_accum_total / world_size (spec §1.5)
    max_val_tokens: int = 0  # 0 = the whole (truncated) val stream; >0 caps it (demo runs)
    iterations: int = 20_000  # step budget; training stops at whichever budget ends first
    max_wallclock_seconds: float = 600.0  # 0 = no wallclock cap (deterministic step-count runs)
    gptq_reserve_seconds: float = 12.0
    warmup_steps: int = 20  # compile warmup steps per phase, then state reset (spec §4.6)
    val_loss_every: int = 4000
    train_log_every: int = 500
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # auto (= on for cuda) | on | off
    attention_backend: str = "auto"  # auto | fa3 | fa4 | sdpa | math
    loader_prefetch: bool = True  # micro-batches made ahead in a thread (golf/prefetch.py); false = made inline
    compile_cache_dir: str = "outputs/.compile_cache"  # compiled graphs kept across runs; relative to the repo root

    # --- model (spec §2) ------------------------------------------------------------------
    num_layers: int = 11
    model_dim: int = 512
    embedding_dim: int = 0  # 0 = model_dim (the record: 512 = 512, no projection)
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 4.0
    tie_embeddings: bool = True
    tied_embed_init_std: float = 0.005
    logit_softcap: float = 30.0
    rope_base: float = 10_000.0
    rope_dims: int = 16
    ln_scale: bool = True
    qk_gain_init: float = 5.0
    xsa_last_n: int = 11
    skip_gates_enabled: bool = True
    num_loops: int = 2
    loop_start: int = 3
    loop_end: int = 5
    enable_looping_at: float = 0.35
    parallel_start_layer: int = 7
    parallel_mode: str = "lanes"  # lanes (#1477/#1533) | single_stream (#1493) | none

    # --- optimization (spec §4) -----------------------------------------------------------
    matrix_lr: float = 0.022
    tied_embed_lr: float = 0.03
    scalar_lr: float = 0.02
    muon_momentum: float = 0.99
    muon_momentum_warmup_start: float = 0.92
    muon_momentum_warmup_steps: int = 1500
    muon_backend_steps: int = 5
    muon_row_normalize: bool = True
    muon_ns_coefficients: str = "record"  # record (3.4445,-4.775,2.0315) | polar_express (spec §8)
    muon_wd: float = 0.095
    embed_wd: float = 0.095
    adam_wd: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.3
    warmdown_frac: float = 0.667
    min_lr: float = 0.0  # floor of the warmdown multiplier; 0.10 is the #1787 MIN_LR (spec §8)
    ema_decay: float = 0.997

    # --- quantization (spec §5) -----------------------------------------------------------
    matrix_bits: int = 6
    matrix_clip_sigmas: float = 12.85
    embed_bits: int = 8
    embed_clip_sigmas: float = 20.0
    gptq_calibration_batches: int = 64
    gptq_damp: float = 0.01
    gptq_block_size: int = 128
    compressor: str = "brotli"  # brotli | lzma
    artifact_limit_bytes: int = 16_000_000
    quant_passthrough_numel: int = 65_536  # tensors this small (or smaller) stay fp16 (spec §5.4); lower it for tiny models

    # --- evaluation (spec §6) -------------------------------------------------------------
    sliding_window_enabled: bool = True
    eval_stride: int = 64
    eval_batch_seqs: int = 32
    ttt_enabled: bool = True
    ttt_optimizer: str = "sgd"
    ttt_lr: float = 0.005
    ttt_momentum: float = 0.9
    ttt_epochs: int = 3
    ttt_chunk_tokens: int = 32_768
    ttt_batch_seqs: int = 32
    ttt_grad_clip: float = 1.0
    ttt_freeze_blocks: int = 0

    # --- fixes for the record's known flaws (spec §9), all off = the record as logged -----
    fix_clip_after_reduce: bool = False  # §9.6: clip the all-reduced gradient, not each rank's
    fix_reset_muon_momentum: bool = False  # §9.7: zero Muon shard momentum after the warmup
    fix_seed_data_order: bool = False  # §9.8: seed the loader RNG with SEED as well as rank
    fix_allreduce_hessians: bool = False  # §9.9: average GPTQ Hessians over ranks
    fix_gptq_in_budget: bool = False  # §9.10: collect Hessians inside the training-time cap
    fix_embed_fp32: bool = False  # §9.11: keep tok_emb (and its AdamW master) in fp32
    fix_prune_to_fit: bool = False  # §9.14: prune each candidate's own ±1 entry
    fix_ttt_reset_momentum: bool = False  # §9.16: reset TTT SGD momentum at every chunk

    # --- derived helpers (not keys) -------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        return load_config(None, {**self.to_dict(), **changes})


_CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "compile": ("auto", "on", "off"),
    "attention_backend": ("auto", "fa3", "fa4", "sdpa", "math"),
    "parallel_mode": ("lanes", "single_stream", "none"),
    "muon_ns_coefficients": ("record", "polar_express"),
    "compressor": ("brotli", "lzma"),
    "ttt_optimizer": ("sgd",),
}

_TYPES: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)}


def config_keys() -> list[str]:
    return list(_TYPES)


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"params key {key!r}: expected a bool (true/false), got {text!r}")


def _coerce(key: str, value: Any, from_text: bool) -> Any:
    """Check (and, for command-line text, parse) one value against the field's type."""
    want = _TYPES[key]
    if from_text and isinstance(value, str):
        text = value
        try:
            if want is bool:
                return _parse_bool(text, key)
            if want is int:
                return int(text.replace("_", ""))
            if want is float:
                return float(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"params key {key!r}: expected {want.__name__}, got {text!r}") from None
        return text
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif want is str:
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"params key {key!r}: expected {want.__name__}, got {type(value).__name__} {value!r}"
    )


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Turn ``["k=v", ...]`` from ``--set`` into a dict of raw strings."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _check_keys(mapping: Mapping[str, Any], where: str) -> None:
    unknown = [k for k in mapping if k not in _TYPES]
    if unknown:
        raise ConfigError(
            f"{where}: unknown params key(s) {', '.join(map(repr, unknown))}; "
            f"see golf/config.py for the {len(_TYPES)} known keys"
        )


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> Config:
    """Build the Config from an optional YAML file, then overrides.

    Overrides may be ``key=value`` strings (command line: values are parsed by the field type)
    or a mapping (papermill parameters: values must already have the right type, except that
    strings are parsed too, since papermill's ``-p`` passes text).
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"params file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"params file {str(path)!r}: expected a mapping of key: value")
        _check_keys(loaded, f"params file {str(path)!r}")
        for key, value in loaded.items():
            values[key] = _coerce(key, value, from_text=False)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        _check_keys(overrides, "overrides")
        for key, value in overrides.items():
            values[key] = _coerce(key, value, from_text=True)
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"params key {key!r}: expected one of {choices}, got {getattr(cfg, key)!r}")
    if cfg.model_dim % cfg.num_heads:
        raise ConfigError("params key 'model_dim': must be divisible by num_heads")
    if cfg.num_heads % cfg.num_kv_heads:
        raise ConfigError("params key 'num_kv_heads': must divide num_heads")
    if cfg.rope_dims > cfg.head_dim or cfg.rope_dims % 2:
        raise ConfigError("params key 'rope_dims': must be even and at most head_dim")
    if cfg.embedding_dim not in (0, cfg.model_dim):
        raise ConfigError("params key 'embedding_dim': only embedding_dim == model_dim is built")
    if not cfg.tie_embeddings:
        raise ConfigError("params key 'tie_embeddings': only the tied head of the record is built")
    if not 0 <= cfg.loop_start <= cfg.loop_end < cfg.num_layers:
        raise ConfigError("params keys 'loop_start'/'loop_end': need 0 <= start <= end < num_layers")
    if cfg.vocab_size > 65_536:
        raise ConfigError("params key 'vocab_size': shards hold uint16 ids, so at most 65536")
    if cfg.train_batch_tokens % cfg.train_seq_len:
        raise ConfigError("params key 'train_batch_tokens': must be a multiple of train_seq_len")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
