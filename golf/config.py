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
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from golf.paths import resolve, resolve_params_file


class ConfigError(ValueError):
    """A params file or override names an unknown key or gives a value of the wrong type or range."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key  # the params key at fault, where there is one


@dataclass(frozen=True)
class Config:
    # --- run and data ---------------------------------------------------------------------
    seed: int = 1337  # SEED: model initialisation (and data order with fix_seed_data_order)
    data_dir: str = "data/datasets/fineweb10B_sp8192"  # folder of fineweb_{train,val}_*.bin
    tokenizer_path: str = "data/tokenizers/fineweb_8192_bpe.model"  # SentencePiece model of the shards (bound to them by prepare.json)
    vocab_size: int = 8192  # tokenizer pieces; must equal the tokenizer's
    train_seq_len: int = 2048  # tokens per training sequence
    eval_seq_len: int = 2048  # tokens per evaluation window
    train_batch_tokens: int = 786_432  # global tokens per optimizer step
    val_batch_tokens: int = 524_288  # tokens per plain-eval batch in the record (golf batches by eval_batch_seqs)
    grad_accum_total: int = 8  # grad_accum = grad_accum_total / world_size (spec §1.5)
    max_val_tokens: int = 0  # 0 = the whole (truncated) val stream; >0 caps it (demo runs)
    iterations: int = 20_000  # step budget; training stops at whichever budget ends first
    max_wallclock_seconds: float = 600.0  # 0 = no wallclock cap (deterministic step-count runs)
    gptq_reserve_seconds: float = 12.0  # seconds of the wallclock cap kept back for GPTQ calibration
    warmup_steps: int = 20  # compile warmup steps per phase, then state reset (spec §4.6)
    val_loss_every: int = 4000  # steps between validations of the live weights (0: only at start and end)
    train_log_every: int = 500  # steps between train-loss log lines and metrics rows
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # auto (on for cuda, off on cpu) | on | off
    attention_backend: str = "auto"  # auto | fa3 | fa4 | sdpa | math
    loader_prefetch: bool = True  # micro-batches made ahead in a thread (golf/prefetch.py); false = made inline
    fused_mlp: bool = False  # CUDA: LeakyReLU² inside the MLP's GEMMs (golf/kernels.py); same math, bf16 noise
    fused_ce: bool = False  # CUDA: softcapped cross-entropy with its gradient made in the forward (golf/kernels.py)
    fused_qkv: bool = False  # one GEMM for attention's q, k and v projections (any device); same math, bf16 noise
    compile_cache_dir: str = "outputs/.compile_cache"  # torch.compile caches kept across runs (under the project root)

    # --- model (spec §2) ------------------------------------------------------------------
    num_layers: int = 11  # physical transformer blocks
    model_dim: int = 512  # residual stream width
    embedding_dim: int = 0  # 0 = model_dim (the record: 512 = 512, no projection)
    num_heads: int = 8  # query heads
    num_kv_heads: int = 4  # key/value heads (GQA)
    mlp_mult: float = 4.0  # MLP hidden width as a multiple of model_dim
    tie_embeddings: bool = True  # the output head is the token embedding (only the tied head is built)
    tied_embed_init_std: float = 0.005  # std of the embedding initialisation
    logit_softcap: float = 30.0  # tanh soft cap on the logits
    rope_base: float = 10_000.0  # RoPE frequency base
    rope_dims: int = 16  # head dimensions that get RoPE (partial RoPE)
    rope_yarn: bool = True  # rescale the RoPE base for rows longer than train_seq_len (#1855 runs without)
    ln_scale: bool = True  # scale each block's RMSNorm output by 1/sqrt(layer+1)
    qk_gain_init: float = 5.0  # initial per-head gain after QK RMSNorm
    xsa_last_n: int = 11  # the last N layers use XSA (self-value removed from attention output)
    skip_gates_enabled: bool = True  # sigmoid gates on the U-Net skip connections
    num_loops: int = 2  # extra passes over layers loop_start..loop_end once looping is on (0: no recurrence)
    loop_start: int = 3  # first layer of the looped span
    loop_end: int = 5  # last layer of the looped span
    enable_looping_at: float = 0.35  # fraction of the training budget after which depth recurrence switches on
    parallel_start_layer: int = 7  # first layer of the parallel residual lanes
    parallel_mode: str = "lanes"  # lanes (#1477/#1533) | lanes_mix (#1530/#1855: learned 2x2 cross-lane mix, mean merge) | single_stream (#1493) | none
    init_mlp_banks_last: bool = False  # draw the MLP up banks after every attention bank (#1626 on, #1855)
    attention_mask: str = "causal"  # causal (record) | document: attention stays inside each BOS-started document (#1530)
    pack_documents: bool = False  # #1855: train on documents in stream order, a micro-batch one row, and score plain eval batches as rows (needs attention_mask: document)
    smear_gate: bool = False  # SmearGate (#1667): each embedding takes a gated share of the previous one, never across BOS (#1851)
    attn_out_gate: bool = False  # sparse attention output gate (#1787): per head, sigmoid of the input's first gate_dims dims
    attn_gate_scale: float = 1.0  # the sparse gate's input scale s (#1855: 0.5)
    gate_dims: int = 12  # input dims the SmearGate and the sparse attention gate read (#1667, #1787: 12)

    # --- optimization (spec §4) -----------------------------------------------------------
    matrix_lr: float = 0.022  # Muon learning rate of the banked matrices
    tied_embed_lr: float = 0.03  # AdamW learning rate of the tied embedding
    scalar_lr: float = 0.02  # AdamW learning rate of scales, gains and gates
    muon_momentum: float = 0.99  # Muon momentum after the warm-up
    muon_momentum_warmup_start: float = 0.92  # Muon momentum at step 0
    muon_momentum_warmup_steps: int = 1500  # steps of the linear Muon momentum warm-up
    muon_backend_steps: int = 5  # Newton-Schulz iterations per Muon step
    muon_row_normalize: bool = True  # MuonEq-R: normalise each row of the update before Newton-Schulz
    muon_ns_coefficients: str = "record"  # record (3.4445,-4.775,2.0315) | polar_express (spec §8)
    muon_wd: float = 0.095  # decoupled weight decay of the banked matrices
    muon_wd_taper_at: float = 0.0  # 0 off; else muon_wd is full until this fraction of training, then falls linearly (#1729: 0.7)
    muon_wd_taper_final: float = 0.5  # the taper's muon_wd multiplier at the end of training (#1729: 0.5)
    embed_wd: float = 0.095  # AdamW weight decay of the embedding
    adam_wd: float = 0.02  # AdamW weight decay of the scalar parameters
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    grad_clip_norm: float = 0.3  # global gradient-norm clip
    warmdown_frac: float = 0.667  # fraction of the budget over which the LR decays linearly to min_lr
    min_lr: float = 0.0  # floor of the warmdown multiplier; 0.10 is the #1787 MIN_LR (spec §8)
    ema_decay: float = 0.997  # decay of the EMA of the weights that is evaluated and saved (0: no averaging)

    # --- quantization (spec §5) -----------------------------------------------------------
    matrix_bits: int = 6  # GPTQ bits of the banked matrices
    matrix_clip_sigmas: float = 12.85  # SDClip: per-row clip at this many standard deviations (matrices)
    attn_clip_sigmas: float = 0.0  # SDClip sigmas of the attention matrices; 0 uses matrix_clip_sigmas (#1626: 13)
    mlp_clip_sigmas: float = 0.0  # SDClip sigmas of the MLP matrices; 0 uses matrix_clip_sigmas (#1626: 12)
    embed_bits: int = 8  # GPTQ bits of the embedding
    embed_clip_sigmas: float = 20.0  # SDClip sigmas of the embedding
    gptq_calibration_batches: int = 64  # training batches whose activations make the GPTQ Hessians
    gptq_damp: float = 0.01  # GPTQ diagonal damping, relative to the mean diagonal
    gptq_block_size: int = 128  # GPTQ column block size
    compressor: str = "brotli"  # brotli (quality 11, in pieces) | rans | best (per matrix the smaller of the two) | lzma
    artifact_limit_bytes: int = 16_000_000  # the budget: compressed model + code bytes (decimal 16 MB)
    quant_passthrough_numel: int = 65_536  # tensors this small (or smaller) stay fp16 (spec §5.4); lower it for tiny models
    lqer_rank: int = 0  # rank of the LQER corrections of the largest GPTQ errors (0: off; #1797 uses 4)
    lqer_top_k: int = 3  # matrices with the largest quantization error that get an LQER correction (#1797: 3)
    gate_int8: bool = True  # attention-gate weights stored int8 per row (#1736, #1855); false keeps fp16 (the SmearGate is fp16 either way, as in #1855)

    # --- evaluation (spec §6) -------------------------------------------------------------
    sliding_window_enabled: bool = True  # kept from the record; golf evaluate --mode chooses the evaluation
    eval_stride: int = 64  # sliding-window stride: each window scores its last eval_stride tokens
    eval_batch_seqs: int = 32  # windows per scoring batch
    ttt_enabled: bool = True  # kept from the record; golf evaluate --mode chooses the evaluation
    ttt_optimizer: str = "sgd"  # optimizer of score-first TTT
    ttt_lr: float = 0.005  # TTT learning rate (cosine over the chunks)
    ttt_momentum: float = 0.9  # TTT SGD momentum
    ttt_epochs: int = 3  # TTT passes over each scored chunk
    ttt_chunk_tokens: int = 32_768  # tokens per TTT chunk: scored first, then trained on
    ttt_batch_seqs: int = 32  # sequences per TTT training batch
    ttt_grad_clip: float = 1.0  # TTT gradient-norm clip
    ttt_freeze_blocks: int = 0  # freeze the first k blocks during TTT
    ttt_lora_rank: int = 96  # lora_ttt / phased_ttt: rank of the per-document LoRA adapters (#1855: 80)
    ttt_lora_alpha: float = 0.0  # LoRA scale is alpha / rank; 0 means alpha equals the rank, scale 1 (#1787: 144)
    ttt_lora_lr: float = 1e-4  # AdamW learning rate of the LoRA adapters (beta1 0)
    ttt_lora_beta2: float = 0.999  # AdamW beta2 of the LoRA adapters (#1855: 0.99)
    ttt_lora_wd: float = 0.5  # AdamW decoupled weight decay of the LoRA adapters (#1787: 1.0)
    ttt_lora_chunk: int = 32  # tokens per LoRA TTT chunk of a document: scored, then one AdamW step
    ttt_lora_batch_docs: int = 64  # documents adapted side by side, sorted by length
    ttt_lora_compile: bool = False  # lora_ttt / phased_ttt: compile the adapted forward and backward (dynamic shapes) where compile is on; falls back to eager if inductor fails
    ttt_lora_keep_a: bool = False  # the full-size adapter set keeps its trained A from batch to batch, B zeroed (#1767)
    ttt_phase_docs: int = 2000  # phased_ttt: documents scored before the last global SGD phase (#1855: 2500)
    ttt_phases: int = 1  # phased_ttt: global SGD phases, cumulative over the first ttt_phase_docs documents (#1626: 3)
    ttt_global_lr: float = 0.001  # phased_ttt: global SGD learning rate, cosine over the phase's chunks
    ttt_global_momentum: float = 0.9  # phased_ttt: global SGD momentum (clip: ttt_grad_clip)
    ttt_global_epochs: int = 1  # phased_ttt: passes over the scored documents in each phase
    ttt_global_chunk_tokens: int = 32_768  # phased_ttt: tokens per global SGD chunk; the last chunk is not trained (#1855)

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
    "parallel_mode": ("lanes", "lanes_mix", "single_stream", "none"),
    "attention_mask": ("causal", "document"),
    "muon_ns_coefficients": ("record", "polar_express"),
    "compressor": ("brotli", "lzma", "rans", "best"),
    "ttt_optimizer": ("sgd",),
}

# golf evaluate's modes, in the order a run reaches them; every list of modes and stages derives from it.
EVAL_MODES = ("plain", "sliding", "ttt", "lora_ttt", "phased_ttt")

_TYPES: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)}


PATH_KEYS = ("data_dir", "tokenizer_path")
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}


def config_keys() -> list[str]:
    return list(_TYPES)


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"params key {key!r}: expected a bool (true/false, yes/no, on/off, 1/0), got {text!r}")


def _coerce(key: str, value: Any, from_text: bool) -> Any:
    """Check (and, for command-line text, parse) one value against the field's type."""
    want = _TYPES[key]
    if from_text and isinstance(value, str):
        text = value
        if want is bool:
            return _parse_bool(text, key)
        try:
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


