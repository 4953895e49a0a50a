"""Run-folder steps after training: quantize a run, evaluate a run (files named in ``golf.runs``).

The CLI and the notebooks both call these, so a notebook holds no logic of its own.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from golf.config import EVAL_MODES, Config, save_config
from golf.banking import load_checkpoint
from golf.model import GPT, build_model
from golf.runs import (ARTIFACT, DERIVED_FROM_ARTIFACT, MODEL, QUANTIZE_CONFIG,  # noqa: F401  (API)
                       RunDir, eval_name)
from golf.runtime import DistInfo, GolfError, atomic_write_json, atomic_write_text, barrier, code_version
from golf.train import calibration_batches, hessian_path  # noqa: F401  (also golf.pipeline's API)

log = logging.getLogger("golf")

ARTIFACT_NAME = ARTIFACT
# The files made from the artifact (golf.runs.DERIVED_FROM_ARTIFACT) leave with it when it is replaced,
# so an old BPB never sits beside a new artifact (eval_<mode>_raw.json scores model.pt and stays).
SUPERSEDED_DIR = "superseded"


def config_changes(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """The keys where ``cfg`` differs from the run's training config (``--set`` after training)."""
    config_file = RunDir(run_dir).config_file
    trained = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return {k: v for k, v in cfg.to_dict().items() if k in trained and trained[k] != v}


def supersede_artifact(run_dir: Path) -> Path | None:
    """Move the artifact and every file made from it into ``run_dir/superseded/NNN/``.

    Nothing is deleted: the old artifact and its results stay together, out of the way of the new
    one. Returns the folder, or None if there was nothing to move.
    """
    present = [n for n in (ARTIFACT_NAME, *DERIVED_FROM_ARTIFACT) if (run_dir / n).exists()]
    if not present:
        return None
    base = run_dir / SUPERSEDED_DIR
    base.mkdir(exist_ok=True)
    n = 1 + max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0)
    while True:
        dest = base / f"{n:03d}"
        try:
            dest.mkdir()
            break
        except FileExistsError:
            n += 1
    for name in present:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(run_dir / name, dest / name)
    log.info("moved the replaced artifact and the files made from it (%s) to %s", ", ".join(present), dest)
    return dest


def load_run_model(run_dir: Path, cfg: Config, device: torch.device, source: str = "raw") -> GPT:
    """The run's model from ``model.pt`` (raw, post-EMA) or from the quantized artifact, looping on."""
    from golf.quant import load_artifact

    if source not in ("raw", "artifact"):
        raise ValueError(f"source must be 'raw' or 'artifact', got {source!r}")
    path = _check_weights(run_dir, source)  # before the model is built, so this is the only line a user sees
    model = build_model(cfg, device, init=False)  # every tensor is loaded next, strictly
    if source == "raw":
        load_checkpoint(model, path)
    else:
        load_artifact(path, model)
    model.set_looping(cfg.num_loops > 0)  # every evaluation runs looped (spec §2.7)
    model.eval()
    return model


def check_finite_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights that are NaN or infinite (a diverged training, a damaged file) are one line, not a
    linear-algebra traceback later."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise GolfError(f"{str(path)!r} holds NaN or infinite weights ({len(bad)} tensor(s): {', '.join(bad[:3])}): "
                        "the training diverged or the file is damaged; nothing to quantize: train again")


def check_quantize(run_dir: Path, force: bool = False) -> None:
    """What ``quantize_run`` would refuse, before any device is set up."""
    if (run_dir / ARTIFACT_NAME).exists() and not force:
        raise GolfError(f"{str(run_dir / ARTIFACT_NAME)!r} exists; pass --force to quantize again")
    _check_weights(run_dir, "raw")


