"""The config's sections: each key with its default (the record's logged value) and its help, which
``golf config`` and the notebooks' parameters cells show (docs/config.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def key(default: Any, help_: str) -> Any:
    """A params key: its default (the record's) and the help golf config and the notebooks show."""
    return field(default=default, metadata={"help": help_})


@dataclass(frozen=True)
class RunConfig:
    """How the run executes: device, compilation, kernels. golf quantize and golf evaluate may change
    these on a trained run."""
    device: str = key("auto", "auto | cpu | cuda")
    compile: str = key("auto", "auto (on for cuda, off on cpu) | on | off")
    attention_backend: str = key("auto", "auto | fa3 | fa4 | sdpa | math")
    loader_prefetch: bool = key(True, "micro-batches made ahead in a thread (golf/prefetch.py); false = made inline")
    fused_mlp: bool = key(False, "CUDA: LeakyReLU² inside the MLP's GEMMs (golf/kernels.py); same math, bf16 noise")
    fused_ce: bool = key(False,
                         "CUDA: softcapped cross-entropy with its gradient made in the forward (golf/kernels.py)")
    fused_qkv: bool = key(False, "one GEMM for attention's q, k and v projections (any device); same math, bf16 noise")
    compile_cache_dir: str = key("outputs/.compile_cache",
                                 "torch.compile caches kept across runs (under the project root)")


@dataclass(frozen=True)
class DataConfig:
    """Where the shards and the tokenizer are, and how much of the val stream is scored."""
    data_dir: str = key("data/datasets/fineweb10B_sp8192", "folder of fineweb_{train,val}_*.bin")
    tokenizer_path: str = key("data/tokenizers/fineweb_8192_bpe.model",
                              "SentencePiece model of the shards (bound to them by prepare.json)")
    max_val_tokens: int = key(0, "0 = the whole (truncated) val stream; >0 caps it (demo runs)")


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape and wiring (docs/record.md §2); fixed once a run is trained."""
    vocab_size: int = key(8192, "tokenizer pieces; must equal the tokenizer's")
    num_layers: int = key(11, "physical transformer blocks")
    model_dim: int = key(512, "residual stream width")
    num_heads: int = key(8, "query heads")
    num_kv_heads: int = key(4, "key/value heads (GQA)")
    mlp_mult: float = key(4.0, "MLP hidden width as a multiple of model_dim")
    tied_embed_init_std: float = key(0.005, "std of the embedding initialisation")
    logit_softcap: float = key(30.0, "tanh soft cap on the logits")
    rope_base: float = key(10_000.0, "RoPE frequency base")
    rope_dims: int = key(16, "head dimensions that get RoPE (partial RoPE)")
    rope_yarn: bool = key(True, "rescale the RoPE base for rows longer than train_seq_len (#1855 runs without)")
    ln_scale: bool = key(True, "scale each block's RMSNorm output by 1/sqrt(layer+1)")
    qk_gain_init: float = key(5.0, "initial per-head gain after QK RMSNorm")
    xsa_last_n: int = key(11, "the last N layers use XSA (self-value removed from attention output)")
    skip_gates_enabled: bool = key(True, "sigmoid gates on the U-Net skip connections")
    num_loops: int = key(2, "extra passes over layers loop_start..loop_end once looping is on (0: no recurrence)")
    loop_start: int = key(3, "first layer of the looped span")
    loop_end: int = key(5, "last layer of the looped span")
    enable_looping_at: float = key(0.35, "fraction of the training budget after which depth recurrence switches on")
    parallel_start_layer: int = key(7, "first layer of the parallel residual lanes")
    parallel_mode: str = key("lanes",
                             "lanes (#1477/#1533) | lanes_mix (#1530/#1855: learned 2x2 cross-lane mix, mean merge) "
                             "| single_stream (#1493) | none")
    init_mlp_banks_last: bool = key(False, "draw the MLP up banks after every attention bank (#1626 on, #1855)")
    attention_mask: str = key("causal",
                              "causal (record) | document: attention stays inside each BOS-started document (#1530)")
    pack_documents: bool = key(False,
                               "#1855: train on documents in stream order, a micro-batch one row, and score plain "
                               "eval batches as rows (needs attention_mask: document)")
    smear_gate: bool = key(False,
                           "SmearGate (#1667): each embedding takes a gated share of the previous one, never across "
                           "BOS (#1851)")
    attn_out_gate: bool = key(False,
                              "sparse attention output gate (#1787): per head, sigmoid of the input's first "
                              "gate_dims dims")
    attn_gate_scale: float = key(1.0, "the sparse gate's input scale s (#1855: 0.5)")
    gate_dims: int = key(12, "input dims the SmearGate and the sparse attention gate read (#1667, #1787: 12)")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)


@dataclass(frozen=True)
class TrainConfig:
    """The training run: its budget, batches and logging (docs/record.md §1, §4)."""
    seed: int = key(1337, "SEED: model initialisation (and data order with fix_seed_data_order)")
    train_seq_len: int = key(2048, "tokens per training sequence")
    train_batch_tokens: int = key(786_432, "global tokens per optimizer step")
    grad_accum_total: int = key(8, "grad_accum = grad_accum_total / world_size (spec §1.5)")
    iterations: int = key(20_000, "step budget; training stops at whichever budget ends first")
    max_wallclock_seconds: float = key(600.0, "0 = no wallclock cap (deterministic step-count runs)")
    gptq_reserve_seconds: float = key(12.0, "seconds of the wallclock cap kept back for GPTQ calibration")
    warmup_steps: int = key(20, "compile warmup steps per phase, then state reset (spec §4.6)")
    val_loss_every: int = key(4000, "steps between validations of the live weights (0: only at start and end)")
    train_log_every: int = key(500, "steps between train-loss log lines and metrics rows")


@dataclass(frozen=True)
class OptimConfig:
    """Muon and AdamW, their schedules and the EMA (docs/record.md §4)."""
    matrix_lr: float = key(0.022, "Muon learning rate of the banked matrices")
    tied_embed_lr: float = key(0.03, "AdamW learning rate of the tied embedding")
    scalar_lr: float = key(0.02, "AdamW learning rate of scales, gains and gates")
    muon_momentum: float = key(0.99, "Muon momentum after the warm-up")
    muon_momentum_warmup_start: float = key(0.92, "Muon momentum at step 0")
    muon_momentum_warmup_steps: int = key(1500, "steps of the linear Muon momentum warm-up")
    muon_backend_steps: int = key(5, "Newton-Schulz iterations per Muon step")
    muon_row_normalize: bool = key(True, "MuonEq-R: normalise each row of the update before Newton-Schulz")
    muon_ns_coefficients: str = key("record", "record (3.4445,-4.775,2.0315) | polar_express (spec §8)")
    muon_wd: float = key(0.095, "decoupled weight decay of the banked matrices")
    muon_wd_taper_at: float = key(0.0,
                                  "0 off; else muon_wd is full until this fraction of training, then falls linearly "
                                  "(#1729: 0.7)")
    muon_wd_taper_final: float = key(0.5, "the taper's muon_wd multiplier at the end of training (#1729: 0.5)")
    embed_wd: float = key(0.095, "AdamW weight decay of the embedding")
    adam_wd: float = key(0.02, "AdamW weight decay of the scalar parameters")
    beta1: float = key(0.9, "AdamW beta1")
    beta2: float = key(0.95, "AdamW beta2")
    adam_eps: float = key(1e-8, "AdamW epsilon")
    grad_clip_norm: float = key(0.3, "global gradient-norm clip")
    warmdown_frac: float = key(0.667, "fraction of the budget over which the LR decays linearly to min_lr")
    min_lr: float = key(0.0, "floor of the warmdown multiplier; 0.10 is the #1787 MIN_LR (spec §8)")
    ema_decay: float = key(0.997, "decay of the EMA of the weights that is evaluated and saved (0: no averaging)")


@dataclass(frozen=True)
class QuantConfig:
    """GPTQ, LQER, compression and the byte budget (docs/record.md §5); golf quantize may change these."""
    matrix_bits: int = key(6, "GPTQ bits of the banked matrices")
    matrix_clip_sigmas: float = key(12.85, "SDClip: per-row clip at this many standard deviations (matrices)")
    attn_clip_sigmas: float = key(0.0, "SDClip sigmas of the attention matrices; 0 uses matrix_clip_sigmas (#1626: 13)")
    mlp_clip_sigmas: float = key(0.0, "SDClip sigmas of the MLP matrices; 0 uses matrix_clip_sigmas (#1626: 12)")
    embed_bits: int = key(8, "GPTQ bits of the embedding")
    embed_clip_sigmas: float = key(20.0, "SDClip sigmas of the embedding")
    gptq_calibration_batches: int = key(64, "training batches whose activations make the GPTQ Hessians")
    gptq_damp: float = key(0.01, "GPTQ diagonal damping, relative to the mean diagonal")
    gptq_block_size: int = key(128, "GPTQ column block size")
    compressor: str = key("brotli",
                          "brotli (quality 11, in pieces) | rans | best (per matrix the smaller of the two) | lzma")
    artifact_limit_bytes: int = key(16_000_000, "the budget: compressed model + code bytes (decimal 16 MB)")
    prune_to_fit: bool = key(True,
                             "over the budget, zero int6 ±1 entries until code + artifact fit (the record's, "
                             "spec §5.4); false: the artifact stands as made (#1855 has no pruning)")
    quant_passthrough_numel: int = key(65_536,
                                       "tensors this small (or smaller) stay fp16 (spec §5.4); lower it for tiny "
                                       "models")
    lqer_rank: int = key(0, "rank of the LQER corrections of the largest GPTQ errors (0: off; #1797 uses 4)")
    lqer_top_k: int = key(3, "matrices with the largest quantization error that get an LQER correction (#1797: 3)")
    gate_int8: bool = key(True,
                          "attention-gate weights stored int8 per row (#1736, #1855); false keeps fp16 (the "
                          "SmearGate is fp16 either way, as in #1855)")


@dataclass(frozen=True)
class EvalConfig:
    """Plain, sliding and TTT scoring (docs/record.md §6); golf evaluate may change these."""
    eval_seq_len: int = key(2048, "tokens per evaluation window")
    val_batch_tokens: int = key(524_288, "tokens per plain-eval batch in the record (golf batches by eval_batch_seqs)")
    eval_stride: int = key(64, "sliding-window stride: each window scores its last eval_stride tokens")
    eval_batch_seqs: int = key(32, "windows per scoring batch")
    ttt_lr: float = key(0.005, "TTT learning rate (cosine over the chunks)")
    ttt_momentum: float = key(0.9, "TTT SGD momentum")
    ttt_epochs: int = key(3, "TTT passes over each scored chunk")
    ttt_chunk_tokens: int = key(32_768, "tokens per TTT chunk: scored first, then trained on")
    ttt_batch_seqs: int = key(32, "sequences per TTT training batch")
    ttt_grad_clip: float = key(1.0, "TTT gradient-norm clip")
    ttt_freeze_blocks: int = key(0, "freeze the first k blocks during TTT")
    ttt_lora_rank: int = key(96, "lora_ttt / phased_ttt: rank of the per-document LoRA adapters (#1855: 80)")
    ttt_lora_alpha: float = key(0.0, "LoRA scale is alpha / rank; 0 means alpha equals the rank, scale 1 (#1787: 144)")
    ttt_lora_lr: float = key(1e-4, "AdamW learning rate of the LoRA adapters (beta1 0)")
    ttt_lora_beta2: float = key(0.999, "AdamW beta2 of the LoRA adapters (#1855: 0.99)")
    ttt_lora_wd: float = key(0.5, "AdamW decoupled weight decay of the LoRA adapters (#1787: 1.0)")
    ttt_lora_chunk: int = key(32, "tokens per LoRA TTT chunk of a document: scored, then one AdamW step")
    ttt_lora_batch_docs: int = key(64, "documents adapted side by side, sorted by length")
    ttt_lora_compile: bool = key(False,
                                 "lora_ttt / phased_ttt: compile the adapted forward and backward (dynamic shapes) "
                                 "where compile is on; falls back to eager if inductor fails")
    ttt_lora_keep_a: bool = key(False,
                                "the full-size adapter set keeps its trained A from batch to batch, B zeroed "
                                "(#1767)")
    ttt_phase_docs: int = key(2000, "phased_ttt: documents scored before the last global SGD phase (#1855: 2500)")
    ttt_phases: int = key(1,
                          "phased_ttt: global SGD phases, cumulative over the first ttt_phase_docs documents "
                          "(#1626: 3)")
    ttt_global_lr: float = key(0.001, "phased_ttt: global SGD learning rate, cosine over the phase's chunks")
    ttt_global_momentum: float = key(0.9, "phased_ttt: global SGD momentum (clip: ttt_grad_clip)")
    ttt_global_epochs: int = key(1, "phased_ttt: passes over the scored documents in each phase")
    ttt_global_chunk_tokens: int = key(32_768,
                                       "phased_ttt: tokens per global SGD chunk; the last chunk is not trained "
                                       "(#1855)")


@dataclass(frozen=True)
class FixesConfig:
    """Switches for the record's known flaws (docs/record.md §9); all off is the record as logged."""
    fix_clip_after_reduce: bool = key(False, "§9.6: clip the all-reduced gradient, not each rank's")
    fix_reset_muon_momentum: bool = key(False, "§9.7: zero Muon shard momentum after the warmup")
    fix_seed_data_order: bool = key(False, "§9.8: seed the loader RNG with SEED as well as rank")
    fix_allreduce_hessians: bool = key(False, "§9.9: average GPTQ Hessians over ranks")
    fix_gptq_in_budget: bool = key(False, "§9.10: collect Hessians inside the training-time cap")
    fix_embed_fp32: bool = key(False, "§9.11: keep tok_emb (and its AdamW master) in fp32")
    fix_prune_to_fit: bool = key(False, "§9.14: prune each candidate's own ±1 entry")
    fix_ttt_reset_momentum: bool = key(False, "§9.16: reset TTT SGD momentum at every chunk")