def parameter_list(value: Any, name: str) -> list[str]:
    """A notebook's list parameter as a list of strings. papermill's ``-p NAME VALUE`` passes text, which
    Python would walk letter by letter: text in YAML list form (``[a, b]``) is that list, other text is
    split as a shell splits it (``ema_decay=0 seed=7``, like ``--set``); ``None`` and ``""`` are empty."""
    import shlex

    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"parameter {name!r}: {value!r} is not a YAML list ({err.problem})", name) from None
        else:
            try:
                return shlex.split(text)
            except ValueError as err:
                raise ConfigError(f"parameter {name!r}: cannot split {value!r} ({err})", name) from None
    if isinstance(value, (int, float)):  # papermill reads -p names 1 as a number
        return [str(value)]
    if isinstance(value, (list, tuple)):
        items = list(value)
        bad = [v for v in items if isinstance(v, (list, tuple, dict)) or v is None]
        if bad:
            raise ConfigError(f"parameter {name!r}: expected a list of strings, got the item {bad[0]!r}", name)
        return [str(v) for v in items]
    raise ConfigError(f"parameter {name!r}: expected a list of strings, got {type(value).__name__} {value!r}", name)


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
    import difflib

    unknown = [k for k in mapping if k not in _TYPES]
    if unknown:
        guesses = [g for k in unknown for g in difflib.get_close_matches(str(k), list(_TYPES), n=1)]
        hint = f"; did you mean {', '.join(map(repr, guesses))}?" if guesses else ""
        raise ConfigError(f"{where}: unknown params key(s) {', '.join(map(repr, unknown))}{hint} "
                          f"(golf config lists the {len(_TYPES)} keys)")