def _restore_superseded(run_dir: Path, moved: Path) -> bool:
    """Move what ``supersede_artifact`` put in ``moved`` back into the run folder; False if it could not."""
    try:
        for item in sorted(p for p in moved.rglob("*") if p.is_file()):
            os.replace(item, run_dir / item.relative_to(moved))
        shutil.rmtree(moved, ignore_errors=True)
        if not any(moved.parent.iterdir()):
            moved.parent.rmdir()  # superseded/ was made for this move alone
        return True
    except OSError:
        return False


def quantize_run(run_dir: Path, cfg: Config, dist: DistInfo, device: torch.device, force: bool = False,
                 code_bytes: int | None = None, code_modes: tuple[str, ...] | None = None) -> dict:
    """Hessians → GPTQ → compressed artifact; writes the artifact, the budget and the per-tensor table.

    ``force`` replaces an existing artifact: once the new one is made, the old one and every file made
    from it (``DERIVED_FROM_ARTIFACT``) move to ``superseded/NNN/``. ``quantize_config.yaml`` records
    the settings, and quant_budget.json the artifact's sha256, the keys set since training and the
    seconds of each stage (``*_s``). Each stage logs its start and its seconds (``quantize_model``).
    ``code_bytes``: the submission's code (default: the train_gpt.py golf.submission makes for ``cfg``,
    or an upper bound where the model fits whatever it is; the exported train_gpt.py passes its own size),
    a file scoring ``code_modes`` (default: the record's stages).
    """
    import time

    from golf.quant import artifact_sha256, quantize_model

    if code_bytes is None:
        from golf.submission import DEFAULT_MODES, budget_code_bytes

        code_modes = [m for m in EVAL_MODES if m in (code_modes or DEFAULT_MODES)]  # as export orders them
        code_bytes = budget_code_bytes(cfg, tuple(code_modes))
    else:
        code_modes = None
    check_quantize(run_dir, force)
    out = run_dir / ARTIFACT_NAME
    t_start = time.perf_counter()
    log.info("quantize %s: loading %s on %s", run_dir, MODEL, device)
    model = load_run_model(run_dir, cfg, device, source="raw")
    check_finite_weights(model, RunDir(run_dir).model)  # before the Hessian pass, which would fail on them
    hessians = None
    if hessian_path(run_dir, dist.rank).is_file():
        hessians = {k: v.to(device) for k, v in
                    torch.load(hessian_path(run_dir, dist.rank), map_location="cpu", weights_only=True).items()}
        log.info("using the Hessians collected during training (%s)", hessian_path(run_dir, dist.rank).name)
    blob, report = quantize_model(model, cfg, calibration_batches(cfg, dist, device), device, code_bytes,
                                  hessians=hessians)
    budget = {k: v for k, v in report.items() if k != "tensors"}
    budget["quantize_s"] = round(time.perf_counter() - t_start, 3)
    if code_modes:  # the code counted is that of a train_gpt.py scoring these stages (export counts its own)
        budget["code_modes"] = code_modes
    log.info("artifact %d bytes + code %s%d = %d (limit %d, fits %s); %s", budget["model_bytes"],
             "" if budget.get("code_bytes_exact", True) else "at most ", budget["code_bytes"], budget["total"], budget["limit"], budget["fits"],
             ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in budget.items() if k.endswith("_s")))
    if code_modes:
        log.info("code counted: the train_gpt.py of a submission scoring %s (golf export-submission counts the "
                 "stages the run scored)", ", ".join(code_modes))
    if dist.is_main:
        from golf.runtime import atomic_write_bytes

        budget = {**budget, "artifact_sha256": artifact_sha256(blob), "config_changes": config_changes(run_dir, cfg),
                  "kernels_in_effect": model.fused_kernels(), **code_version()}
        moved = supersede_artifact(run_dir)
        try:
            atomic_write_bytes(out, blob)
            save_config(cfg, run_dir / QUANTIZE_CONFIG)
            atomic_write_text(RunDir(run_dir).table("quant_tensors.csv"), report["tensors"].to_csv(index=False))
            atomic_write_json(RunDir(run_dir).quant_budget, budget)
        except OSError as exc:  # a full disk: the new files go, the replaced ones come back
            for name in (ARTIFACT_NAME, QUANTIZE_CONFIG, *DERIVED_FROM_ARTIFACT):
                if moved is None or (moved / name).exists():
                    (run_dir / name).unlink(missing_ok=True)
            back = _restore_superseded(run_dir, moved) if moved else False
            kept = ("; the artifact and results it replaced are back in place" if back else
                    f"; the artifact and results it replaces are kept in {str(moved)!r}" if moved else "")
            raise GolfError(f"could not write the new artifact's files into {str(run_dir)!r} ({exc}){kept}") from None
        log.info("wrote %s", out)
    barrier()
    return budget


