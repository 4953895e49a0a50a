"""Where a study's jobs run: :class:`LocalExecutor` (one worker per group of ``nproc`` GPUs of this
machine) or :class:`RayExecutor` (each job a Ray task asking for ``nproc`` GPUs). Either way a job is
:func:`golf.study_job.run_job`, in the process that holds its GPUs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import Future
from dataclasses import asdict

from golf.runtime import GolfError
from golf.study_job import Job, run_job


class LocalExecutor:
    """One worker per group of ``nproc`` GPUs of this machine (``gpus``: indices; None or ['cpu']: one
    worker that sees what this process sees). A lone worker runs each job here, in turn (golf's status
    line on ``console``); workers side by side run each job in a child process that sees only its GPUs
    (CUDA_VISIBLE_DEVICES), from daemon threads, so an interrupt ends the study at once."""

    def __init__(self, gpus: list[str] | None = None, nproc: int = 1, console=None):
        import queue

        if gpus and gpus != ["cpu"] and len(gpus) < nproc:
            raise GolfError(f"--gpus {' '.join(gpus)}: a run takes --nproc {nproc} GPUs, more than given")
        self.groups = ([gpus[k:k + nproc] for k in range(0, len(gpus) - nproc + 1, nproc)]
                       if gpus and gpus != ["cpu"] else [[]])
        self.console = console
        self.free: queue.Queue = queue.Queue()
        for g in self.groups:
            self.free.put(g)

    def describe(self) -> str:
        return "this machine" if self.groups == [[]] else "GPUs " + " | ".join(",".join(g) for g in self.groups)

    def submit(self, job: Job) -> Future:
        import threading

        future: Future = Future()

        def work() -> None:
            try:
                future.set_result(self._run(job))
            except BaseException as exc:  # noqa: BLE001 - handed to the study, which reports it
                future.set_exception(exc)

        if len(self.groups) == 1:
            if self.groups[0]:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.groups[0])  # kernels and children inherit it
            future.set_result(run_job(job, self.console))  # here, in turn: an interrupt stops it as golf run does
        else:
            threading.Thread(target=work, daemon=True).start()
        return future

    def _run(self, job: Job) -> dict:
        group = self.free.get()
        try:
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(group))
            out = subprocess.run([sys.executable, "-m", "golf.study", json.dumps(asdict(job))], env=env,
                                 capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            if out.returncode or not lines:
                return {"status": "failed", "run": None, "gpus": env["CUDA_VISIBLE_DEVICES"],
                        "error": (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]}
            return json.loads(lines[-1])
        finally:
            self.free.put(group)

    def shutdown(self) -> None:
        pass


def _ray_job(job: dict) -> dict:  # a Ray task: Ray has set CUDA_VISIBLE_DEVICES to this task's GPUs
    logging.basicConfig(level=logging.WARNING)
    return run_job(job)


class RayExecutor:
    """Each (arm, seed) a Ray task asking for ``nproc`` GPUs (none for CPU runs); Ray places it on a node
    with free GPUs and sets CUDA_VISIBLE_DEVICES. ``address``: a cluster's (``ray start --head``), or
    'local' for a Ray started in this process (``init`` passes e.g. num_gpus to it). The study folder
    must be on a filesystem every node shares (or see --archive / --restore). Ray's own logs stay off
    the console."""

    def __init__(self, address: str, nproc: int = 1, gpus: bool = True, **init):
        try:
            import ray
        except ImportError:
            raise GolfError("--ray needs Ray: pip install 'golf[ray]' (or pip install ray)") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, log_to_driver=False,
                         include_dashboard=False, logging_level=logging.ERROR, **init)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise GolfError(f"--ray {address}: no Ray cluster could be reached ({str(exc).splitlines()[0]})") from None
        self.remote = ray.remote(num_gpus=nproc if gpus else 0, num_cpus=1, max_retries=0)(_ray_job)

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        return f"Ray ({int(res.get('GPU', 0))} GPUs, {int(res.get('CPU', 0))} CPUs)"

    def submit(self, job: Job) -> Future:
        return self.remote.remote(asdict(job)).future()

    def shutdown(self) -> None:
        pass  # a Ray started here ends with this process; a cluster's stays up
