"""golf.muon against plain per-matrix references written here (one process, CPU)."""
import copy
import math

import pytest
import torch

from golf.muon import (POLAR_EXPRESS_COEFFS, RECORD_COEFFS, BankMuon, muon_update, ns_coefficients, shape_scale,
                       zeropower_via_newtonschulz)


def ref_newtonschulz(M, per_step, dtype):
    """One matrix [rows, cols], one (a, b, c) per iteration, written out plainly."""
    X = M.to(dtype)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / (torch.linalg.matrix_norm(X) + 1e-7)
    for a, b, c in per_step:
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if tall else X


def ref_muon(p0, grads, lrs, momenta, wd, per_step, dtype):
    """Per-matrix MuonEq-R as the records step on one GPU: the grad and momentum in bf16, Nesterov, each
    row divided by its fp32 norm rounded to bf16, Newton–Schulz in ``dtype``, shape scale, decay."""
    p = p0.clone()
    B, rows, cols = p.shape
    bufs = [torch.zeros(rows, cols, dtype=torch.bfloat16) for _ in range(B)]
    for g, lr, mu in zip(grads, lrs, momenta):
        for i in range(B):
            gi = g[i].bfloat16()
            bufs[i].mul_(mu).add_(gi)
            u = gi.add(bufs[i], alpha=mu)  # one rounding, as the record's g.add(buf, alpha=momentum)
            u = u / u.float().norm(dim=1, keepdim=True).clamp_min(1e-7).bfloat16()
            o = ref_newtonschulz(u, per_step, dtype).float()
            p[i] = p[i] * (1 - lr * wd) - lr * math.sqrt(max(1, rows / cols)) * o
    return p


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(3, 8, 16), (3, 16, 8), (2, 12, 12)])
@pytest.mark.parametrize("coeffs", ["record", "polar_express"])
def test_newtonschulz_matches_per_matrix_loop(shape, coeffs):
    G = _randn(*shape)
    co = ns_coefficients(coeffs)
    per_step = [co] * 5 if coeffs == "record" else co
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)]:
        out = zeropower_via_newtonschulz(G, steps=5, coefficients=co, dtype=dtype)
        assert out.shape == G.shape and out.dtype == dtype
        ref = torch.stack([ref_newtonschulz(m, per_step, dtype) for m in G])
        torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


def test_newtonschulz_singular_values_near_one():
    for shape in [(4, 8, 32), (4, 32, 8)]:
        G = _randn(*shape, seed=1)
        s_rec = torch.linalg.svdvals(zeropower_via_newtonschulz(G).float())  # bf16, as the record runs it
        s_pe = torch.linalg.svdvals(zeropower_via_newtonschulz(G, coefficients=POLAR_EXPRESS_COEFFS).float())
        assert 0.3 < s_rec.min() and s_rec.max() < 1.3
        assert 0.8 < s_pe.min() and s_pe.max() < 1.2
        assert s_pe.min() > s_rec.min()  # Polar Express converges tighter in the same 5 steps


