"""Muon for the four 3-D parameter banks: batched Newton–Schulz, MuonEq-R, sharded distributed step.

Muon (Keller Jordan, 2024, https://kellerjordan.github.io/posts/muon/) replaces each matrix's SGD-momentum
update by its nearest semi-orthogonal matrix, computed with a few Newton–Schulz iterations in bf16.
MuonEq-R (as in Parameter Golf #1533) first divides each row of the momentum update by its L2 norm.
The per-step Polar Express coefficients come from Amsel, Persson, Musco & Gower, "The Polar Express:
Optimal Matrix Sign Methods and Their Application to the Muon Algorithm" (2025), via PR #1344 / #1787.

Layout (spec §3, §4.2): the pure functions `zeropower_via_newtonschulz` and `muon_update` do the maths;
`BankMuon` is a thin optimizer around them. In one process the momentum lives in the optimizer state. With
torch.distributed initialised (W > 1) each bank's gradient is reduce-scattered along the bank dimension,
each rank orthogonalizes its shard, and the shards are all-gathered back (no DDP anywhere).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.distributed as dist

Coeffs = tuple[float, float, float]

# The quintic (a, b, c) that Keller Jordan tuned for 5 steps; used by the record at every step.
RECORD_COEFFS: Coeffs = (3.4445, -4.7750, 2.0315)

# Polar Express (Amsel et al. 2025), one minimax tuple per iteration (spec §8). The tuples are built greedily,
# each optimal for the singular-value interval the previous one leaves, so any prefix is a valid shorter schedule.
POLAR_EXPRESS_COEFFS: list[Coeffs] = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def ns_coefficients(name: str) -> Coeffs | list[Coeffs]:
    """Map the config value `muon_ns_coefficients` ("record" | "polar_express") to coefficients."""
    table = {"record": RECORD_COEFFS, "polar_express": POLAR_EXPRESS_COEFFS}
    if name not in table:
        raise ValueError(f"muon_ns_coefficients must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _per_step(coefficients: Coeffs | Sequence[Coeffs], steps: int) -> list[Coeffs]:
    """One (a, b, c) per iteration: a single tuple is repeated, a list is used in order."""
    if len(coefficients) == 3 and all(isinstance(c, (int, float)) for c in coefficients):
        return [tuple(coefficients)] * steps
    per_step = [tuple(c) for c in coefficients]
    if len(per_step) < steps or any(len(c) != 3 for c in per_step):
        raise ValueError(f"need {steps} per-step (a, b, c) tuples, got {coefficients!r}")
    return per_step[:steps]


def zeropower_via_newtonschulz(G: torch.Tensor, steps: int = 5, coefficients: Coeffs | Sequence[Coeffs] = RECORD_COEFFS,
                               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximate the orthogonal factor U Vᵀ of G = U S Vᵀ, batched over leading dims.

    Each iteration applies the odd polynomial X ← a·X + b·(X Xᵀ)X + c·(X Xᵀ)²X, which pushes every singular
    value towards 1 without touching the singular vectors. The record's tuple trades exactness for speed: its
    output singular values land roughly in [0.7, 1.2] rather than at 1, which does not hurt training.
    Runs in `dtype` (bf16 as the record; fp32 for exact CPU tests). Pure function, so the trainer may compile it.
    """
    assert G.ndim >= 2, "need at least one matrix"
    X = G.to(dtype)  # [..., rows, cols]
    transposed = G.size(-2) > G.size(-1)
    if transposed:  # work on the wide side so X Xᵀ is the smaller Gram matrix
        X = X.mT  # [..., cols, rows]
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # per matrix: all singular values ≤ 1
    for a, b, c in _per_step(coefficients, steps):
        A = X @ X.mT  # [..., m, m], m = min(rows, cols)
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if transposed else X


def shape_scale(rows: int, cols: int) -> float:
    """Update scale for a [rows, cols] matrix: sqrt(max(1, rows/cols)) (2 for the 2048×512 MLP up bank)."""
    return math.sqrt(max(1.0, rows / cols))