def _read_yaml(path: Path) -> Any:
    """The parsed params file; an error naming the file if it is not UTF-8 text or not YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"params file {str(path)!r} is not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(f"params file {str(path)!r} is not valid YAML{at}: {problem}") from None


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
    from_file: set[str] = set()  # keys whose value is the file's (not overridden)
    if path is not None:
        path = resolve_params_file(path)
        if not path.is_file():
            raise ConfigError(f"params file {str(path)!r} does not exist (a relative path starts at the "
                              "project root, see golf --help; give an absolute path for a file elsewhere)")
        loaded = _read_yaml(path)
        if not isinstance(loaded, dict):
            raise ConfigError(f"params file {str(path)!r}: expected a mapping of key: value")
        _check_keys(loaded, f"params file {str(path)!r}")
        for key, value in loaded.items():
            try:
                values[key] = _coerce(key, value, from_text=False)
            except ConfigError as exc:  # name the file: the same key may also come from --set
                raise ConfigError(f"params file {str(path)!r}: {exc}", key) from None
        from_file = set(loaded)
    file_values = dict(values)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        _check_keys(overrides, "overrides")
        for key, value in overrides.items():
            values[key] = _coerce(key, value, from_text=True)
        from_file -= set(overrides)
    for key in PATH_KEYS:  # one root for relative paths, in the CLI, kernels and children alike
        values[key] = str(resolve(values.get(key, _DEFAULTS[key])))
    cfg = Config(**values)
    try:
        validate(cfg)
    except ConfigError as exc:  # a value that came from the file: name the file too
        if path is not None and exc.key in from_file:
            if overrides and _valid(file_values):  # the file alone is fine: the overrides broke a rule with it
                given = " ".join(f"{k}={v}" for k, v in overrides.items())
                raise ConfigError(f"overrides {given} with params file {str(path)!r}: {exc}", exc.key) from None
            raise ConfigError(f"params file {str(path)!r}: {exc}", exc.key) from None
        raise
    return cfg


def _valid(values: dict[str, Any]) -> bool:
    try:
        validate(Config(**values))
    except ConfigError:
        return False
    return True


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
        lo = "(-inf" if self.lo is None else ("(" if self.lo_open else "[") + f"{self.lo:g}"
        hi = "inf)" if self.hi is None else f"{self.hi:g}" + (")" if self.hi_open else "]")
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
    "num_layers": _COUNT, "model_dim": _COUNT, "embedding_dim": _NONNEG, "num_heads": _COUNT,
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


def _cross_key_problems(cfg: Config) -> Iterable[tuple[str, str]]:
    """(key, what is wrong) for every rule that ties two or more keys together."""
    if cfg.model_dim % cfg.num_heads:
        yield "model_dim", f"({cfg.model_dim}) must be divisible by num_heads ({cfg.num_heads})"
    if cfg.num_heads % cfg.num_kv_heads:
        yield "num_kv_heads", f"({cfg.num_kv_heads}) must divide num_heads ({cfg.num_heads})"
    if cfg.rope_dims > cfg.head_dim or cfg.rope_dims % 2:
        yield "rope_dims", f"({cfg.rope_dims}) must be even and at most head_dim ({cfg.head_dim})"
    if cfg.embedding_dim not in (0, cfg.model_dim):
        yield "embedding_dim", "only embedding_dim == model_dim (or 0) is built"
    if not cfg.tie_embeddings:
        yield "tie_embeddings", "only the tied head of the record is built"
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


def inert_settings(cfg: Config) -> list[str]:
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


def validate(cfg: Config) -> None:
    """Every key's choices or range, then every cross-key rule; the first problem raises, naming the key."""
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"params key {key!r}: expected one of {choices}, got {getattr(cfg, key)!r}", key)
    for key, allowed in RANGES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"params key {key!r}: expected a value in {allowed}, got {getattr(cfg, key)!r}", key)
    for key, problem in _cross_key_problems(cfg):
        raise ConfigError(f"params key {key!r}: {problem}", key)