EVAL_FUNCS = {mode: f"eval_{mode}" for mode in EVAL_MODES}  # lora_ttt and phased_ttt: in golf.lora_ttt


def check_evaluate(run_dir: Path, mode: str, source: str = "artifact", force: bool = False) -> str:
    """What ``evaluate_run`` would refuse, before any device is set up; returns the result's file name."""
    if mode not in EVAL_FUNCS:
        raise GolfError(f"evaluation mode must be one of {sorted(EVAL_FUNCS)}, got {mode!r}")
    name = eval_name(mode, raw=source != "artifact")
    if (run_dir / name).exists() and not force:
        raise GolfError(f"{str(run_dir / name)!r} exists; pass --force to evaluate again")
    _check_weights(run_dir, source)
    return name


def check_eval_tokenizer(run_dir: Path, cfg: Config, allow_other: bool = False) -> dict[str, Any]:
    """The tokenizer evaluated with must be the one the run trained with (environment.json's sha256),
    unless ``allow_other`` (--allow-other-tokenizer); returns what the eval result records of it."""
    from golf.data_binding import tokenizer_fingerprint
    from golf.runtime import read_json

    used = tokenizer_fingerprint(cfg.tokenizer_path)
    env_path = RunDir(run_dir).environment
    trained = (read_json(env_path) or {}).get("tokenizer_sha256")
    record: dict[str, Any] = {"tokenizer_path": cfg.tokenizer_path, "tokenizer_sha256": used}
    if trained and trained != used:
        if not allow_other:
            raise GolfError(f"tokenizer {cfg.tokenizer_path!r} (sha256 {used[:12]}) is not the one the run trained "
                            f"with ({str(env_path)!r} records sha256 {trained[:12]}): its BPB would not be the "
                            "model's; evaluate with the training tokenizer and its data, or pass "
                            "--allow-other-tokenizer (the result then says so)")
        record["tokenizer_differs_from_training"] = {"trained_sha256": trained}
    return record


def _check_weights(run_dir: Path, source: str) -> Path:
    """The run's weights file for ``source`` (raw: model.pt; artifact: the quantized one), which must exist."""
    path = RunDir(run_dir).model if source == "raw" else RunDir(run_dir).artifact
    if not path.is_file():
        todo = "train it first (golf train)" if source == "raw" else "run golf quantize first"
        raise GolfError(f"run folder {str(run_dir)!r} has no {path.name}: {todo}")
    if source == "raw":
        _check_model_sha(path, RunDir(run_dir).summary)
    return path


def _check_model_sha(path: Path, summary_path: Path) -> None:
    """model.pt must be the file training saved: its sha256 is the one train_summary.json records."""
    from golf.runtime import file_sha256, read_json

    recorded = (read_json(summary_path) or {}).get("model_sha256")
    if not recorded:  # a run trained before golf recorded it
        return
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if _VERIFIED.get(key) != recorded:
        found = file_sha256(path)
        if found != recorded:
            raise GolfError(f"{str(path)!r} has sha256 {found[:12]}, but {str(summary_path)!r} records "
                            f"{recorded[:12]} for the model training saved: the file was changed or damaged "
                            "since; train again (or restore it)")
        _VERIFIED[key] = found


