"""The one compile policy of training, scoring and TTT: when golf compiles (``compile``), the cache it
keeps across runs, the inductor settings a graph needs, and the compiled scorers (docs/working.md).
Every path that compiles calls ``prepare_compile`` first."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from golf.config import Config

def use_compile(cfg: Config, device: torch.device) -> bool:
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")


def set_fast_matmul(device: torch.device) -> None:
    """TF32 for the fp32 matmuls that remain, as the record sets (spec §4.6)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def enable_compile_cache(cfg: Config) -> Path | None:
    """Keep compiled graphs across runs in ``compile_cache_dir`` (relative: from the project root, golf.paths).

    Inductor's FX graph cache and the AOTAutograd cache skip the code generation of a graph
    compiled before with the same code, shapes and torch; the Triton kernels land in the same
    folder (``<dir>/triton``). Dynamo still traces each run. ``compile_cache_dir: ""`` keeps
    torch's default folder (a temporary one). Torch reads the folder from this variable.
    """
    import torch._functorch.config
    import torch._inductor.config

    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    if not cfg.compile_cache_dir:
        return None
    from golf.paths import resolve

    path = resolve(cfg.compile_cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def has_frontier_graph(cfg: Config) -> bool:
    """Whether a frontier switch that changes the compiled graph's shape (spec section 8) is on."""
    return (cfg.smear_gate or cfg.attn_out_gate or cfg.attention_mask == "document"
            or cfg.parallel_mode == "lanes_mix")


def apply_inductor_workarounds(cfg: Config) -> None:
    """Inductor settings per graph (torch 2.11, H100). Inductor's fusion of reductions of two orders
    (``triton.mix_order_reduction``) is off whenever a frontier graph switch is on: with
    ``attn_out_gate`` the backward fails an assertion with it (bench/compile_check.py); the frontier
    without the gate stepped 7.8% (plain) and 9.6% (looped) slower with it (bench/RESULTS.md; the other
    switches alone were not measured); and one setting across the frontier's ablation arms keeps their
    step times comparable. The record's graphs keep the default, where it saves 2%."""
    if has_frontier_graph(cfg):
        import torch._inductor.config as inductor_config

        inductor_config.triton.mix_order_reduction = False


def prepare_compile(cfg: Config) -> Path | None:
    """Everything torch.compile needs before golf compiles a graph (training, scoring, TTT, benches):
    the persistent cache and the switches' inductor settings. Returns the cache folder, if any."""
    path = enable_compile_cache(cfg)
    apply_inductor_workarounds(cfg)
    return path


def fixed_batch(fn, batch: int):
    """Pad a short last batch up to ``batch`` rows, so a static-shape compiled graph is not rebuilt for it.

    Every tensor argument is padded with zero rows along dim 0 (other arguments pass unchanged) and
    the padding rows of the result are dropped again.
    """
    def call(*args):
        n = args[0].size(0)
        if n >= batch:
            return fn(*args)
        padded = [torch.cat((a, a.new_zeros(batch - n, *a.shape[1:]))) if isinstance(a, torch.Tensor) else a
                  for a in args]
        return fn(*padded)[:n]

    return call


def compiled_nll(model, cfg: Config, backend: str = "inductor") -> Callable:
    """``model.nll_at`` compiled for static shapes: (eval_batch_seqs, L) windows scoring from L − stride.

    A short batch is padded to eval_batch_seqs rows (``fixed_batch``), so one graph
    serves every batch; the parameters are graph inputs, so TTT's in-place updates need no recompile.
    """
    return fixed_batch(torch.compile(model.nll_at, dynamic=False, fullgraph=True, backend=backend), cfg.eval_batch_seqs)


def compiled_ttt_loss(model, backend: str = "inductor") -> Callable:
    """TTT's training loss, Σ NLL over a (B, L) batch, compiled forward and backward (AOTAutograd).

    The same function as the eager default in ``eval_ttt``; B is fixed by the chunk geometry
    (chunk_len // L sequences shared over ranks), so at most a short last share recompiles.
    """
    return torch.compile(lambda x, y: model(x, y, reduction="none").sum(), dynamic=False, fullgraph=True,
                         backend=backend)


def compile_errors() -> tuple[type[Exception], ...]:
    """What torch raises when a graph fails to compile (inductor's own, or any backend's)."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    return InductorError, BackendCompilerFailed
