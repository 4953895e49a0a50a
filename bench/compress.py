"""Artifact compressors side by side on the same quantized weights (spec §5.4, issue 14).

    python bench/compress.py                          # synthetic, 2 layers of the record's shapes
    python bench/compress.py --payload gauss --layers 11 --vocab 8192   # the record's size (slow)
    python bench/compress.py --artifact outputs/RUN/final_model.int6.ptz

Methods: the format-1 single stream (torch.save → byte shuffle → Brotli 11, the record's, and the
baseline), and format 2 (pieces compressed in parallel, golf/artifact.py) with Brotli 11 (on one
thread and on all), with the matrices' integers in row order instead of column order (same code
on the transposed matrices: an ablation), lzma, rANS, and "best" (each matrix coded both ways,
rANS and Brotli 11, the smaller kept). Each row: artifact bytes, % against the
baseline, compress and decompress seconds (decompress includes the crc checks and the tensors).

Payloads: ``--artifact`` decodes an existing artifact (the most realistic: a trained model).
Without one, the record's shapes (int6 attention/MLP matrices, int8 embedding, fp16 row scales and
a few fp16 passthrough tensors) filled with synthetic weights quantized by golf's own code:
``gauss``: Gaussian rows, round-to-nearest with SDClip scales (no structure beyond the marginal);
``columns``: Student-t(6) rows whose columns have log-normal spreads (σ 0.4, as input features
do in trained models), quantized by GPTQ with a Hessian of inputs with their own spreads.
Brotli 11 costs ~1-2 s per MB here, so the default is 2 layers and a 2048-row embedding (~7 MB);
times at the record's 36 MB are extrapolated linearly and say so.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from golf.artifact import deserialize, serialize, serialize_v1
from golf.compressors import default_threads
from golf.gptq import gptq_quantize, rtn_quantize

RECORD_MB = 36.2  # int8 values + fp16 scales + passthrough of the record's artifact, uncompressed
SHAPES = {"attn.c_q": (512, 512), "attn.c_k": (256, 512), "attn.c_v": (256, 512), "attn.proj": (512, 512),
          "mlp.fc": (2048, 512), "mlp.proj": (512, 2048)}


def synthetic(kind: str, layers: int, vocab: int, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    quantized, meta = {}, {}

    def weights(rows: int, cols: int, df: float) -> torch.Tensor:
        if kind == "gauss":
            return torch.randn(rows, cols, generator=g)
        t = torch.distributions.StudentT(df).sample((rows, cols))
        return t * torch.exp(0.4 * torch.randn(cols, generator=g))[None, :]

    def hessian(cols: int) -> torch.Tensor:
        X = torch.randn(4 * cols, cols, generator=g) * torch.exp(0.5 * torch.randn(cols, generator=g))
        return X.T @ X

    torch.manual_seed(seed)  # StudentT samples from the global generator
    todo = [(f"blocks.{i}.{n}.weight", shape, 6, 12.85) for i in range(layers) for n, shape in SHAPES.items()]
    todo.append(("tok_emb.weight", (vocab, 512), 8, 20.0))
    for name, (rows, cols), bits, k in todo:
        W = weights(rows, cols, 6.0 if bits == 6 else 8.0)
        q, s = rtn_quantize(W, bits, k) if kind == "gauss" else gptq_quantize(W, hessian(cols), bits, k)
        quantized[name + ".q"], quantized[name + ".scale"] = q, s
        meta[name] = {"type": f"int{bits}", "bits": bits, "clip_sigmas": k}
    for i in range(layers):  # the passthrough tensors, as fp16
        for name, n in (("attn_scale", 512), ("mlp_scale", 512), ("resid_mix", 1024), ("q_gain", 8)):
            quantized[f"blocks.{i}.{name}"] = (1 + 0.1 * torch.randn(n, generator=g)).half()
            meta[f"blocks.{i}.{name}"] = {"type": "passthrough"}
    return quantized, meta


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", help="decode this artifact and compress its tensors (default: synthetic)")
    ap.add_argument("--payload", choices=("gauss", "columns"), default="columns", help="synthetic weights")
    ap.add_argument("--layers", type=int, default=2, help="synthetic: layers of the record's shapes (record: 11)")
    ap.add_argument("--vocab", type=int, default=2048, help="synthetic: embedding rows (record: 8192)")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--skip", nargs="*", default=[],
                    help="methods to leave out: v1 brotli-1t brotli brotli-rows lzma rans best")
    args = ap.parse_args()

    if args.artifact:
        quantized, meta = deserialize(Path(args.artifact).read_bytes())
        source = args.artifact
    else:
        (quantized, meta), secs = timed(synthetic, args.payload, args.layers, args.vocab)
        source = f"synthetic '{args.payload}', {args.layers} layers, {args.vocab}-row embedding ({secs:.0f} s to make)"
    raw = sum(t.numel() * t.element_size() for t in quantized.values())
    ints = [t for k, t in quantized.items() if t.dtype == torch.int8 and t.ndim == 2]
    n_int = sum(t.numel() for t in ints)
    entropy = 0.0
    for t in ints:
        c = np.bincount(t.reshape(-1).numpy().astype(np.int64) + 128, minlength=256).astype(np.float64)
        c = c[c > 0]
        entropy += float(-(c * np.log2(c / c.sum())).sum() / 8)
    rows_major = {k: (v.T.contiguous() if v.dtype == torch.int8 and v.ndim == 2 else v) for k, v in quantized.items()}

    methods = [  # id (for --skip), description, how
        ("v1", "brotli-11, one stream (format 1, the baseline)", lambda: serialize_v1(quantized, meta, "brotli")),
        ("brotli-1t", "brotli-11 pieces (format 2), 1 thread", lambda: serialize(quantized, meta, "brotli", threads=1)),
        ("brotli", f"brotli-11 pieces, {args.threads} threads", lambda: serialize(quantized, meta, "brotli",
                                                                                 threads=args.threads)),
        ("brotli-rows", "brotli-11 pieces, integers in row order", lambda: serialize(rows_major, meta, "brotli",
                                                                                    threads=args.threads)),
        ("lzma", "lzma-6 pieces", lambda: serialize(quantized, meta, "lzma", threads=args.threads)),
        ("rans", "rans pieces (constriction)", lambda: serialize(quantized, meta, "rans", threads=args.threads)),
        ("best", "best: rans or brotli-11, per matrix", lambda: serialize(quantized, meta, "best",
                                                                        threads=args.threads)),
    ]
    print(f"payload: {source}")
    print(f"{raw / 1e6:.2f} MB uncompressed, {n_int:,} int8/int6 entries; order-0 entropy of the integers, "
          f"per tensor: {entropy:,.0f} bytes ({8 * entropy / n_int:.3f} bits/entry); {args.threads} threads")
    rows, base = [], None
    for key, name, fn in methods:
        if key in args.skip:
            continue
        blob, c_s = timed(fn)
        _, d_s = timed(deserialize, blob, threads=args.threads)
        base = base or len(blob)
        rows.append((name, len(blob), 100 * (len(blob) / base - 1), c_s, d_s))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'method':<{w}}  {'bytes':>12}  {'vs base':>8}  {'compress s':>10}  {'decompress s':>12}  "
          f"{'compress s at 36 MB':>19}")
    for name, n, pct, c_s, d_s in rows:
        print(f"{name:<{w}}  {n:>12,}  {pct:>+7.2f}%  {c_s:>10.2f}  {d_s:>12.2f}  {c_s * RECORD_MB * 1e6 / raw:>19.1f}")
    print(f"\nlast column: compress seconds scaled linearly from {raw / 1e6:.2f} MB to the record's {RECORD_MB} MB "
          "(an extrapolation, not a measurement)")


if __name__ == "__main__":
    main()