def muon_update(grad: torch.Tensor, momentum_buf: torch.Tensor, momentum: float, row_normalize: bool = True,
                ns_steps: int = 5, coefficients: Coeffs | Sequence[Coeffs] = RECORD_COEFFS,
                ns_dtype: torch.dtype = torch.bfloat16,
                zeropower: Callable[..., torch.Tensor] = zeropower_via_newtonschulz) -> torch.Tensor:
    """One Muon direction for a stack of matrices [..., rows, cols]; updates `momentum_buf` in place.

    buf ← μ·buf + g (buf keeps its dtype, bf16 in the record); Nesterov U = g + μ·buf; MuonEq-R divides each
    row (one output neuron, over the input dim) by its fp32 L2 norm clamped at 1e-7 and cast to the update's
    dtype (bf16 in the records); then Newton–Schulz.
    Returns the orthogonalized update in `ns_dtype`, not yet scaled by lr or shape_scale.
    """
    momentum_buf.mul_(momentum).add_(grad)
    update = grad.add(momentum_buf.to(grad.dtype), alpha=momentum)  # [..., rows, cols]
    if row_normalize:  # the fp32 norm rounded to the update's dtype first, as #1533 and #1855 divide
        update = update / update.float().norm(dim=-1, keepdim=True).clamp_min(1e-7).to(update.dtype)
    return zeropower(update, steps=ns_steps, coefficients=coefficients, dtype=ns_dtype)


# --- collectives: NCCL gets the real ops; gloo (CPU tests) gets equivalents it supports in every torch ------

_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # new name in 2.13
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _native(t: torch.Tensor) -> bool:
    return t.is_cuda and "nccl" in str(dist.get_backend())


class _Pending:
    """An async collective; wait() finishes it, then runs an optional epilogue (the gloo fallbacks need one)."""

    def __init__(self, work, then: Callable[[], None] | None = None):
        self.work, self.then = work, then

    def wait(self) -> None:
        self.work.wait()
        if self.then is not None:
            self.then()


def _launch_reduce_scatter_avg(shard: torch.Tensor, full: torch.Tensor, rank: int, world: int) -> _Pending:
    """shard [s, ...] ← mean over ranks of full[rank·s:(rank+1)·s]. gloo: all_reduce(SUM), slice, ÷W."""
    if _native(full):
        return _Pending(_reduce_scatter(shard, full, op=dist.ReduceOp.AVG, async_op=True))
    s = shard.size(0)
    work = dist.all_reduce(full, op=dist.ReduceOp.SUM, async_op=True)  # full is scratch: summing in place is fine
    return _Pending(work, lambda: shard.copy_(full[rank * s:(rank + 1) * s]).div_(world))


def _launch_all_gather(full: torch.Tensor, shard: torch.Tensor, world: int) -> _Pending:
    """full [W·s, ...] ← the shards of all ranks, in rank order. gloo: all_gather into views of `full`."""
    if _native(full):
        return _Pending(_all_gather(full, shard, async_op=True))
    return _Pending(dist.all_gather(list(full.chunk(world)), shard, async_op=True))


