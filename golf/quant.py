"""Post-training quantization end to end (§5.1): unbank, Hessians, GPTQ (and LQER), compress, fit the
budget, verify; and an artifact loaded back into a model.

``quantize_model`` logs each stage's start and seconds on the "golf" logger and shows a tqdm bar
where a stage has a count (rank 0 only).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor

from golf.artifact import ArtifactError, deserialize, piece_bytes, serialize
from golf.budget import artifact_budget, prune_to_fit
from golf.compressors import default_threads
from golf.gptq import collect_hessians
from golf.lqer import dequantize_matrix, lqer_correct
from golf.quantized_state import dequantize_state_dict, quantize_state_dict, tensor_plan

log = logging.getLogger("golf")


def _stage(name: str, t0: float, times: dict[str, float], key: str) -> None:
    times[key] = round(time.perf_counter() - t0, 3)
    log.info("%s: done in %.1f s", name, times[key])


def quantize_model(model, cfg, calib_batches: Any, device: torch.device | str, code_bytes: int | Callable,
                   hessians: dict[str, Tensor] | None = None, threads: int | None = None,
                   progress: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Unbank → Hessians → GPTQ (→ LQER) → compress → budget (→ prune) → verify, spec §5.1 steps 4–6.

    Returns (artifact bytes, report): report["tensors"] is a DataFrame with one row per tensor
    (name, shape, bits, clip_sigmas, rel_error ‖W−Ŵ‖/‖W‖, q_bytes = the compressed bytes of its
    integers in the artifact, gptq_s); the other keys are the stage seconds hessian_s, gptq_s,
    compress_s, prune_s, verify_s, and compressor, n_pruned and the artifact_budget fields. With
    ``lqer_rank`` > 0 the corrections (``lqer_correct``) are made before compression, so that the
    budget and prune-to-fit count their bytes (pruning then leaves them as made), Ŵ includes them,
    and the report adds lqer_s, lqer_rank, lqer_top_k, lqer_bytes (what they add to the artifact)
    and lqer_tensors ({name: {err_before, err_after}}, ‖E‖_F). Pass
    ``hessians`` already collected (e.g. inside the training cap, the spec §9.10 fix) to skip the
    collection (hessian_s is then 0); ``calib_batches`` is then unused. ``threads``: compression
    threads (default: this rank's share of the cores). ``progress``: bars on rank 0.
    """
    from golf.banking import unbank_state_dict

    device, times = torch.device(device), {}
    threads = threads or default_threads()
    t0 = time.perf_counter()
    if hessians is None:
        log.info("Hessians: %d calibration batches on %s", cfg.gptq_calibration_batches, device)
        hessians = collect_hessians(model, calib_batches, cfg.gptq_calibration_batches, device,
                                    all_reduce=cfg.fix_allreduce_hessians, progress=progress)
        _stage("Hessians", t0, times, "hessian_s")
    else:
        times["hessian_s"] = 0.0
    t0 = time.perf_counter()
    sd = unbank_state_dict({k: v.detach() for k, v in model.state_dict().items()}, cfg.num_layers)
    plans = [tensor_plan(n, t, cfg) for n, t in sd.items()]
    log.info("GPTQ: %d matrices (%s) on %s", sum(p is not None for p in plans),
             ", ".join(f"{sum(p is not None and p[0] == b for p in plans)} int{b}"
                       for b in sorted({p[0] for p in plans if p is not None})), device)
    per_tensor: dict[str, float] = {}
    quantized, meta = quantize_state_dict(sd, hessians, cfg, device=device, timings=per_tensor, progress=progress)
    _stage("GPTQ", t0, times, "gptq_s")
    lqer: dict[str, dict] = {}
    if cfg.lqer_rank > 0 and cfg.lqer_top_k > 0:
        t0 = time.perf_counter()
        log.info("LQER: rank-%d corrections (at most each matrix's smaller side) of the %d largest GPTQ errors",
                 cfg.lqer_rank, cfg.lqer_top_k)
        plain_q, plain_meta = quantized, meta
        quantized, meta, lqer = lqer_correct(sd, quantized, meta, cfg.lqer_rank, cfg.lqer_top_k)
        _stage("LQER", t0, times, "lqer_s")

    t0 = time.perf_counter()
    raw = sum(t.numel() * t.element_size() for t in quantized.values())
    log.info("compress: %.1f MB of tensors, %s, %d threads", raw / 1e6, cfg.compressor, threads)
    cache: dict = {}
    blob = serialize(quantized, meta, cfg.compressor, threads, cache, progress)
    if lqer:  # the corrections' share of the artifact: only the layout and the small-tensor piece change
        lqer_bytes = len(blob) - len(serialize(plain_q, plain_meta, cfg.compressor, threads, cache))
        log.info("LQER: %d bytes of the artifact", lqer_bytes)
    _stage("compress", t0, times, "compress_s")
    exact = True
    if callable(code_bytes):  # counted exactly only where it could change what fits
        code_bytes, exact = code_bytes(len(blob), cfg.artifact_limit_bytes)
    budget = artifact_budget(len(blob), code_bytes, cfg.artifact_limit_bytes)  # the file, header included
    log.info("artifact %d bytes + code %s%d = %d (limit %d)", len(blob), "" if exact else "at most ", code_bytes,
             budget["total"], budget["limit"])

    t0, n_pruned = time.perf_counter(), 0
    if not budget["fits"] and not cfg.prune_to_fit:
        log.warning("%d bytes over the limit; prune_to_fit is off: the artifact stands as made", -budget["headroom"])
    if not budget["fits"] and cfg.prune_to_fit:
        log.info("prune: %d bytes over; zeroing int6 ±1 entries, smallest row scale first (fix_prune_to_fit=%s)",
                 -budget["headroom"], cfg.fix_prune_to_fit)
        quantized, n_pruned, blob = prune_to_fit(quantized, meta, code_bytes, cfg.artifact_limit_bytes,
                                                 cfg.compressor, cfg.fix_prune_to_fit, blob=blob, cache=cache,
                                                 threads=threads, progress=progress)
        budget = artifact_budget(len(blob), code_bytes, cfg.artifact_limit_bytes)
        _stage("prune", t0, times, "prune_s")
    else:
        times["prune_s"] = 0.0

    t0 = time.perf_counter()
    log.info("verify: decompressing the artifact and comparing it with the quantized tensors")
    back, back_meta = deserialize(blob, threads, progress)
    wrong = [k for k, v in quantized.items()
             if k not in back or back[k].dtype != v.dtype or not torch.equal(back[k], v)]
    if wrong or set(back) != set(quantized) or back_meta != meta:
        raise ArtifactError(f"the artifact does not read back as written: {(wrong or ['meta or keys'])[:5]}")
    _stage("verify", t0, times, "verify_s")

    sizes = piece_bytes(blob)
    rows = []
    for name, m in meta.items():
        if m["type"] == "passthrough":
            continue
        W = sd[name].float().cpu()
        err = (W - dequantize_matrix(quantized, name, m)).norm() / W.norm().clamp_min(1e-30)
        rows.append({"name": name, "shape": tuple(W.shape), "bits": m["bits"], "clip_sigmas": m.get("clip_sigmas"),
                     "rel_error": float(err), "q_bytes": sizes.get(name + ".q"), "gptq_s": per_tensor.get(name, 0.0)})
    report = {"tensors": pd.DataFrame(rows), "n_hessians": len(hessians), **times, "compressor": cfg.compressor,
              "n_pruned": n_pruned, **budget, "code_bytes_exact": exact}
    if lqer:  # only when on, so that the default report is the record's
        report.update(lqer_rank=cfg.lqer_rank, lqer_top_k=cfg.lqer_top_k, lqer_bytes=lqer_bytes, lqer_tensors=lqer)
    return blob, report


def artifact_sha256(path_or_bytes: str | Path | bytes) -> str:
    """sha256 of an artifact (file or bytes): results made from an artifact record it."""
    blob = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(blob).hexdigest()


def load_artifact(path_or_bytes: str | Path | bytes, model) -> dict[str, Any]:
    """Artifact → dequantize into the model's dtypes → bank → load_state_dict(strict=True). Returns meta."""
    from golf.banking import bank_state_dict, unbank_state_dict

    if isinstance(path_or_bytes, (bytes, bytearray)):
        blob = bytes(path_or_bytes)
    else:
        path = Path(path_or_bytes)
        if not path.is_file():
            raise ArtifactError(f"artifact {str(path)!r} does not exist")
        blob = path.read_bytes()
    quantized, meta = deserialize(blob)
    L = model.cfg.num_layers
    template = unbank_state_dict(model.state_dict(), L)
    sd = dequantize_state_dict(quantized, meta, template)
    model.load_state_dict(bank_state_dict(sd, L), strict=True)
    return meta
