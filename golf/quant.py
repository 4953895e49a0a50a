"""Post-training quantization and the compressed artifact (spec §5).

- Hessians H = Σ XᵀX of every matrix's input over calibration batches (spec §5.2).
- GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
  Pre-trained Transformers", arXiv 2210.17323) with act-order and the record's SDClip row
  scales s_r = k·std(W_r)/R (spec §5.3): int6 for the 66 attention/MLP matrices, int8 for the
  tied embedding, fp16 for small tensors.
- Storage (spec §5.4): int8 values + fp16 row scales, ``torch.save`` → byte shuffle → Brotli.
  golf adds an 18-byte header (magic, version, compressor, length, crc32) so that a wrong,
  truncated or corrupt file fails with a clear ``ArtifactError`` instead of a pickle trace.
- Budget (spec §5.5): code bytes + compressed model bytes ≤ 16,000,000, with the record's
  prune-to-fit fallback (and its §9.14 bug, switchable).
"""
from __future__ import annotations

import hashlib
import io
import lzma
import math
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import brotli
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from golf.runtime import GolfError, all_reduce_

MATRIX_SUFFIXES = ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight",
                   "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")
EMBED_NAME = "tok_emb.weight"
SHUFFLE_MAGIC = b"BSHF"
ARTIFACT_MAGIC = b"GOLF"
ARTIFACT_VERSION = 1
_HEADER = struct.Struct("<4sBBQI")  # magic, version, compressor id, payload length, crc32(payload)
_COMPRESSORS = {"brotli": 1, "lzma": 2}


class ArtifactError(GolfError):
    """The artifact file is not a golf artifact, is truncated or corrupt, or does not fit the model."""


# --- Hessians (spec §5.2) ----------------------------------------------------------------------

def _weight_names(capture_name: str) -> list[str]:
    """Capture name -> the unbanked weights that share that input (c_q's input feeds c_q, c_k, c_v)."""
    if capture_name.endswith(".attn.c_q"):
        base = capture_name[: -len("c_q")]
        return [base + m + ".weight" for m in ("c_q", "c_k", "c_v")]
    return [capture_name + ".weight"]


def _next_inputs(batches: Any, device: torch.device) -> Tensor:
    """One calibration batch of ids: from a loader with ``next_batch`` or any iterator of (x, y) / x."""
    item = batches.next_batch(device) if hasattr(batches, "next_batch") else next(batches)
    x = item[0] if isinstance(item, (tuple, list)) else item
    return x.to(device)


@torch.no_grad()
def collect_hessians(model, batches_iter: Any, n_batches: int, device: torch.device | str,
                     all_reduce: bool = False) -> dict[str, Tensor]:
    """H = Σ XᵀX (fp32) per unbanked weight name, averaged over ``n_batches`` (spec §5.2).

    Eval mode, no grad, looping on (the looped layers add one XᵀX per pass), plain
    ``forward_logits``. ``all_reduce=True`` also averages over ranks: the fix for spec §9.9
    (the record quantizes with each rank's own Hessians). Returns {weight name: H [in, in]};
    c_q, c_k and c_v share one tensor.
    """
    device = torch.device(device)
    sums: dict[str, Tensor] = {}

    def capture(name: str, x: Tensor) -> None:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x2 = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, in)
            if name not in sums:
                sums[name] = torch.zeros(x2.shape[1], x2.shape[1], dtype=torch.float32, device=x2.device)
            sums[name].addmm_(x2.T, x2)

    if not hasattr(batches_iter, "next_batch"):
        batches_iter = iter(batches_iter)
    was_training, was_looping = model.training, model.looping
    model.eval()
    model.set_looping(True)
    model.capture = capture
    try:
        for _ in range(n_batches):
            model.forward_logits(_next_inputs(batches_iter, device))
    finally:
        model.capture = None
        model.set_looping(was_looping)
        model.train(was_training)
    hessians: dict[str, Tensor] = {}
    for name in sorted(sums):  # same order on every rank for the collective
        h = sums[name].div_(n_batches)
        if all_reduce:
            all_reduce_(h, "avg")
        for w in _weight_names(name):
            hessians[w] = h
    return hessians


# --- GPTQ with SDClip scales (spec §5.3) -------------------------------------------------------

