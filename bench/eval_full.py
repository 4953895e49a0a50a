"""Sliding-window and score-first TTT timings, old scoring path against new, on one device (issue 14).

    python bench/eval_full.py --sliding-windows 32768 --ttt-chunks 16 [--run-dir R] [--batch-seqs 32 64] [--json F]
    python bench/eval_full.py --params params/demo.yaml --tokens 20000          # CPU smoke check

The record-size model (``--params``, default params/record.yaml) with random weights, or a run's
model through ``golf.pipeline.load_run_model`` (``--run-dir``, ``--source artifact|raw``), looping on.
Synthetic uniform val tokens of ``--tokens`` targets (default the record's T = 40,540,160), or the
run's own val shards with ``--real-val``. Scored the way ``golf evaluate`` scores on this device:

- old: compiled ``forward_logits`` (fp32 logits of all L positions, then cross-entropy), eager TTT
  training — the path before issue 14;
- new: compiled ``GPT.nll_at`` on the scored positions only (``golf.compile_policy.compiled_nll``), and for
  TTT also the compiled training loss (``compiled_ttt_loss``); a middle TTT row keeps training eager.

Sliding is timed on the first ``--sliding-windows`` windows of the stream (all by default) and TTT on
its first ``--ttt-chunks`` chunks; both are extrapolated linearly to the whole stream, and the table
says which rows are. Compiling is timed apart, as a warm-up on a short slice (TTT: two chunks, after
which the weights are restored). Each row reports val_loss / val_bpb, so old and new are compared
on the same windows and the same weights. On a shared CPU the timings say little; there the run
is a smoke check of the paths and of their equality.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from golf.bpb import ByteLUTs
from golf.config import load_config
from golf.evaluate import eval_sliding, eval_ttt
from golf.scoring import count_windows, ttt_chunks
from golf.compile_policy import compiled_nll, compiled_ttt_loss, fixed_batch, prepare_compile, use_compile
from golf.model import build_model
from golf.pipeline import load_run_model

RECORD_T = 40_540_160


def synthetic_luts(vocab: int) -> ByteLUTs:
    """1-3 bytes a token, half with a leading space, id 0 a boundary: BPB sums of a plausible size."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(1, 4, (vocab,), generator=g, dtype=torch.int16)
    space = torch.rand(vocab, generator=g) < 0.5
    boundary = torch.zeros(vocab, dtype=torch.bool)
    base[0], space[0], boundary[0] = 0, False, True
    return ByteLUTs(base, space, boundary)


