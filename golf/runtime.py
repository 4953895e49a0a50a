"""Process-level plumbing: device choice, torch.distributed set-up, run folders, atomic writes.

Only torchrun's RANK / LOCAL_RANK / WORLD_SIZE come from the environment; everything else comes from the config.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torch is imported where it is used: the notebooks and the commands that only read files start in a
# second less (their work runs in golf child processes).


class GolfError(RuntimeError):
    """A user-facing error: the message names the file or key and what was expected."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device_start_s: float = 0.0  # seconds from asking for the device until it could hold a tensor

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> torch.device:
    import torch
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise GolfError("params key 'device' is 'cuda' but torch sees no CUDA GPU; use device: auto or cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


PARENT_PID_ENV = "GOLF_PARENT_PID"  # set by golf for a child it starts: the child dies with that parent


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a killed ``golf run``,
    notebook kernel or torchrun leaves no training behind. A parent that is gone already ends it now."""
    import signal

    expected = os.environ.get(PARENT_PID_ENV, "")
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    if not sys.platform.startswith("linux") or not (expected or under_torchrun):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = os.getppid()
    if parent == 1 or (expected.isdigit() and not under_torchrun and parent != int(expected)):
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before the line above


def bar_interval(seconds: float = 0.1) -> float:
    """tqdm's ``mininterval`` for a bar: ``seconds`` on a terminal or in a Jupyter kernel, where a bar
    redraws in place, but 30 s when stderr goes to a file or pipe, which keeps every redraw."""
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    return seconds if interactive else max(seconds, 30.0)


def progress_bar(total: float, desc: str, enabled: bool, unit: str = "it", **kwargs):
    """A tqdm bar on the main rank only, gone when done, redrawing at ``bar_interval()``. The console bar
    even in a Jupyter kernel: it redraws in place there too, and needs no ipywidgets (no IProgress warning)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not (enabled and dist_info().is_main),
                mininterval=bar_interval(), **kwargs)


@contextmanager
def cpu_threads(n: int):
    """Run the block on ``n`` of torch's CPU threads, then restore the count.

    For CPU linear algebra whose result or speed depends on the thread count: a QR or an SVD rounds
    differently on 1 and 2 threads, and several processes each starting a thread per core on one host
    slow each other many times over (a model's build took 51 s instead of 0.7 s on a 64-core host)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if launched by torchrun (NCCL on GPU, gloo on CPU)."""
    import torch
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    t0 = time.perf_counter()
    if world > 1 and torch.cuda.is_available() and device_name != "cpu":
        torch.cuda.set_device(local_rank)
    device = pick_device(device_name)
    if device.type == "cuda":  # the driver starts here, timed, rather than inside the first step that touches the GPU
        torch.empty(1, device=device)
    info = DistInfo(rank, local_rank, world, round(time.perf_counter() - t0, 1))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return info, device


def dist_info() -> DistInfo:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())
    return DistInfo()


def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce that is a no-op in one process. gloo has no AVG, so AVG = SUM / world."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if op == "sum":
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    elif op == "max":
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    elif op == "avg":
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    else:
        raise ValueError(f"unknown reduce op {op!r}")
    return tensor


def estimated_params(cfg) -> int:
    """The model's parameter count from the config alone (the banks and the embedding: within 1%)."""
    d = cfg.model_dim
    return cfg.num_layers * (2 * d * d + 2 * d * cfg.kv_dim + 2 * d * cfg.mlp_hidden) + cfg.vocab_size * d


def available_memory() -> int | None:
    """Bytes of host memory free for a new allocation (Linux: MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


TRAIN_BYTES_PER_PARAM = 16  # fp32 weights, gradients, EMA and optimizer state: the least training holds
# Activations a micro-batch token keeps for the backward, at least: 20 bytes per model dim and virtual
# layer, 8 per vocabulary entry (half of what a record-size step measured on an H100: 42.5 GiB peak).
ACT_BYTES_PER_DIM_LAYER, ACT_BYTES_PER_VOCAB = 20, 8


def estimated_activation_bytes(cfg) -> int:
    """A lower bound of one micro-batch's activation memory (train_batch_tokens / grad_accum_total tokens)."""
    tokens = cfg.train_batch_tokens // max(1, cfg.grad_accum_total)
    layers = cfg.num_layers + (cfg.loop_end - cfg.loop_start + 1) * cfg.num_loops
    return tokens * (layers * cfg.model_dim * ACT_BYTES_PER_DIM_LAYER + cfg.vocab_size * ACT_BYTES_PER_VOCAB)


