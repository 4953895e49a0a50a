"""golf.kernels: the Triton kernels of fused_mlp and fused_ce equal the unfused PyTorch path, forward
and backward, also when traced by torch.compile. On CPU Triton's interpreter runs them in fp16
(it has no bf16); on a GPU the compiled kernels are checked in bf16 inside the model. Off CUDA the
switches run the unfused path."""
import json
import os
import subprocess
import sys

import pytest
import torch

from golf.config import load_config
from golf.model import build_model

INTERPRETED = r"""
import json, torch
from golf import kernels as fm
torch.manual_seed(0)
M, D, N = 200, 64, 256  # 200 rows: the last row block is partly masked
h = torch.randn(M, D).half().requires_grad_()
w_up = (torch.randn(N, D) / 8).half().requires_grad_()
w_down = (torch.randn(D, N) / 16).half().requires_grad_()
g = torch.randn(M, D).half()

def grads(fn):
    out = fn(h, w_up, w_down)
    return [out.detach()] + list(torch.autograd.grad(out, (h, w_up, w_down), g))

def err(a, b):
    return [((x.float() - y.float()).abs().max() / y.float().abs().max()).item() for x, y in zip(a, b)]

ref = grads(fm.reference_mlp)
fused = grads(lambda a, b, c: fm._mlp_train(a, b, c)[0])
traced = grads(torch.compile(lambda a, b, c: fm._mlp_train(a, b, c)[0], backend="aot_eager", fullgraph=True))
with torch.no_grad():
    infer = fm._mlp_infer(h, w_up, w_down)

# fused_ce: 300 classes (not a power of two, so the row's tail is masked), a cap that bites
R, V = 96, 300
hc = torch.randn(R, D).half().requires_grad_()
emb = torch.randn(V, D).half().requires_grad_()
targets = torch.randint(0, V, (R,))
row_w = torch.rand(R)  # a per-row upstream gradient, as a weighted sum would give

def ce_grads(fn):
    nll = fn(hc, emb, targets, 2.0)
    return [nll.detach()] + list(torch.autograd.grad((nll * row_w).sum(), (hc, emb)))

ce_ref = ce_grads(fm.reference_softcap_nll)
print(json.dumps({"fused": err(fused, ref), "traced": err(traced, fused),
                  "infer": err([infer], [ref[0]])[0], "pre_neg": (h.float() @ w_up.float().t() < 0).float().mean().item(),
                  "ce": err(ce_grads(fm.fused_softcap_nll), ce_ref),
                  "ce_traced": err(ce_grads(torch.compile(fm.fused_softcap_nll, backend="aot_eager", fullgraph=True)),
                                   ce_grads(fm.fused_softcap_nll)),
                  "ce_capped": (hc.float() @ emb.float().t()).abs().max().item()}))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU test below checks the compiled kernels in bf16")
def test_kernels_equal_the_unfused_path_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", INTERPRETED], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.3 < res["pre_neg"] < 0.7  # both branches of the activation are exercised
    # output, d h, d w_up, d w_down: fp16 rounding apart (different summation order), relative to the max
    assert max(res["fused"]) < 4e-3, res
    assert max(res["traced"]) == 0.0, res  # compiled graph (fake kernels, registered autograd) = eager op
    assert res["infer"] < 4e-3, res
    assert res["ce_capped"] > 4.0  # logits well past the cap of 2: tanh's saturation is exercised
    assert max(res["ce"]) < 4e-3, res  # NLL, d h, d embedding
    assert max(res["ce_traced"]) == 0.0, res


MODEL_INTERPRETED = r"""
import json, torch
from golf import kernels
from golf.config import load_config
from golf.model import build_model
kernels.mlp_supported = kernels.ce_supported = lambda *a: True  # the interpreter runs on CPU tensors
# fix_embed_fp32: all in fp32 (a bf16 tok_emb's gradient rounds to its own ulp, 1e-3 relative, whatever the kernels)
cfg = load_config("params/demo.yaml", {"seed": 5, "num_layers": 3, "loop_start": 1, "loop_end": 1, "xsa_last_n": 1,
                                       "parallel_start_layer": 2, "fix_embed_fp32": True})