def validate_for_world(cfg: Config, world_size: int) -> None:
    """The rules that depend on the number of processes too; run it before creating any folder.

    ``grad_accum_total`` is the global number of micro-batches: each of the ``world_size`` ranks
    runs ``grad_accum_total / world_size`` of them (spec §1.5), so it must divide evenly.
    """
    validate(cfg)
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    if cfg.grad_accum_total % world_size:
        raise ConfigError(f"params key 'grad_accum_total' ({cfg.grad_accum_total}) must be a multiple of the "
                          f"world size ({world_size} processes)")


# The keys golf quantize and golf evaluate may change on a trained run; every other key was fixed
# by training (the model's shape, its optimizer), so changing it there is refused. The data paths
# may move (the tokenizer/shard binding check still holds them to what the run was trained on).
RUNTIME_KEYS = ("device", "compile", "attention_backend", "compile_cache_dir", "loader_prefetch", "fused_mlp",
                "fused_ce", "fused_qkv", *PATH_KEYS)
_STAGE_GROUPS = {"quantize": "quantization", "evaluate": "evaluation"}
_STAGE_EXTRA = {
    "quantize": ("max_val_tokens", "eval_seq_len", "fix_allreduce_hessians", "fix_prune_to_fit"),
    "evaluate": ("max_val_tokens", "eval_seq_len", "val_batch_tokens", "fix_ttt_reset_momentum"),
}


