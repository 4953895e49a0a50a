"""Sharded BankMuon on 2 gloo processes (CPU) against the one-process step fed the averaged gradient."""
import copy

import torch

from gloo import run_gloo
from golf.muon import BankMuon

WORLD = 2
# odd bank sizes exercise the padding: B=5 -> 6 (s=3, rank 1 owns one padding slice); B=1 -> 2 (rank 1 owns
# padding only); (3, 16, 8) is a tall bank (transposed NS, shape scale sqrt 2)
SHAPES = [(5, 8, 8), (5, 4, 8), (3, 16, 8), (1, 8, 16)]
NS_DTYPES = (torch.bfloat16, torch.float32)  # as the record runs it; and fp32 for a tight comparison
SCHEDULE = [(0.02, 0.92), (0.02, 0.95), (0.01, 0.99)]  # (lr, momentum) per step


def _params():
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(0.1 * torch.randn(s, generator=gen)) for s in SHAPES]


def _local_grads(step, rank):
    """Multiples of 1/8 (rank 1: of 1/4, twice as large): their bf16 sum and half are exact, so the bf16
    reduce-scatter(AVG) gives exactly the fp32 average and the momentum buffers can be compared bit for bit."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    return [torch.randint(-8, 9, s, generator=gen).float() / 8 * (1 + rank) for s in SHAPES]


def _train(params, grads_for_step, ns_dtype):
    opt = BankMuon(params, weight_decay=0.095, ns_dtype=ns_dtype)
    initial = copy.deepcopy(opt.state_dict())
    for step, (lr, mu) in enumerate(SCHEDULE):
        opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"] = lr, mu
        for p, g in zip(params, grads_for_step(step)):
            p.grad = g
        opt.launch_reduce_scatters()
        opt.step()
    return opt, initial


def _rank_run(rank):
    result = {}
    for ns_dtype in NS_DTYPES:
        params = _params()
        opt, initial = _train(params, lambda step: _local_grads(step, rank), ns_dtype)
        result[str(ns_dtype)] = ([p.detach().clone() for p in params], [opt.shard_mom[p].clone() for p in params])
    # shapes and the §9.7 behaviour, on the last run
    assert [tuple(opt.shard_mom[p].shape) for p in params] == [(3, 8, 8), (3, 4, 8), (2, 16, 8), (1, 8, 16)]
    assert all(m.dtype == torch.bfloat16 for m in opt.shard_mom.values())
    # §9.7: the shard momentum is no optimizer state, so restoring the initial state leaves it as it was
    before = {id(p): m.clone() for p, m in opt.shard_mom.items()}
    opt.load_state_dict(initial)
    assert all(torch.equal(before[id(p)], m) for p, m in opt.shard_mom.items())
    assert before[id(params[0])].abs().sum() > 0
    if rank == 1:  # owns only the padding slice of the B=1 bank: its momentum stays exactly zero
        assert before[id(params[3])].abs().sum() == 0
    opt.reset_shard_momentum()
    assert all(m.abs().sum() == 0 for m in opt.shard_mom.values())
    return result


def test_sharded_step_matches_single_process_on_averaged_grads():
    ranks = run_gloo(_rank_run, WORLD)

    def averaged(step):
        local = [_local_grads(step, r) for r in range(WORLD)]
        return [sum(gs) / WORLD for gs in zip(*local)]

    # atol: the sharded path forms the Nesterov sum in bf16 and gathers the update in bf16; Newton–Schulz
    # amplifies such rounding, bf16 NS most. The weights move by ~0.02 over the 3 steps.
    for ns_dtype, atol in zip(NS_DTYPES, (4e-3, 5e-4)):
        for a, b in zip(ranks[0][str(ns_dtype)][0], ranks[1][str(ns_dtype)][0]):
            assert torch.equal(a, b)  # every rank applies the same gathered update
        params = _params()
        start = [p.detach().clone() for p in params]
        opt, _ = _train(params, averaged, ns_dtype)  # one process: no collectives, momentum in optimizer state
        for i, (p, p0) in enumerate(zip(params, start)):
            torch.testing.assert_close(ranks[0][str(ns_dtype)][0][i], p.detach(), atol=atol, rtol=0)
            assert (p.detach() - p0).abs().max() > 1e-2  # the steps did move the weights
            # each rank's shard momentum is its slice of the one-process momentum (zero-padded), exactly
            full_mom = opt.state[p]["momentum_buffer"]
            s = -(-p.size(0) // WORLD)
            padded = torch.cat([full_mom, full_mom.new_zeros(s * WORLD - p.size(0), *p.shape[1:])])
            for r in range(WORLD):
                assert torch.equal(ranks[r][str(ns_dtype)][1][i], padded[r * s:(r + 1) * s])