def sdclip_scales(W: Tensor, bits: int, clip_sigmas: float) -> Tensor:
    """Per-row scale s_r = k·std(W_r)/R (unbiased std), clamped ≥ 1e-10, rounded to fp16. W: (rows, cols)."""
    R = 2 ** (bits - 1) - 1
    return (clip_sigmas * W.float().std(dim=1) / R).clamp_min(1e-10).to(torch.float16)  # (rows,)


def _safe_scale(s: Tensor) -> tuple[Tensor, Tensor]:
    # A constant row has s = fp16(1e-10) = 0: its values quantize to 0 instead of x/0 = NaN or inf.
    live = s > 0
    return torch.where(live, s, torch.ones_like(s)), live.to(s.dtype)


def _round_clamp(w: Tensor, s_div: Tensor, live: Tensor, R: int) -> Tensor:
    return torch.round(w / s_div).clamp_(-R, R).mul_(live)


def rtn_quantize(W: Tensor, bits: int, clip_sigmas: float) -> tuple[Tensor, Tensor]:
    """Round-to-nearest with the same SDClip scales: the baseline GPTQ must beat."""
    R = 2 ** (bits - 1) - 1
    scale = sdclip_scales(W, bits, clip_sigmas)
    q = _round_clamp(W.float(), *_safe_scale(scale.float()[:, None]), R)
    return q.to(torch.int8), scale