def _key_groups() -> dict[str, str]:
    return {d["key"]: d["group"] for d in describe_keys()}


def stage_keys(stage: str, groups: dict[str, str] | None = None, own_only: bool = False) -> tuple[str, ...]:
    """The params keys ``golf quantize`` (stage 'quantize') or ``golf evaluate`` ('evaluate') reads;
    ``own_only``: only its group's, none that training reads too (max_val_tokens, runtime keys...)."""
    group = [k for k, g in (groups or _key_groups()).items() if g.startswith(_STAGE_GROUPS[stage])]
    return tuple(group) if own_only else (*group, *_STAGE_EXTRA[stage], *RUNTIME_KEYS)


def check_stage_overrides(stage: str, keys: Iterable[str]) -> None:
    """Refuse, by name, an override that ``golf quantize`` / ``golf evaluate`` would silently ignore
    or that contradicts what the run already made."""
    groups = _key_groups()
    allowed = stage_keys(stage, groups)
    for key in keys:
        if key in allowed or key not in _TYPES:
            continue
        group = groups[key]
        if group.startswith("model"):
            what, redo = "shapes the trained model", "train a new run"
        elif group.startswith("quantization"):
            what, redo = "was fixed when the artifact was made", "golf quantize --force --set it"
        elif group.startswith("evaluation"):
            what, redo = "is an evaluation key", "golf evaluate --set it"
        else:
            what, redo = f"belongs to training ({group.split(' (')[0].split(',')[0]})", "train a new run"
        raise ConfigError(f"params key {key!r} {what}: golf {stage} can't change it ({redo}); golf {stage} "
                          f"takes the {_STAGE_GROUPS[stage]} keys and {', '.join(_STAGE_EXTRA[stage] + RUNTIME_KEYS)}")


def differences_from_record(values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (record's value, this value)} for the keys of ``values`` (a config's dict) that differ
    from the record's, i.e. golf's defaults; paths aside."""
    record = _DEFAULTS
    return {k: (record[k], v) for k, v in values.items() if k in record and k not in PATH_KEYS and v != record[k]}


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe_keys() -> list[dict[str, Any]]:
    """Every params key with its type, the record's default, its group and the comment beside it.

    The comments in the ``Config`` source are the one place keys are documented; ``golf config``
    and the notebooks' parameters cells read them from here.
    """
    import inspect
    import re

    field_re = re.compile(r"^\s+(\w+): [^=]+=\s*[^#]*?(?:#\s*(.*))?$")
    group_re = re.compile(r"^\s+# --- (.+?) -+$")
    helps: dict[str, tuple[str, str]] = {}
    group = ""
    for line in inspect.getsource(Config).splitlines():
        if (g := group_re.match(line)) is not None:
            group = g.group(1)
        elif (f := field_re.match(line)) is not None and f.group(1) in _TYPES:
            helps[f.group(1)] = (group, (f.group(2) or "").strip())
    return [{"key": f.name, "type": _TYPES[f.name].__name__, "default": f.default,
             "group": helps.get(f.name, ("", ""))[0], "help": helps.get(f.name, ("", ""))[1]}
            for f in fields(Config)]