def check_model_fits(cfg, training: bool = True) -> None:
    """Refuse, before anything is allocated, a model whose weights cannot fit: the model is built in host
    memory (fp32) first, and training holds about four copies of it (on the GPU when it runs there)."""
    import torch
    n = estimated_params(cfg)
    acts = estimated_activation_bytes(cfg) if training else 0
    need = TRAIN_BYTES_PER_PARAM * n + acts if training else 4 * n
    host = available_memory()
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        rank = min(int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count() - 1)
        gpu = torch.cuda.get_device_properties(rank).total_memory if rank >= 0 else None
        checks = [("host memory, where the model is built first,", 4 * n, host), ("the GPU", need, gpu)]
    else:
        checks = [("host memory", need, host)]
    for where, want, free in checks:
        if free is not None and want > free:
            if training and want == need and TRAIN_BYTES_PER_PARAM * n <= free:  # the weights fit, the batch not
                raise GolfError(f"a micro-batch of train_batch_tokens {cfg.train_batch_tokens:,} / grad_accum_total "
                                f"{cfg.grad_accum_total} tokens needs at least {acts / 2**30:,.1f} GiB of activations "
                                f"to train; {where} has {free / 2**30:,.1f} GiB: lower train_batch_tokens or raise "
                                "grad_accum_total")
            raise GolfError(f"the model of these params keys (num_layers {cfg.num_layers}, model_dim "
                            f"{cfg.model_dim}, mlp_mult {cfg.mlp_mult}, vocab_size {cfg.vocab_size}) has about "
                            f"{n:,} parameters, which need about {(want - acts if want == need else want) / 2**30:,.1f} GiB"
                            f"{' to train' if want == need and training else ''}; {where} has "
                            f"{free / 2**30:,.1f} GiB: make the model smaller")


# --- files -----------------------------------------------------------------------------------

def umask_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask); mkstemp's own is always 0o600."""
    mask = os.umask(0o022)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside the target, then rename: a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_json_object(path: str | Path, fix: str = "") -> dict[str, Any]:
    """A JSON file that must hold an object; else one GolfError line naming it (``fix`` says what to do)."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GolfError(f"{str(path)!r} is not valid JSON ({exc}){hint}") from None
    if not isinstance(obj, dict):
        raise GolfError(f"{str(path)!r} is not a JSON object{hint}")
    return obj


def read_json(path: str | Path) -> dict | None:
    """A result file that may not exist yet (or is being written): its JSON, else None."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class JsonlWriter:
    """Appends one JSON object per line and flushes, so a killed run leaves a readable record."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._fh = open(self.path, "a") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The run folder's files, lock and numbered folders: golf.runs.


def _git(*args: str, cwd: Path | None = None, strip: bool = True) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10,
            cwd=cwd or Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:  # e.g. a copy with no commits
        return ""
    return out.stdout.strip() if strip else out.stdout


def code_version() -> dict[str, Any]:
    """The golf commit and whether the working tree differs from it: each stage's result carries it,
    since a run's stages may run with different code (a quantize after a pull)."""
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}


def write_code_diff(path: Path, checkout: Path | None = None) -> bool:
    """Writes ``git diff HEAD`` of golf's checkout to ``path`` when the tracked files differ from the
    commit, so that a dirty run can be rebuilt (its commit plus this patch); says whether it wrote."""
    diff = _git("diff", "HEAD", cwd=checkout, strip=False)
    if not diff:
        return False
    atomic_write_text(path, diff)
    return True


def data_manifest_hash(files: list[Path]) -> str:
    """Hash of names, sizes and headers of the data files: cheap, and changes when the data does."""
    h = hashlib.sha256()
    for f in sorted(files):
        f = Path(f)
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1024))
    return h.hexdigest()[:16]


def environment_record(world_size: int = 1, data_files: list[Path] | None = None) -> dict[str, Any]:
    import torch
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        **code_version(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "world_size": world_size,
        "platform": platform.platform(),
        "data_manifest_sha256": data_manifest_hash(data_files) if data_files else None,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }
