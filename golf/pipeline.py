"""Run-folder steps after training: quantize a run, evaluate a run (INTERFACE.md files).

The CLI and the notebooks both call these, so a notebook holds no logic of its own.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from golf.config import Config
from golf.model import GPT, build_model, load_checkpoint
from golf.runtime import DistInfo, GolfError, atomic_write_json, atomic_write_text, barrier

log = logging.getLogger("golf")

ARTIFACT_NAME = "final_model.int6.ptz"


def hessian_path(run_dir: Path, rank: int) -> Path:
    """Hessians that training collected itself (``fix_gptq_in_budget``), one file per rank (§9.9)."""
    return Path(run_dir) / f"hessians_rank{rank}.pt"


def load_run_model(run_dir: Path, cfg: Config, device: torch.device, source: str = "raw") -> GPT:
    """The run's model from ``model.pt`` (raw, post-EMA) or from the quantized artifact, looping on."""
    from golf.quant import load_artifact

    model = build_model(cfg, device)
    if source == "raw":
        path = run_dir / "model.pt"
        if not path.is_file():
            raise GolfError(f"run folder {str(run_dir)!r} has no model.pt: train it first (golf train)")
        load_checkpoint(model, path)
    elif source == "artifact":
        path = run_dir / ARTIFACT_NAME
        if not path.is_file():
            raise GolfError(f"run folder {str(run_dir)!r} has no {ARTIFACT_NAME}: run golf quantize first")
        load_artifact(path, model)
    else:
        raise ValueError(f"source must be 'raw' or 'artifact', got {source!r}")
    model.set_looping(cfg.num_loops > 0)  # every evaluation runs looped (spec §2.7)
    model.eval()
    return model


def calibration_batches(cfg: Config, dist: DistInfo, device: torch.device):
    """A fresh training loader: the record replays the start of training's data order (spec §5.2, §9.8)."""
    from golf.train import make_train_loader

    loader = make_train_loader(cfg, dist)
    while True:
        yield loader.next_batch(device)[0]


def quantize_run(run_dir: Path, cfg: Config, dist: DistInfo, device: torch.device, force: bool = False) -> dict:
    """Hessians → GPTQ → Brotli artifact; writes the artifact, the budget and the per-tensor table."""
    from golf.quant import quantize_model
    from golf.submission import code_bytes

    out = run_dir / ARTIFACT_NAME
    if out.exists() and not force:
        raise GolfError(f"{str(out)!r} exists; pass --force to quantize again")
    model = load_run_model(run_dir, cfg, device, source="raw")
    hessians = None
    if hessian_path(run_dir, dist.rank).is_file():
        hessians = {k: v.to(device) for k, v in
                    torch.load(hessian_path(run_dir, dist.rank), map_location="cpu", weights_only=True).items()}
        log.info("using the Hessians collected during training (%s)", hessian_path(run_dir, dist.rank).name)
    blob, report = quantize_model(model, cfg, calibration_batches(cfg, dist, device), device, code_bytes(),
                                  hessians=hessians)
    budget = {k: v for k, v in report.items() if k != "tensors"}
    log.info("artifact %d bytes + code %d = %d (limit %d, fits %s); hessians %.1fs, gptq %.1fs",
             budget["model_bytes"], budget["code_bytes"], budget["total"], budget["limit"], budget["fits"],
             budget["hessian_s"], budget["gptq_s"])
    if dist.is_main:
        from golf.runtime import atomic_write_bytes

        atomic_write_bytes(out, blob)
        (run_dir / "tables").mkdir(exist_ok=True)
        atomic_write_text(run_dir / "tables" / "quant_tensors.csv", report["tensors"].to_csv(index=False))
        atomic_write_json(run_dir / "quant_budget.json", budget)
    barrier()
    return budget


def fixed_batch(forward_logits, batch: int):
    """Pad a short last batch up to ``batch`` rows, so a static-shape compiled graph is not rebuilt for it."""
    def forward(ids: torch.Tensor) -> torch.Tensor:
        n = ids.size(0)
        if n >= batch:
            return forward_logits(ids)
        return forward_logits(torch.cat((ids, ids.new_zeros(batch - n, ids.size(1)))))[:n]

    return forward


EVAL_FUNCS = {"plain": "eval_plain", "sliding": "eval_sliding", "ttt": "eval_ttt"}


def evaluate_run(run_dir: Path, mode: str, cfg: Config, dist: DistInfo, device: torch.device,
                 source: str = "artifact", force: bool = False) -> dict:
    """Evaluate the run's artifact (or raw model) in one mode; writes ``eval_<mode>.json``."""
    import golf.evaluate as ev
    from golf.bpb import build_byte_luts
    from golf.data import load_val_tokens
    from golf.train import use_compile

    if mode not in EVAL_FUNCS:
        raise GolfError(f"evaluation mode must be one of {sorted(EVAL_FUNCS)}, got {mode!r}")
    name = f"eval_{mode}.json" if source == "artifact" else f"eval_{mode}_raw.json"
    if (run_dir / name).exists() and not force:
        raise GolfError(f"{str(run_dir / name)!r} exists; pass --force to evaluate again")
    model = load_run_model(run_dir, cfg, device, source)
    val_tokens = load_val_tokens(cfg.data_dir, cfg.eval_seq_len, cfg.max_val_tokens)
    luts = build_byte_luts(cfg.tokenizer_path, cfg.vocab_size).to(device)
    # Scoring runs compiled on GPU, as the record's; TTT's training steps stay eager (spec §6.3).
    compiled = None
    if use_compile(cfg, device):
        compiled = fixed_batch(torch.compile(model.forward_logits, dynamic=False, fullgraph=True), cfg.eval_batch_seqs)
    if mode == "sliding":
        result = ev.eval_sliding(model, val_tokens, luts, cfg, forward_logits=compiled)
    elif mode == "ttt":
        model.train()
        result = ev.eval_ttt(model, val_tokens, luts, cfg, forward_logits=compiled)
    else:
        result = getattr(ev, EVAL_FUNCS[mode])(model, val_tokens, luts, cfg)
    result = {"mode": mode, "source": source, **result}
    if dist.is_main:
        atomic_write_json(run_dir / name, result)
    log.info("%s (%s): val_loss %.5f val_bpb %.5f in %.1fs", mode, source, result["val_loss"], result["val_bpb"],
             result["seconds"])
    return result
