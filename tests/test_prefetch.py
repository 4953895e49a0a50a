"""The prefetching loader (golf/prefetch.py): the record's sequences in the record's order, on each
rank; a failing loader is a GolfError in the training thread, never a hang; close() ends the thread."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from golf.loaders import ShuffledSequenceLoader
from golf.shards import ShardError, write_shard
from golf.prefetch import PrefetchLoader
from golf.runtime import GolfError


def _shards(tmp_path, sizes=(700, 530, 610, 480)):
    """Shard k holds k*10000 + position, so every window names its shard and start."""
    return [write_shard(tmp_path / f"fineweb_train_{k:06d}.bin", k * 10_000 + np.arange(n))
            for k, n in enumerate(sizes)]


def _loader(files, rank=0, world=1, seed=None):
    return ShuffledSequenceLoader(files, rank, world, seq_len=16, seqs_per_batch=3, seed=seed)


def _no_prefetch_threads():
    deadline = time.monotonic() + 5
    while any(t.name == "golf-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not any(t.name == "golf-prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("rank,world", [(0, 1), (0, 2), (1, 2)])
@pytest.mark.parametrize("depth", [0, 1, 4])
def test_prefetch_yields_the_loaders_sequences_in_order(tmp_path, rank, world, depth):
    files = _shards(tmp_path)
    plain = _loader(files, rank, world)
    n = sum(plain.remaining()) // 3 + 5  # past the end of the first epoch: the re-shuffle is kept too
    with PrefetchLoader(_loader(files, rank, world), "cpu", depth=depth) as pre:
        for _ in range(n):
            want_x, want_y = plain.next_batch()
            x, y = pre.next_batch()
            assert torch.equal(x, want_x) and torch.equal(y, want_y)
            assert x.dtype == torch.int64 and x.is_contiguous() and y.is_contiguous()
    assert _no_prefetch_threads()


def test_prefetch_keeps_the_seeded_order(tmp_path):
    files = _shards(tmp_path)
    plain = _loader(files, seed=7)
    with PrefetchLoader(_loader(files, seed=7), "cpu") as pre:
        got = torch.cat([pre.next_batch()[0] for _ in range(10)])
    assert torch.equal(got, torch.cat([plain.next_batch()[0] for _ in range(10)]))


class _BadAfter:
    """A loader whose shard turns out bad after ``ok`` batches."""

    def __init__(self, ok: int):
        self.ok = ok

    def next_batch(self, device="cpu"):
        if self.ok == 0:
            raise ShardError("shard fineweb_train_000003.bin: truncated: header says 100 tokens, found 50")
        self.ok -= 1
        return torch.zeros(2, 4, dtype=torch.int64), torch.ones(2, 4, dtype=torch.int64)


def test_loader_error_is_a_golf_error_in_the_training_thread():
    pre = PrefetchLoader(_BadAfter(2), "cpu", depth=2)
    t0 = time.monotonic()
    pre.next_batch(), pre.next_batch()  # the good batches still arrive first
    with pytest.raises(GolfError, match="prefetch thread.*ShardError.*fineweb_train_000003.bin: truncated") as info:
        pre.next_batch()
    assert isinstance(info.value.__cause__, ShardError)
    with pytest.raises(GolfError, match="truncated"):  # and it stays failed
        pre.next_batch()
    assert time.monotonic() - t0 < 10
    assert not pre.running and _no_prefetch_threads()


def test_a_shard_cut_short_under_a_real_loader_is_a_golf_error(tmp_path):
    files = _shards(tmp_path, sizes=(700,))
    loader = _loader(files)
    loader.tokens[0] = loader.tokens[0][:40]  # the shard's data ends early: windows past it come up short
    with PrefetchLoader(loader, "cpu", depth=2) as pre:
        with pytest.raises(GolfError, match="prefetch thread.*ValueError"):
            for _ in range(100):
                pre.next_batch()
    assert _no_prefetch_threads()


def test_a_stalled_loader_times_out():
    class Stuck:
        def __init__(self):
            self.release = threading.Event()

        def next_batch(self, device="cpu"):
            self.release.wait(30)
            raise RuntimeError("released")

    stuck = Stuck()
    pre = PrefetchLoader(stuck, "cpu", depth=2, stall_timeout_s=1.0)
    with pytest.raises(GolfError, match="made no micro-batch in 1 s"):
        pre.next_batch()
    stuck.release.set()
    assert _no_prefetch_threads()


def test_close_stops_the_thread_and_later_calls_fail(tmp_path):
    pre = PrefetchLoader(_loader(_shards(tmp_path)), "cpu", depth=2)
    pre.next_batch()
    time.sleep(0.05)  # the worker fills the queue and blocks on it
    assert pre.running
    pre.close()
    assert not pre.running and _no_prefetch_threads()
    pre.close()  # twice is fine
    with pytest.raises(GolfError, match="closed"):
        pre.next_batch()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetch_to_cuda_matches_the_loader(tmp_path):
    files = _shards(tmp_path)
    plain = _loader(files)
    with PrefetchLoader(_loader(files), "cuda", depth=3) as pre:
        for _ in range(20):
            want_x, want_y = plain.next_batch()
            x, y = pre.next_batch()
            assert x.is_cuda and torch.equal(x.cpu(), want_x) and torch.equal(y.cpu(), want_y)


# --- the training step on prefetched micro-batches ------------------------------------------------

TINY = dict(model_dim=32, num_layers=2, num_heads=2, num_kv_heads=1, rope_dims=8, mlp_mult=2.0, num_loops=0,
            loop_start=0, loop_end=1, parallel_start_layer=1, xsa_last_n=2, vocab_size=64, train_seq_len=16,
            compile="off")


def _steps(files, depth, n_steps=3, accum=2):
    from golf.config import load_config
    from golf.model import build_model
    from golf.runtime import DistInfo
    from golf.train import Trainer

    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    model = build_model(cfg)
    trainer = Trainer(model, cfg, DistInfo())
    losses = []
    loader = ShuffledSequenceLoader(files, 0, 1, seq_len=16, seqs_per_batch=2)
    with PrefetchLoader(loader, "cpu", depth=depth) as batches:
        for step in range(n_steps):
            trainer.set_schedule(1.0, step)
            loss = trainer.step((batches.next_batch() for _ in range(accum)), n_micro=accum)
            assert loss.dim() == 0  # a tensor: read only when logging
            losses.append(loss.item())
    return losses, model.state_dict()


def test_training_on_prefetched_batches_is_training_on_the_loader(tmp_path):
    files = [write_shard(tmp_path / f"fineweb_train_{k:06d}.bin", np.random.default_rng(k).integers(0, 64, 900))
             for k in range(2)]
    (loss_a, state_a), (loss_b, state_b) = _steps(files, depth=0), _steps(files, depth=3)
    assert loss_a == loss_b
    for name, value in state_a.items():
        assert torch.equal(value, state_b[name]), name


def test_step_wants_the_micro_batch_count_of_a_lazy_iterator():
    from golf.config import load_config
    from golf.model import build_model
    from golf.runtime import DistInfo
    from golf.train import Trainer

    cfg = load_config(None, TINY)
    trainer = Trainer(build_model(cfg), cfg, DistInfo())
    ids = torch.randint(0, 64, (2, 17))
    with pytest.raises(TypeError, match="n_micro"):
        trainer.step(iter([(ids[:, :-1], ids[:, 1:])]))
    with pytest.raises(ValueError, match="got 1 micro-batches, expected n_micro=2"):
        trainer.step(iter([(ids[:, :-1], ids[:, 1:])]), n_micro=2)


def test_compile_cache_folder_is_under_the_project_root(monkeypatch, tmp_path):
    import os

    from golf.config import load_config
    from golf.compile_policy import enable_compile_cache

    import torch._inductor.config  # noqa: F401  (importing it may set torch's own default: before the delenv)

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert enable_compile_cache(load_config(None, {"compile_cache_dir": ""})) is None
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # torch keeps its own default
    monkeypatch.setenv("GOLF_HOME", str(tmp_path))  # golf.paths: the project root of child processes
    got = enable_compile_cache(load_config(None, {}))
    assert got == tmp_path / "outputs" / ".compile_cache" and got.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(got)