class BankMuon(torch.optim.Optimizer):
    """Muon (MuonEq-R) for 3-D bank parameters [B, rows, cols], each slice one weight matrix [out, in].

    Applied update: p ← p·(1 − lr·wd), then p ← p − lr·shape_scale(rows, cols)·U. The trainer sets
    group["lr"] (schedule) and group["momentum"] (warmup) before each step.

    One process: `step()` reads p.grad in bf16, momentum in self.state[p]["momentum_buffer"] (bf16).
    Distributed (spec §3.2): call `launch_reduce_scatters()` after backward (and clipping), do the replicated
    parameters' work, then `step()`. The shard momentum is the plain attribute `shard_mom` (as in the record),
    so `load_state_dict` does not reset it (§9.7); `reset_shard_momentum()` is the fix.
    """

    def __init__(self, params, lr: float = 0.022, momentum: float = 0.99, weight_decay: float = 0.095,
                 row_normalize: bool = True, ns_steps: int = 5,
                 coefficients: Coeffs | Sequence[Coeffs] = RECORD_COEFFS, ns_dtype: torch.dtype = torch.bfloat16,
                 zeropower: Callable[..., torch.Tensor] = zeropower_via_newtonschulz):
        _per_step(coefficients, ns_steps)  # fail early on bad coefficients
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, row_normalize=row_normalize,
                        ns_steps=ns_steps, coefficients=coefficients, ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            assert set(group) == set(defaults) | {"params"}, f"unexpected group keys {sorted(group)}"
            assert all(p.ndim == 3 for p in group["params"]), "BankMuon takes 3-D banks [B, rows, cols]"
        self.zeropower = zeropower  # the trainer may swap in torch.compile(zeropower_via_newtonschulz)
        self.shard_mom: dict[torch.Tensor, torch.Tensor] = {}  # param -> bf16 [s, rows, cols]; not in state_dict
        self._full: dict[torch.Tensor, torch.Tensor] = {}  # param -> bf16 [s·W, rows, cols], padded bank buffer
        self._pending: dict[torch.Tensor, tuple[_Pending, torch.Tensor]] = {}  # param -> (reduce-scatter, shard grad)

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _banks(self) -> list[tuple[torch.Tensor, dict]]:
        """(param, group), largest bank first: the order of both the reduce-scatters and the updates."""
        pairs = [(p, g) for g in self.param_groups for p in g["params"]]
        return sorted(pairs, key=lambda pg: pg[0].numel(), reverse=True)

    def _update(self, grad: torch.Tensor, buf: torch.Tensor, group: dict) -> torch.Tensor:
        return muon_update(grad, buf, group["momentum"], group["row_normalize"], group["ns_steps"],
                           group["coefficients"], group["ns_dtype"], self.zeropower)

    @staticmethod
    def _apply(p: torch.Tensor, update: torch.Tensor, group: dict) -> None:
        lr = group["lr"]
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(update.to(p.dtype), alpha=-lr * shape_scale(p.size(-2), p.size(-1)))

    @torch.no_grad()
    def launch_reduce_scatters(self) -> None:
        """Start one async bf16 reduce-scatter(AVG) per bank, padded along dim 0 to ceil(B/W)·W. No-op if W = 1."""
        rank, world = self._world()
        if world == 1:
            return
        if self._pending:
            raise RuntimeError("launch_reduce_scatters() called twice without step()")
        for p, _ in self._banks():
            B, rows, cols = p.shape
            s = -(-B // world)  # slices per rank
            full = self._full.get(p)
            if full is None:  # one buffer per bank: reduce-scatter input, then all-gather output
                full = self._full[p] = torch.empty(s * world, rows, cols, dtype=torch.bfloat16, device=p.device)
            if p.grad is None:
                full[:B].zero_()
            else:
                full[:B].copy_(p.grad)
            full[B:].zero_()  # padding slices average to zero, so their ranks' updates are zero too
            shard = torch.empty(s, rows, cols, dtype=torch.bfloat16, device=p.device)
            self._pending[p] = (_launch_reduce_scatter_avg(shard, full, rank, world), shard)

    @torch.no_grad()
    def reset_shard_momentum(self) -> None:
        """Zero the distributed shard momentum (the §9.7 fix; load_state_dict leaves it alone)."""
        for buf in self.shard_mom.values():
            buf.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world = self._world()
        if world == 1:
            for p, group in self._banks():
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.bfloat16)
                grad = p.grad.to(state["momentum_buffer"].dtype)  # the records' one-GPU step reads the grad in bf16
                self._apply(p, self._update(grad, state["momentum_buffer"], group), group)
            return loss

        if not self._pending:
            self.launch_reduce_scatters()
        previous = None  # (param, group, gather handle, shard update kept alive until the gather is done)
        for p, group in self._banks():
            rs, shard_grad = self._pending.pop(p)
            rs.wait()
            mom = self.shard_mom.get(p)
            if mom is None:
                mom = self.shard_mom[p] = torch.zeros_like(shard_grad)  # bf16 [s, rows, cols]
            update = self._update(shard_grad, mom, group).to(torch.bfloat16).contiguous()  # [s, rows, cols]
            gather = _launch_all_gather(self._full[p], update, world)
            # Wait on the previous bank's gather only now, after this bank's Newton–Schulz was issued,
            # so on CUDA the gather (NCCL stream) overlaps the NS matmuls (compute stream).
            if previous is not None:
                self._finish(*previous)
            previous = (p, group, gather, update)
        if previous is not None:
            self._finish(*previous)
        return loss

    def _finish(self, p: torch.Tensor, group: dict, gather: _Pending, _update: torch.Tensor) -> None:
        gather.wait()
        self._apply(p, self._full[p][: p.size(0)], group)  # drop the padding slices