def random_model(cfg, device):
    """The record init plus small noise on every matrix, so W_o and W_down are not zero."""
    model = build_model(cfg, device)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.add_((0.02 * torch.randn(p.shape, device=device, generator=g)).to(p.dtype))
    model.set_looping(cfg.num_loops > 0)
    model.eval()
    return model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/record.yaml", help="params YAML of the model and evaluation")
    ap.add_argument("--set", nargs="*", default=[], help="params overrides, key=value")
    ap.add_argument("--run-dir", help="take the weights of this run folder instead of random ones")
    ap.add_argument("--source", default="artifact", choices=("artifact", "raw"), help="with --run-dir: which weights")
    ap.add_argument("--tokens", type=int, default=RECORD_T, help="synthetic val targets (the stream to extrapolate to)")
    ap.add_argument("--real-val", action="store_true", help="with --run-dir: the run's val shards instead of synthetic")
    ap.add_argument("--sliding-windows", type=int, default=0, help="sliding windows to time (0: all of the stream)")
    ap.add_argument("--no-sliding", action="store_true", help="time TTT only")
    ap.add_argument("--ttt-chunks", type=int, default=4, help="TTT chunks to time (0: skip TTT)")
    ap.add_argument("--batch-seqs", type=int, nargs="*", default=[],
                    help="eval_batch_seqs values for the new path (default: the config's)")
    ap.add_argument("--skip-old", action="store_true", help="time the new path only")
    ap.add_argument("--expanded-kv", action="store_true",
                    help="CUDA: score with the KV heads expanded, as before native GQA for scoring (the baseline)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()

    cfg = load_config(args.params, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compiled = use_compile(cfg, device)
    if compiled:
        prepare_compile(cfg)
    if args.run_dir:
        from pathlib import Path

        model = load_run_model(Path(args.run_dir), cfg, device, args.source)
    else:
        model = random_model(cfg, device)
    if args.expanded_kv:
        if model.attention_backend != "sdpa_cuda":
            ap.error(f"--expanded-kv applies to the sdpa_cuda backend; this run uses {model.attention_backend}")
        model.set_attention_backend("sdpa_cuda_expanded")
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    if args.real_val:
        from golf.bpb import build_byte_luts
        from golf.val_stream import load_val_tokens

        val = load_val_tokens(cfg.data_dir, cfg.eval_seq_len, cfg.max_val_tokens, vocab_size=cfg.vocab_size)
        luts = build_byte_luts(cfg.tokenizer_path, cfg.vocab_size)
    else:
        val = torch.randint(0, cfg.vocab_size, (args.tokens + 1,), generator=torch.Generator().manual_seed(1),
                            dtype=torch.int32)
        luts = synthetic_luts(cfg.vocab_size)
    luts = luts.to(device)
    T, L, S, C = val.numel() - 1, cfg.eval_seq_len, cfg.eval_stride, cfg.ttt_chunk_tokens
    n_windows, n_chunks = count_windows(T, L, S), ttt_chunks(T, C)
    k_windows = min(args.sliding_windows or n_windows, n_windows)
    k_chunks = min(args.ttt_chunks, n_chunks)
    slide_val = val[: min(T, (k_windows - 1) * S + L) + 1]  # exactly the first k_windows windows
    ttt_val = val[: min(T, k_chunks * C) + 1]
    warm_val = val[: min(T, 3 * cfg.eval_batch_seqs * S + L) + 1]

    def restore():
        model.load_state_dict(weights)

    def scorers(path: str, batch: int):
        """(forward_logits, nll_fn, train_loss) for a row; compiled where golf evaluate compiles."""
        bcfg = load_config(args.params, [*args.set, f"eval_batch_seqs={batch}"])
        if not compiled:
            return bcfg, (model.forward_logits if path == "old" else None), None, None
        if path == "old":
            fwd = fixed_batch(torch.compile(model.forward_logits, dynamic=False, fullgraph=True), batch)
            return bcfg, fwd, None, None
        return bcfg, None, compiled_nll(model, bcfg), (compiled_ttt_loss(model) if path == "new" else None)

    rows = []

    def row(mode, path, batch, res, secs, warm, units, done, total):
        r = {"mode": mode, "path": path, "eval_batch_seqs": batch, "measured": f"{done:,} {units}",
             "seconds": secs, "warmup_s": warm, "extrapolated_s": secs * total / done,
             "extrapolated": done < total, "val_loss": res["val_loss"], "val_bpb": res["val_bpb"]}
        rows.append(r)
        print(json.dumps(r), flush=True)

    paths = [("old", cfg.eval_batch_seqs)] * (not args.skip_old)
    paths += [("new", b) for b in (args.batch_seqs or [cfg.eval_batch_seqs])]
    for path, batch in paths * (not args.no_sliding):
        bcfg, fwd, nll_fn, _ = scorers(path, batch)
        model.eval()
        _, warm = timed(lambda: eval_sliding(model, warm_val, luts, bcfg, forward_logits=fwd, nll_fn=nll_fn,
                                             progress=False), device)
        res, secs = timed(lambda: eval_sliding(model, slide_val, luts, bcfg, forward_logits=fwd, nll_fn=nll_fn),
                          device)
        row("sliding", path, batch, res, secs, warm, "windows", k_windows, n_windows)

    ttt_paths = [("old", cfg.eval_batch_seqs)] * (not args.skip_old)
    ttt_paths += [("new, eager training", cfg.eval_batch_seqs)] * compiled
    ttt_paths += [("new", b) for b in (args.batch_seqs or [cfg.eval_batch_seqs])]
    for path, batch in ttt_paths * (k_chunks > 0):
        bcfg, fwd, nll_fn, train_loss = scorers(path, batch)
        model.train()
        warm = 0.0
        if compiled:  # compile scoring and the training step on two chunks, then start again from the weights
            _, warm = timed(lambda: eval_ttt(model, val[: min(T, 2 * C) + 1], luts, bcfg, forward_logits=fwd,
                                             nll_fn=nll_fn, train_loss=train_loss, progress=False), device)
            restore()
        res, secs = timed(lambda: eval_ttt(model, ttt_val, luts, bcfg, forward_logits=fwd, nll_fn=nll_fn,
                                           train_loss=train_loss), device)
        restore()
        row("ttt", path, batch, res, secs, warm, "chunks", k_chunks, n_chunks)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\n{dev_name}, torch {torch.__version__}, attention {model.attention_backend}, compile {compiled}, "
          f"params {args.params} {' '.join(args.set)}; weights {args.run_dir or 'random'}; "
          f"{'val shards' if args.real_val else 'synthetic tokens'}, T = {T:,}: {n_windows:,} windows, "
          f"{n_chunks:,} TTT chunks")
    print("| mode | path | batch | measured | seconds | warm-up s | whole stream s | val_loss | val_bpb |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ext = f"{r['extrapolated_s']:,.1f}" + (" (extrapolated)" if r["extrapolated"] else "")
        print(f"| {r['mode']} | {r['path']} | {r['eval_batch_seqs']} | {r['measured']} | {r['seconds']:.2f} | "
              f"{r['warmup_s']:.1f} | {ext} | {r['val_loss']:.6f} | {r['val_bpb']:.6f} |")
    for mode in ("sliding", "ttt"):
        base = next((r for r in rows if r["mode"] == mode and r["path"] == "old"), None)
        for r in rows:
            if base and r["mode"] == mode and r is not base:
                speed = base["seconds"] / r["seconds"]
                print(f"{mode} {r['path']} (batch {r['eval_batch_seqs']}) vs old: x{speed:.2f} faster, "
                      f"val_bpb {r['val_bpb'] - base['val_bpb']:+.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": dev_name, "torch": torch.__version__, "argv": vars(args), "T": T,
                       "n_windows": n_windows, "n_chunks": n_chunks, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
