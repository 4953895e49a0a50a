"""A seeded study of several params files through golf's own CLI, spread over the GPUs of one machine (issue 16).

    python bench/study.py --arms record=params/record.yaml frontier=params/frontier.yaml \\
        --seeds 42 314 1337 --gpus 0 1 --prefix fs --set iterations=160 --log bench/results/x.jsonl
    python bench/study.py --arms frontier=params/frontier.yaml "no-smear=params/frontier.yaml smear_gate=false" ...

An arm is ``NAME=PARAMS`` and, after spaces, its own ``KEY=VALUE`` overrides (an ablation).

Every (arm, seed) is one job: ``golf train`` into ``OUTPUTS/PREFIX-ARM/seedS``, ``golf quantize``,
then ``golf evaluate`` in each ``--modes``. A worker per GPU takes the next job (seed-major, so an
interrupted study still holds whole seeds of every arm); each job runs alone on its GPU
(``CUDA_VISIBLE_DEVICES``). Steps whose output exists are skipped, so running the command again
resumes it, as long as each arm's params, overrides and modes are the ones it started with (kept in
``OUTPUTS/PREFIX-plan.json``; seeds and new arms may be added). A training that was killed is not: golf train refuses its folder, so remove it first,
or use ``golf run``, which retries in a fresh one. Each finished step appends a line (arm, seed, step, seconds, rc) to ``--log``; a
failed step stops that job and the others go on. At the end ``golf compare`` of the arms (the
first is the baseline) writes its tables and compare.html.

This is what ``golf run`` does, minus the notebooks: the GPU machine has no Jupyter stack. On a CPU,
``--gpus cpu`` runs the jobs one after another (e.g. with params/frontier_demo.yaml).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from golf.paths import outputs_root, resolve


def _golf(args: list[str], gpu: str, console: Path) -> tuple[int, float]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if gpu != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = gpu
    t0 = time.perf_counter()
    with console.open("a") as out:
        out.write(f"\n$ golf {' '.join(args)}\n")
        out.flush()
        rc = subprocess.call([sys.executable, "-m", "golf", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    return rc, time.perf_counter() - t0


def parse_arm(text: str) -> tuple[str, str, list[str]]:
    """``"NAME=PARAMS [KEY=VALUE ...]"`` -> (name, params file, the arm's own overrides)."""
    head, *sets = text.split()
    name, params = head.split("=", 1)
    return name, params, sets


def run_job(arm: str, params: str, seed: int, run_dir: Path, sets: list[str], modes: list[str], gpu: str,
            log: Path, lock: threading.Lock) -> None:
    steps = [("train", ["train", "--params", params, "--run-dir", str(run_dir), "--set", f"seed={seed}", *sets],
              run_dir / "model.pt"),
             ("quantize", ["quantize", "--run-dir", str(run_dir)], run_dir / "final_model.int6.ptz")]
    steps += [(f"evaluate {m}", ["evaluate", "--run-dir", str(run_dir), "--mode", m], run_dir / f"eval_{m}.json")
              for m in modes]
    console = run_dir.parent / f"{run_dir.name}.console.log"
    for name, args, done in steps:
        if done.exists():
            continue
        rc, seconds = _golf(args, gpu, console)
        line = {"arm": arm, "seed": seed, "step": name, "seconds": round(seconds, 1), "rc": rc, "gpu": gpu,
                "time": time.strftime("%H:%M:%S")}
        with lock:
            with log.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
        if rc != 0:
            return


def check_arms(arms: list[tuple[str, str, list[str]]], sets: list[str], modes: list[str]) -> str | None:
    """A problem line if an arm's params and overrides do not load or a mode is unknown: before any job
    starts, so a typo in the last arm does not cost the GPU time of the others."""
    from golf.config import EVAL_MODES, load_config
    from golf.runtime import GolfError

    unknown = [m for m in modes if m not in EVAL_MODES]
    if unknown:
        return f"unknown --modes {unknown}; golf evaluate has {list(EVAL_MODES)}"
    for name, params, own in arms:
        try:
            load_config(params, sets + own)
        except (GolfError, ValueError, OSError) as exc:
            return f"arm {name!r}: {exc}"
    return None


def check_plan(path: Path, arms: list[tuple[str, str, list[str]]], sets: list[str], modes: list[str]) -> str | None:
    """Record each arm's settings; a problem line if an arm of an earlier run of this study had others."""
    plan = json.loads(path.read_text()) if path.is_file() else {}
    for name, params, own in arms:
        spec = {"params": params, "set": sets + own, "modes": modes}
        if plan.get(name, spec) != spec:
            return (f"arm {name!r} of this study ran with {plan[name]}, not {spec}: finished steps would be kept "
                    f"as they are; use another --prefix (or remove {path.parent}/{path.name.split('-plan')[0]}-{name})")
        plan[name] = spec
    path.write_text(json.dumps(plan, indent=1))
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="+", required=True, metavar='"NAME=PARAMS [KEY=VALUE ...]"',
                    help="each arm: a name, its params file and its own overrides; the first is the baseline")
    ap.add_argument("--seeds", nargs="+", type=int, required=True, help="seed values, one run per arm and seed")
    ap.add_argument("--gpus", nargs="+", default=["0"], help="GPU indices, one worker each; 'cpu' for none")
    ap.add_argument("--prefix", default="study", help="study folders are OUTPUTS/PREFIX-ARM")
    ap.add_argument("--set", nargs="*", action="extend", default=[],
                    help="KEY=VALUE for every arm's training (may be given more than once; later values win)")
    ap.add_argument("--modes", nargs="+", default=["ttt"], help="golf evaluate modes (the first is compared)")
    ap.add_argument("--log", default=None, help="JSON lines of finished steps (default OUTPUTS/PREFIX-study.jsonl)")
    args = ap.parse_args()

    arms = [parse_arm(a) for a in args.arms]
    root = outputs_root()
    log = resolve(args.log) if args.log else root / f"{args.prefix}-study.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    problem = check_arms(arms, args.set, args.modes) or check_plan(root / f"{args.prefix}-plan.json", arms, args.set,
                                                                    args.modes)
    if problem:
        print(f"study.py: error: {problem}", file=sys.stderr)
        return 1
    jobs: queue.Queue = queue.Queue()
    for seed in args.seeds:
        for name, params, own in arms:
            study = root / f"{args.prefix}-{name}"
            study.mkdir(parents=True, exist_ok=True)
            jobs.put((name, params, own, seed, study / f"seed{seed}"))
    lock = threading.Lock()

    def worker(gpu: str) -> None:
        while True:
            try:
                name, params, own, seed, run_dir = jobs.get_nowait()
            except queue.Empty:
                return
            run_job(name, params, seed, run_dir, args.set + own, args.modes, gpu, log, lock)

    threads = [threading.Thread(target=worker, args=(g,)) for g in args.gpus]
    for t in threads:
        t.start()
        time.sleep(2)  # staggered: the first compile of each arm is not raced by its twin
    for t in threads:
        t.join()
    compare = ["compare", *[str(root / f"{args.prefix}-{n}") for n, _, _ in arms], "--names", *[n for n, _, _ in arms],
               "--stage", args.modes[0], "--out", str(root / f"{args.prefix}-compare")]
    rc, _ = _golf(compare, "cpu", root / f"{args.prefix}-compare.console.log")
    print(f"golf compare: rc {rc} ({root / f'{args.prefix}-compare'})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