models = [build_model(cfg, "cpu") for _ in range(2)]
models[1].set_fused_kernels(mlp=True, ce=True, qkv=False)
ids = torch.randint(0, cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
out = []
for m in models:
    with torch.no_grad():
        m.mlp_down_bank.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))  # so the MLPs reach the loss
    m.set_looping(True)
    loss = m(ids, ids)
    loss.backward()
    out.append((loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
(l0, g0), (l1, g1) = out
print(json.dumps({"loss": [l0, l1], "grads": sorted(g0) == sorted(g1),
                  "grad_err": max(((g0[n] - g1[n]).abs().max() / g0[n].abs().max().clamp_min(1e-12)).item() for n in g0)}))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU test below checks the compiled kernels in bf16")
def test_model_with_both_kernels_equals_the_default_in_fp32_under_the_interpreter():
    """GPT.forward through fused_mlp and fused_ce (looping, lanes, XSA on): loss and every gradient as the default."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", MODEL_INTERPRETED], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["grads"], res
    assert abs(res["loss"][0] - res["loss"][1]) < 1e-5, res
    assert res["grad_err"] < 1e-4, res


def test_switches_off_cuda_run_the_unfused_path(caplog):
    cfg = load_config("params/demo.yaml", {"seed": 3})
    on = load_config("params/demo.yaml", {"seed": 3, "fused_mlp": True, "fused_ce": True})
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    with caplog.at_level("WARNING", logger="golf"):
        fused_model = build_model(on, "cpu")
    assert "fused_mlp needs CUDA" in caplog.text and "fused_ce needs CUDA" in caplog.text
    # what the run records
    assert fused_model.fused_kernels() == {"fused_mlp": False, "fused_ce": False, "fused_qkv": False}
    assert torch.equal(build_model(cfg, "cpu")(ids, ids), fused_model(ids, ids))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_model_matches_the_default_in_bf16_on_gpu():  # fused_mlp, fused_ce and fused_qkv together
    cfg = load_config("params/record.yaml", {"num_layers": 4, "loop_start": 1, "loop_end": 2, "xsa_last_n": 2,
                                             "parallel_start_layer": 3})
    base = build_model(cfg, "cuda")
    fused = build_model(load_config("params/record.yaml", {**{k: getattr(cfg, k) for k in
                                    ("num_layers", "loop_start", "loop_end", "xsa_last_n", "parallel_start_layer")},
                                    "fused_mlp": True, "fused_ce": True, "fused_qkv": True}), "cuda")
    fused.load_state_dict(base.state_dict())
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():  # non-zero W_down, so the MLP reaches the loss
        for a, b in zip(base.mlp_down_bank, fused.mlp_down_bank):
            a.copy_(0.02 * torch.randn(a.shape, device="cuda", generator=g)); b.copy_(a)
    # 1,500 rows: no multiple of any tile height, so the MLP kernels' last row block is masked
    ids = torch.randint(0, cfg.vocab_size, (3, 500), device="cuda", generator=g)
    losses, grads = [], []
    for model in (base, fused):
        loss = model(ids, ids)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([model.mlp_up_bank.grad.flatten(), model.mlp_down_bank.grad.flatten(),
                                model.qo_bank.grad.flatten(), model.tok_emb.weight.grad.float().flatten()]))
    assert abs(losses[0] - losses[1]) < 2e-3, losses
    rel = (grads[0] - grads[1]).norm() / grads[0].norm()
    assert rel < 2e-2, rel.item()
    with torch.no_grad():
        nll = [m.nll_at(ids, ids, 448) for m in (base, fused)]
    assert (nll[0] - nll[1]).abs().mean() < 2e-3