def test_polar_express_uses_one_tuple_per_step():
    G = _randn(2, 8, 16, seed=2)
    out = zeropower_via_newtonschulz(G, coefficients=POLAR_EXPRESS_COEFFS, dtype=torch.float32)
    first_only = zeropower_via_newtonschulz(G, coefficients=POLAR_EXPRESS_COEFFS[0], dtype=torch.float32)
    reversed_ = zeropower_via_newtonschulz(G, coefficients=POLAR_EXPRESS_COEFFS[::-1], dtype=torch.float32)
    assert not torch.allclose(out, first_only, atol=1e-3) and not torch.allclose(out, reversed_, atol=1e-3)
    # a prefix is a valid shorter schedule; too few tuples is an error
    three = zeropower_via_newtonschulz(G, steps=3, coefficients=POLAR_EXPRESS_COEFFS, dtype=torch.float32)
    ref = torch.stack([ref_newtonschulz(m, POLAR_EXPRESS_COEFFS[:3], torch.float32) for m in G])
    torch.testing.assert_close(three, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        zeropower_via_newtonschulz(G, steps=6, coefficients=POLAR_EXPRESS_COEFFS)
    with pytest.raises(ValueError):
        ns_coefficients("cubic")


def test_shape_scale_and_zero_input():
    assert shape_scale(2048, 512) == 2.0 and shape_scale(512, 2048) == 1.0 and shape_scale(256, 512) == 1.0
    z = torch.zeros(2, 4, 8)
    assert torch.equal(muon_update(z, torch.zeros(2, 4, 8, dtype=torch.bfloat16), 0.9).float(), z)  # no NaN


def _run_bank_muon(p0, grads, lrs, momenta, wd, coeffs, dtype):
    p = torch.nn.Parameter(p0.clone())
    opt = BankMuon([p], lr=lrs[0], momentum=momenta[0], weight_decay=wd, coefficients=coeffs, ns_dtype=dtype)
    for g, lr, mu in zip(grads, lrs, momenta):
        opt.param_groups[0]["lr"] = lr  # the trainer's LR schedule and momentum warmup do exactly this
        opt.param_groups[0]["momentum"] = mu
        p.grad = g.clone()
        opt.launch_reduce_scatters()  # no-op in one process
        opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("shape", [(3, 16, 8), (2, 8, 16)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-3)])  # bf16: batched vs per-matrix rounding; tests/test_oracle.py holds the exact record step
def test_bank_muon_matches_per_matrix_reference(shape, dtype, tol):
    p0 = _randn(*shape, seed=3) * 0.1
    grads = [_randn(*shape, seed=10 + k) for k in range(3)]
    lrs, momenta = [0.02, 0.02, 0.01], [0.92, 0.95, 0.99]  # warmup-style momenta set per step
    got, opt = _run_bank_muon(p0, grads, lrs, momenta, 0.095, RECORD_COEFFS, dtype)
    ref = ref_muon(p0, grads, lrs, momenta, 0.095, [RECORD_COEFFS] * 5, dtype)
    torch.testing.assert_close(got, ref, atol=tol, rtol=0)
    assert not torch.allclose(got, p0, atol=1e-3)
    assert opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"].dtype == torch.bfloat16
    # Polar Express coefficients flow through the optimizer per step too
    got_pe, _ = _run_bank_muon(p0, grads, lrs, momenta, 0.095, POLAR_EXPRESS_COEFFS, dtype)
    ref_pe = ref_muon(p0, grads, lrs, momenta, 0.095, POLAR_EXPRESS_COEFFS, dtype)
    torch.testing.assert_close(got_pe, ref_pe, atol=tol, rtol=0)


def test_momentum_is_read_from_the_group_each_step():
    shape = (2, 8, 16)
    p0 = torch.zeros(shape)
    grads = [_randn(*shape, seed=20 + k) for k in range(2)]
    # momentum 0 at step 2: the update must ignore step 1's buffer
    got, _ = _run_bank_muon(p0, grads, [0.0, 1.0], [0.9, 0.0], 0.0, RECORD_COEFFS, torch.float32)
    g = grads[1].bfloat16()
    expected = -zeropower_via_newtonschulz(g / g.float().norm(dim=-1, keepdim=True).bfloat16(), dtype=torch.float32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # and the warmup momenta change the result as the reference says
    lrs, momenta = [0.02] * 2, [0.5, 0.99]
    got, _ = _run_bank_muon(p0, grads, lrs, momenta, 0.0, RECORD_COEFFS, torch.float32)
    torch.testing.assert_close(got, ref_muon(p0, grads, lrs, momenta, 0.0, [RECORD_COEFFS] * 5, torch.float32),
                               atol=1e-5, rtol=0)


def test_single_process_momentum_resets_on_load_state_dict():
    """On one GPU the momentum is optimizer state, so restoring the initial state clears it (unlike §9.7)."""
    p = torch.nn.Parameter(torch.zeros(2, 4, 8))
    opt = BankMuon([p], lr=0.01)
    initial = copy.deepcopy(opt.state_dict())
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["momentum_buffer"].abs().sum() > 0
    opt.load_state_dict(initial)
    assert "momentum_buffer" not in opt.state[p]
    with pytest.raises(AssertionError):
        BankMuon([torch.nn.Parameter(torch.zeros(4, 8))])