_VERIFIED: dict[tuple, str] = {}  # files already hashed in this process (quantize checks, then loads)


def evaluate_run(run_dir: Path, mode: str, cfg: Config, dist: DistInfo, device: torch.device,
                 source: str = "artifact", force: bool = False, allow_other_tokenizer: bool = False) -> dict:
    """Evaluate the run's artifact (or raw model) in one mode; writes ``eval_<mode>.json``."""
    import golf.evaluate as ev
    from golf.bpb import eval_byte_counts
    from golf.val_stream import load_val_tokens
    from golf.compile_policy import compiled_nll, compiled_ttt_loss, prepare_compile, use_compile

    name = check_evaluate(run_dir, mode, source, force)
    tokenizer = check_eval_tokenizer(run_dir, cfg, allow_other_tokenizer)
    made_from = {}
    if source == "artifact" and (run_dir / ARTIFACT_NAME).is_file():
        from golf.quant import artifact_sha256

        made_from = {"artifact_sha256": artifact_sha256(run_dir / ARTIFACT_NAME)}  # export checks it
    model = load_run_model(run_dir, cfg, device, source)
    val_tokens = load_val_tokens(cfg.data_dir, cfg.eval_seq_len, cfg.max_val_tokens, vocab_size=cfg.vocab_size)
    luts = eval_byte_counts(cfg, val_tokens).to(device)  # the tables, or CaseOps' byte sidecar
    # On GPU, scoring runs compiled (as the record's) on the scored positions only, and so does TTT's
    # training loss, forward and backward (the record's TTT steps were eager; same function).
    nll_fn = train_loss = None
    if use_compile(cfg, device):
        prepare_compile(cfg)
        nll_fn = compiled_nll(model, cfg)
        train_loss = compiled_ttt_loss(model)
    if mode == "sliding":
        result = ev.eval_sliding(model, val_tokens, luts, cfg, nll_fn=nll_fn)
    elif mode == "ttt":
        model.train()
        result = ev.eval_ttt(model, val_tokens, luts, cfg, nll_fn=nll_fn, train_loss=train_loss)
    elif mode in ("lora_ttt", "phased_ttt"):  # per-document adapters: eager unless ttt_lora_compile
        import golf.lora_ttt as lt

        lora_nll = lt.compiled_chunk_nll() if cfg.ttt_lora_compile and use_compile(cfg, device) else None
        if cfg.ttt_lora_compile and lora_nll is None:
            log.warning("ttt_lora_compile is set but compile is off here (compile: %s on %s): the adapted "
                        "forward runs eager", cfg.compile, device.type)
        log.info("%s: adapted forward %s", mode, "compiled (ttt_lora_compile)" if lora_nll else "eager")
        result = getattr(lt, EVAL_FUNCS[mode])(model, val_tokens, luts, cfg, nll_fn=lora_nll)
        fallback = getattr(lora_nll, "fallback", None)
        result["adapted_forward_compiled"] = lora_nll is not None and fallback is None
        if fallback:
            result["adapted_forward_compile_failed"] = fallback
    else:
        result = getattr(ev, EVAL_FUNCS[mode])(model, val_tokens, luts, cfg)
    in_effect = model.fused_kernels()
    if mode == "lora_ttt":  # every weight is an adapted one there: the attention and MLP fusions stand aside
        in_effect.update(fused_mlp=False, fused_qkv=False)
    result = {"mode": mode, "source": source, **result, **made_from, **tokenizer,
              "config_changes": config_changes(run_dir, cfg),
              "kernels_in_effect": in_effect, **code_version()}
    if dist.is_main:
        atomic_write_json(run_dir / name, result)
    log.info("%s (%s): val_loss %.5f val_bpb %.5f in %.1fs", mode, source, result["val_loss"], result["val_bpb"],
             result["seconds"])
    return result