@torch.no_grad()
def gptq_quantize(W: Tensor, H: Tensor, bits: int, clip_sigmas: float, block_size: int = 128,
                  damp: float = 0.01) -> tuple[Tensor, Tensor]:
    """GPTQ of one matrix W (rows = out, cols = in) with input Hessian H (cols, cols), spec §5.3.

    Runs in fp32 on W's device. Returns q int8 (rows, cols) in [-R, R] and scale fp16 (rows,).
    """
    R = 2 ** (bits - 1) - 1
    device = W.device
    scale = sdclip_scales(W, bits, clip_sigmas)  # from the original rows
    s = scale.to(device).float()[:, None]  # (rows, 1), the fp16-rounded value is what quantizes
    s_div, live = _safe_scale(s)
    W = W.detach().float().clone()
    H = H.detach().to(device).float().clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * torch.diag(H).mean())
    perm = torch.argsort(torch.diag(H), descending=True)  # act-order
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(Hinv)
    Hinv = torch.linalg.cholesky(Hinv, upper=True)  # (cols, cols) upper factor of H⁻¹
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)  # (rows, block)
        for j in range(i2 - i1):
            w = W1[:, j:j + 1]  # (rows, 1)
            q = _round_clamp(w, s_div, live, R)
            Q[:, i1 + j:i1 + j + 1] = q
            err = (w - q * s) / Hinv1[j, j]
            W1[:, j:] -= err * Hinv1[j:j + 1, j:]  # within the block
            Err1[:, j:j + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the later columns
    Q = Q[:, torch.argsort(perm)]
    return Q.to(torch.int8), scale


# --- state dicts (spec §5.4) -------------------------------------------------------------------

def _tensor_plan(name: str, t: Tensor, cfg) -> tuple[int, float] | None:
    """(bits, k) for a tensor GPTQ quantizes, None for passthrough."""
    if not t.is_floating_point() or t.numel() <= cfg.quant_passthrough_numel or t.ndim != 2:
        return None
    if name == EMBED_NAME:
        return cfg.embed_bits, cfg.embed_clip_sigmas
    if name.endswith(MATRIX_SUFFIXES):
        return cfg.matrix_bits, cfg.matrix_clip_sigmas
    return None


def quantize_state_dict(unbanked_sd: dict[str, Tensor], hessians: dict[str, Tensor], cfg,
                        device: torch.device | str | None = None,
                        timings: dict[str, float] | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """GPTQ every matrix (``NAME.q`` int8 + ``NAME.scale`` fp16) and keep small tensors as fp16.

    meta[name] is {"type": "int6"/"int8", "bits", "clip_sigmas"} or {"type": "passthrough"}.
    ``timings``, if given, receives the GPTQ seconds per tensor.
    """
    quantized: dict[str, Tensor] = {}
    meta: dict[str, Any] = {}
    missing = [n for n, t in unbanked_sd.items() if _tensor_plan(n, t, cfg) and n not in hessians]
    if missing:
        raise GolfError(f"no Hessian for {missing[:8]}: were they captured by collect_hessians?")
    for name, t in unbanked_sd.items():
        plan = _tensor_plan(name, t, cfg)
        if plan is None:
            t = t.detach().cpu()
            quantized[name] = t.to(torch.float16) if t.is_floating_point() else t
            meta[name] = {"type": "passthrough"}
            continue
        bits, k = plan
        dev = torch.device(device) if device is not None else t.device
        t0 = time.perf_counter()
        q, scale = gptq_quantize(t.to(dev), hessians[name].to(dev), bits, k,
                                 cfg.gptq_block_size, cfg.gptq_damp)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
        quantized[name + ".q"], quantized[name + ".scale"] = q.cpu(), scale.cpu()
        meta[name] = {"type": f"int{bits}", "bits": bits, "clip_sigmas": float(k)}
    return quantized, meta


def dequantize_state_dict(quantized: dict[str, Tensor], meta: dict[str, Any],
                          template_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """W = q·s_row, cast (like passthrough tensors) to the template's dtype; keys and shapes checked."""
    missing, unexpected = sorted(set(template_sd) - set(meta)), sorted(set(meta) - set(template_sd))
    if missing or unexpected:
        raise ArtifactError(f"artifact keys do not match the model: missing keys {missing[:10]}"
                            f"{'...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}")
    stored = {k for n, m in meta.items() for k in ([n] if m["type"] == "passthrough" else [n + ".q", n + ".scale"])}
    if stored != set(quantized):
        raise ArtifactError(f"artifact is corrupt: its tensors and its meta disagree on {sorted(stored ^ set(quantized))[:10]}")
    out: dict[str, Tensor] = {}
    for name, ref in template_sd.items():
        if meta[name]["type"] == "passthrough":
            w = quantized[name]
        else:
            w = quantized[name + ".q"].float() * quantized[name + ".scale"].float()[:, None]
        if tuple(w.shape) != tuple(ref.shape):
            raise ArtifactError(f"artifact tensor {name!r} has shape {tuple(w.shape)}, model has {tuple(ref.shape)}")
        out[name] = w.to(ref.dtype)
    return out


# --- bytes: shuffle, compress, header (spec §5.4, §9.15) ---------------------------------------

def byte_shuffle(data: bytes, stride: int = 2) -> bytes:
    """b"BSHF" + stride byte + the bytes at offsets ≡ 0 (mod stride), then ≡ 1, ...

    Groups the low and high bytes of fp16 / int8 streams so the entropy coder sees similar bytes together.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    return SHUFFLE_MAGIC + bytes([stride]) + b"".join(arr[i::stride].tobytes() for i in range(stride))


def byte_unshuffle(data: bytes) -> bytes:
    """Inverse of byte_shuffle: lane i holds n//stride bytes, +1 for the first n % stride lanes."""
    if data[:4] != SHUFFLE_MAGIC or len(data) < 5:
        raise ArtifactError("artifact is corrupt: the decompressed payload lacks the BSHF shuffle magic")
    stride = data[4]
    payload = np.frombuffer(data, dtype=np.uint8, offset=5)
    n = payload.size
    out = np.empty(n, dtype=np.uint8)
    pos = 0
    for i in range(stride):
        lane = n // stride + (1 if i < n % stride else 0)
        out[i::stride] = payload[pos:pos + lane]
        pos += lane
    return out.tobytes()


def _compress(data: bytes, compressor: str) -> bytes:
    if compressor == "brotli":
        return brotli.compress(data, quality=11)
    if compressor == "lzma":
        return lzma.compress(data, preset=6)
    raise GolfError(f"unknown compressor {compressor!r}; expected one of {sorted(_COMPRESSORS)}")


def serialize(quantized: dict[str, Tensor], meta: dict[str, Any], compressor: str = "brotli") -> bytes:
    """torch.save({'w', 'm'}) → byte shuffle (stride 2) → Brotli q11 (or lzma preset 6) → golf header."""
    buf = io.BytesIO()
    torch.save({"w": quantized, "m": meta}, buf)
    payload = _compress(byte_shuffle(buf.getvalue(), 2), compressor)
    header = _HEADER.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, _COMPRESSORS[compressor], len(payload),
                          zlib.crc32(payload))
    return header + payload


def deserialize(blob: bytes) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of serialize; each kind of damage raises ArtifactError naming it."""
    if len(blob) < _HEADER.size:
        raise ArtifactError(f"artifact is truncated: {len(blob)} bytes, shorter than the {_HEADER.size}-byte golf header")
    magic, version, comp_id, length, crc = _HEADER.unpack_from(blob)
    if magic != ARTIFACT_MAGIC:
        raise ArtifactError(f"not a golf artifact: wrong magic {magic!r}, expected {ARTIFACT_MAGIC!r}")
    if version != ARTIFACT_VERSION:
        raise ArtifactError(f"golf artifact version {version} is not supported (this golf reads {ARTIFACT_VERSION})")
    payload = blob[_HEADER.size:]
    if len(payload) != length:
        raise ArtifactError(f"artifact is truncated: header declares {length} payload bytes, found {len(payload)}")
    if zlib.crc32(payload) != crc:
        raise ArtifactError(f"artifact is corrupt: crc32 of the payload is {zlib.crc32(payload):#010x}, "
                            f"header says {crc:#010x}")
    names = {v: k for k, v in _COMPRESSORS.items()}
    if comp_id not in names:
        raise ArtifactError(f"artifact is corrupt: unknown compressor id {comp_id}")
    try:
        raw = brotli.decompress(payload) if names[comp_id] == "brotli" else lzma.decompress(payload)
    except (brotli.error, lzma.LZMAError) as exc:
        raise ArtifactError(f"artifact is corrupt: the {names[comp_id]} stream does not decompress ({exc})") from None
    try:
        obj = torch.load(io.BytesIO(byte_unshuffle(raw)), map_location="cpu", weights_only=True)
        return obj["w"], obj["m"]
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"artifact is corrupt: the payload is not a golf state dict ({exc})") from None


# --- budget and prune-to-fit (spec §5.4, §5.5, §9.14) ------------------------------------------

def artifact_budget(model_bytes: int, code_bytes: int, limit: int = 16_000_000) -> dict[str, Any]:
    """The challenge's rule: compressed model bytes + code bytes ≤ limit (decimal 16 MB)."""
    total = int(model_bytes) + int(code_bytes)
    return {"model_bytes": int(model_bytes), "code_bytes": int(code_bytes), "total": total,
            "limit": int(limit), "headroom": int(limit) - total, "fits": total <= limit}


def prune_to_fit(quantized: dict[str, Tensor], meta: dict[str, Any], code_bytes: int, limit: int,
                 compressor: str = "brotli", fix: bool = False) -> tuple[dict[str, Tensor], int, bytes]:
    """Zero int6 ±1 entries, smallest row scale first, 5% of the candidates per round, until it fits.

    ``fix=False`` is the record (spec §9.14): for each candidate it zeroes the *first remaining*
    ±1 entry of that tensor in flat order, not the candidate's own entry. ``fix=True`` zeroes the
    candidate. Returns (pruned dict, entries zeroed, serialized blob); the blob may still not fit
    when the candidates run out (check with artifact_budget).
    """
    out = {k: v.clone() for k, v in quantized.items()}
    blob = serialize(out, meta, compressor)
    if len(blob) + code_bytes <= limit:
        return out, 0, blob
    names, cand_tensor, cand_flat, cand_scale, ones_in_order = [], [], [], [], []
    for name, m in meta.items():
        if m.get("bits") != 6:
            continue
        q, s = out[name + ".q"], out[name + ".scale"].float()
        flat = torch.nonzero(q.reshape(-1).abs() == 1).squeeze(1)  # ascending flat order
        cand_tensor.append(torch.full_like(flat, len(names)))
        names.append(name)
        ones_in_order.append(flat)
        cand_flat.append(flat)
        cand_scale.append(s[flat // q.shape[1]])
    if not names or sum(f.numel() for f in cand_flat) == 0:
        return out, 0, blob
    tensor_of, flats, scales = torch.cat(cand_tensor), torch.cat(cand_flat), torch.cat(cand_scale)
    order = torch.argsort(scales, stable=True)  # smallest row scale first
    per_round = max(1, math.ceil(0.05 * order.numel()))
    done = [0] * len(names)  # ±1 entries zeroed so far, per tensor
    zeroed = 0
    for start in range(0, order.numel(), per_round):
        chosen = order[start:start + per_round]
        for t, name in enumerate(names):
            mine = chosen[tensor_of[chosen] == t]
            if mine.numel() == 0:
                continue
            idx = flats[mine] if fix else ones_in_order[t][done[t]:done[t] + mine.numel()]
            out[name + ".q"].view(-1)[idx] = 0
            done[t] += mine.numel()
            zeroed += mine.numel()
        blob = serialize(out, meta, compressor)
        if len(blob) + code_bytes <= limit:
            break
    return out, zeroed, blob


# --- end to end --------------------------------------------------------------------------------

def quantize_model(model, cfg, calib_batches: Any, device: torch.device | str, code_bytes: int,
                   estimate_tensor_bytes: bool = True,
                   hessians: dict[str, Tensor] | None = None) -> tuple[bytes, dict[str, Any]]:
    """Unbank → Hessians → GPTQ → serialize → budget (→ prune if over), spec §5.1 steps 4–6.

    Returns (artifact bytes, report): report["tensors"] is a DataFrame with one row per tensor
    (name, shape, bits, clip_sigmas, rel_error ‖W−Ŵ‖/‖W‖, est_bytes = that tensor's q+scale
    compressed alone, gptq_s); the other keys are hessian_s, gptq_s, serialize_s, estimate_s, n_pruned and
    the artifact_budget fields. Pass ``hessians`` already collected (e.g. inside the training
    cap, the spec §9.10 fix) to skip the collection; ``calib_batches`` is then unused.
    """
    from golf.model import unbank_state_dict

    device = torch.device(device)
    t0 = time.perf_counter()
    if hessians is None:
        hessians = collect_hessians(model, calib_batches, cfg.gptq_calibration_batches, device,
                                    all_reduce=cfg.fix_allreduce_hessians)
    t1 = time.perf_counter()
    sd = unbank_state_dict({k: v.detach() for k, v in model.state_dict().items()}, cfg.num_layers)
    per_tensor: dict[str, float] = {}
    quantized, meta = quantize_state_dict(sd, hessians, cfg, device=device, timings=per_tensor)
    t2 = time.perf_counter()
    blob = serialize(quantized, meta, cfg.compressor)
    budget = artifact_budget(len(blob), code_bytes, cfg.artifact_limit_bytes)  # the file, header included
    n_pruned = 0
    if not budget["fits"]:
        quantized, n_pruned, blob = prune_to_fit(quantized, meta, code_bytes, cfg.artifact_limit_bytes,
                                                 cfg.compressor, cfg.fix_prune_to_fit)
        budget = artifact_budget(len(blob), code_bytes, cfg.artifact_limit_bytes)
    t3 = time.perf_counter()
    names = [n for n, m in meta.items() if m["type"] != "passthrough"]
    est = [None] * len(names)
    if estimate_tensor_bytes:  # Brotli q11 is slow (~0.3 MB/s) but releases the GIL: one thread per tensor
        def one(n: str) -> int:
            return len(_compress(quantized[n + ".q"].numpy().tobytes() + quantized[n + ".scale"].numpy().tobytes(),
                                 cfg.compressor))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            est = list(pool.map(one, names))
    t4 = time.perf_counter()
    rows = []
    for name, nbytes in zip(names, est):
        W, m = sd[name].float().cpu(), meta[name]
        q, s = quantized[name + ".q"], quantized[name + ".scale"]
        err = (W - q.float() * s.float()[:, None]).norm() / W.norm().clamp_min(1e-30)
        rows.append({"name": name, "shape": tuple(W.shape), "bits": m["bits"], "clip_sigmas": m["clip_sigmas"],
                     "rel_error": float(err), "est_bytes": nbytes, "gptq_s": per_tensor.get(name, 0.0)})
    report = {"tensors": pd.DataFrame(rows), "n_hessians": len(hessians), "hessian_s": t1 - t0,
              "gptq_s": t2 - t1, "serialize_s": t3 - t2, "estimate_s": t4 - t3, "n_pruned": n_pruned, **budget}
    return blob, report


def artifact_sha256(path_or_bytes: str | Path | bytes) -> str:
    """sha256 of an artifact (file or bytes): results made from an artifact record it."""
    blob = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(blob).hexdigest()


def load_artifact(path_or_bytes: str | Path | bytes, model) -> dict[str, Any]:
    """Artifact → dequantize into the model's dtypes → bank → load_state_dict(strict=True). Returns meta."""
    from golf.model import bank_state_dict, unbank_state_dict

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
