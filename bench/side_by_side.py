"""Training speed side by side: the record's own script, then `golf train` by default, then with switches.

    python bench/side_by_side.py --record-script REC/train_gpt.py --data-dir data/real8192 \
        --steps 40 --log-every 5 --out bench/results/side_by_side.json

One process after another on the same GPU, the same shards, seed, batch and step count (compile caches
as each program keeps them: the warm-up before step 0 is not timed). The record's script is the
unpacked `train_gpt.py` of PR #1533 (not in this repository); where FlashAttention-3 is not installed,
its one attention call is served by a stand-in module that does what golf's `sdpa` backend does (cuDNN
attention, KV heads expanded), so the two differ in everything but the attention kernel. Per phase
(plain, then looping) the tok/s is the tokens of the steps between the first and last log points
inside the phase over the training time between them, as each program clocks it (the record logs
cumulative tok/s, golf its training milliseconds). The record's script stops being timed at its "peak
memory" line (end of training) and is then stopped. An arm that fails is named and left out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FA3_STAND_IN = '''"""FlashAttention-3's flash_attn_func where it is missing: SDPA as golf's sdpa backend runs it."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def flash_attn_func(q, k, v, causal=True, **_):
    rep = q.size(2) // k.size(2)
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    with sdpa_kernel(ORDER, set_priority=True):
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return y.transpose(1, 2)
'''

RECORD_LINE = re.compile(r"^(\d+)/\d+ train_loss: ([\d.]+) train_time: [\d.]+m tok/s: (\d+)")
LOOP_LINE = re.compile(r"layer_loop:enabled step:(\d+)")


def record_data_dir(data_dir: Path, where: Path, vocab: int) -> Path:
    """The record's layout (datasets/fineweb10B_spV, tokenizers/fineweb_V_bpe.model) as links to golf's shards."""
    shards = where / "datasets" / f"fineweb10B_sp{vocab}"
    shards.mkdir(parents=True)
    for f in sorted(data_dir.glob("fineweb_*.bin")):
        (shards / f.name).symlink_to(f.resolve())
    (where / "tokenizers").mkdir()
    (where / "tokenizers" / f"fineweb_{vocab}_bpe.model").symlink_to((data_dir / "tokenizer.model").resolve())
    return where


def run_record(script: Path, data_dir: Path, args, work: Path, log_path: Path) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", DATA_DIR=str(record_data_dir(data_dir, work / "data", 8192)) + "/",
               ITERATIONS=str(args.steps), WARMUP_STEPS=str(args.warmup), TRAIN_LOG_EVERY=str(args.log_every),
               VAL_LOSS_EVERY="0", MAX_WALLCLOCK_SECONDS="0", SEED=str(args.seed), RUN_ID="side_by_side",
               TRAIN_BATCH_TOKENS=str(args.batch_tokens))
    try:
        import flash_attn_interface  # noqa: F401  (the real one: the record runs as it was written)
        attention = "FlashAttention-3"
    except ImportError:
        shim = work / "shim"
        shim.mkdir()
        (shim / "flash_attn_interface.py").write_text(FA3_STAND_IN)
        others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([str(shim), *others])
        attention = "stand-in (cuDNN SDPA, KV heads expanded)"
    losses, cumulative, loop_at = {}, {}, None
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(script.resolve())], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if m := RECORD_LINE.match(line.strip()):
                step = int(m.group(1))
                losses[step] = float(m.group(2))
                cumulative[step] = step * args.batch_tokens / int(m.group(3))  # seconds of training to this step
            elif m := LOOP_LINE.search(line):
                loop_at = int(m.group(1))
            elif line.startswith("peak memory allocated"):
                os.killpg(proc.pid, signal.SIGTERM)  # training is over: the evaluations are not measured here
                break
        rc = proc.wait()
    finished = any(line.startswith("peak memory allocated") for line in log_path.read_text().splitlines())
    return {"attention": attention, "losses": losses, "seconds_at": cumulative, "looping_at": loop_at,
            "wall_s": time.time() - start, "ok": finished, "returncode": rc}


def run_golf(name: str, sets: list[str], data_dir: Path, args, work: Path, log_path: Path) -> dict:
    run_dir = work / name
    cmd = [sys.executable, "-m", "golf", "train", "--params", str(REPO / args.params), "--run-dir", str(run_dir),
           "--set", f"iterations={args.steps}", f"warmup_steps={args.warmup}", f"train_log_every={args.log_every}",
           "val_loss_every=0", "max_wallclock_seconds=0", f"seed={args.seed}", f"data_dir={data_dir}",
           f"tokenizer_path={data_dir / 'tokenizer.model'}", f"train_batch_tokens={args.batch_tokens}", *sets]
    start = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    losses, seconds, loop_at = {}, {}, None
    metrics = run_dir / "metrics.jsonl"
    for row in map(json.loads, metrics.read_text().splitlines() if metrics.exists() else []):
        if "train_loss" in row:
            losses[row["step"]] = row["train_loss"]
            seconds[row["step"]] = row["train_ms"] / 1000
    summary = run_dir / "train_summary.json"
    if summary.exists():
        loop_at = json.loads(summary.read_text()).get("looping_at_step")
    return {"attention": "golf (attention_backend auto)", "losses": losses, "seconds_at": seconds,
            "looping_at": loop_at, "wall_s": time.time() - start, "sets": sets, "ok": rc == 0, "returncode": rc}


def phase_rates(result: dict, batch_tokens: int) -> dict:
    """tok/s of the plain and the looping phase: between the first and last log points inside each (from
    step 5: the first steps still settle; the looping phase from 2 steps after it began)."""
    at = {int(k): v for k, v in result["seconds_at"].items()}
    loop = result["looping_at"]
    steps = sorted(at)
    plain = [s for s in steps if s >= 5 and (loop is None or s <= loop)]
    looped = [s for s in steps if loop is not None and s >= loop + 2]
    rate = lambda pts: (pts[-1] - pts[0]) * batch_tokens / (at[pts[-1]] - at[pts[0]]) if len(pts) >= 2 else None
    return {"plain": rate(plain), "looping": rate(looped), "plain_steps": plain[:1] + plain[-1:],
            "looping_steps": looped[:1] + looped[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record-script", required=True, type=Path, help="the record's train_gpt.py, unpacked")
    ap.add_argument("--data-dir", required=True, type=Path, help="golf shards (fineweb_*.bin, tokenizer.model)")
    ap.add_argument("--params", default="params/record.yaml")
    ap.add_argument("--fast", nargs="*", default=["fused_mlp=true", "fused_ce=true", "fused_qkv=true"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-tokens", type=int, default=786432)
    ap.add_argument("--arms", default="record,golf,golf-fast")
    ap.add_argument("--logs", type=Path, default=Path("."), help="folder for each arm's log")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    data_dir = args.data_dir.resolve()
    args.logs.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        for arm in args.arms.split(","):
            work = Path(tmp) / arm
            work.mkdir()
            log_path = args.logs / f"{arm}.log"
            if arm == "record":
                res = run_record(args.record_script, data_dir, args, work, log_path)
            else:
                res = run_golf(arm, args.fast if arm == "golf-fast" else [], data_dir, args, work, log_path)
            res["rates"] = phase_rates(res, args.batch_tokens)
            results[arm] = res
            args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "arms": results},
                                           indent=1))
            if not res["ok"]:
                print(f"{arm}: FAILED (exit {res['returncode']}, {log_path}): left out of the tables", flush=True)
                continue
            print(f"{arm}: plain {res['rates']['plain'] or 0:,.0f} tok/s, looping {res['rates']['looping'] or 0:,.0f}"
                  f" tok/s, looping from step {res['looping_at']}, {res['wall_s']:.0f} s", flush=True)

    results = {arm: res for arm, res in results.items() if res["ok"]}
    base = results.get("record", {}).get("rates", {})
    print("\n| program | tok/s plain | tok/s looping | x record plain | x record looping |")
    print("|---|---|---|---|---|")
    for arm, res in results.items():
        r = res["rates"]
        ratio = lambda ph: f"{r[ph] / base[ph]:.3f}" if r.get(ph) and base.get(ph) else "-"
        print(f"| {arm} | {r['plain'] or 0:,.0f} | {r['looping'] or 0:,.0f} | {ratio('plain')} | {ratio('looping')} |")
    steps = sorted(set.intersection(*[set(map(int, res["losses"])) for res in results.values()])) if results else []
    print("\n| step | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for s in steps:
        print(f"| {s} | " + " | ".join(f"{res['losses'][s]:.4f}" for res in results.values()) + " |")


if __name__ == "__main__":
    main()
