"""Run a function on N gloo processes (CPU) and collect what each rank returns.

Shared by the distributed tests: ``results = run_gloo(fn, world, *args)`` calls ``fn(rank, *args)``
in each process inside an initialized gloo group; ``fn`` must be importable (module level).
"""
from __future__ import annotations

import datetime
import os
import pickle
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, fn, args) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        result = fn(rank, *args)
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as fh:
            pickle.dump(result, fh)
    finally:
        dist.destroy_process_group()
    # torch 2.13 CPU sometimes aborts at interpreter exit after a gloo group ("terminate called without an
    # active exception"); the result is on disk, so leave without running the C++ static destructors
    os._exit(0)


def run_gloo(fn, world: int, *args) -> list:
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world, free_port(), out_dir, fn, args), nprocs=world, join=True)
        results = []
        for r in range(world):
            with open(os.path.join(out_dir, f"rank{r}.pkl"), "rb") as fh:
                results.append(pickle.load(fh))
    return results
