"""The banked GPT against slow, obviously-correct versions written here (spec §2, §3.1)."""
import math

import pytest
import torch
import torch.nn.functional as F

from golf.attention import attention_fn, math_attention, sdpa_attention
from golf.config import load_config
from golf.banking import bank_state_dict, load_checkpoint, save_checkpoint, unbank_state_dict
from golf.blocks import apply_partial_rope, exclusive_self_attention
from golf.model import GPT, build_model, count_params, model_info
from golf.runtime import GolfError, cpu_threads

TINY = dict(vocab_size=96, model_dim=32, num_layers=4, num_heads=4, num_kv_heads=2, train_seq_len=32,
            eval_seq_len=32, loop_start=1, loop_end=2, num_loops=2, parallel_start_layer=2, xsa_last_n=4,
            mlp_mult=2.0, rope_dims=4, eval_stride=8)


def tiny_cfg_32x4(**kw):
    """96 tokens, width 32, 4 layers (two looped twice)."""
    return load_config(None, {**TINY, **kw})


def randomized(cfg, seed=0):
    """A model whose every parameter is non-trivial (W_o and W_down start at zero otherwise)."""
    model = build_model(cfg, "cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g).to(p.dtype))
    return model


def test_record_model_info_matches_spec():
    info = model_info(load_config("params/record.yaml"))
    assert info["n_params"] == 35_944_537
    assert info["banks"] == {"qo_bank": [22, 512, 512], "kv_bank": [22, 256, 512],
                             "mlp_up_bank": [11, 2048, 512], "mlp_down_bank": [11, 512, 2048]}
    assert info["n_state_dict_tensors"] == 52
    assert info["virtual_layers"]["plain"] == list(range(11))
    assert info["virtual_layers"]["looped"] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert info["encoder_decoder"]["looped"] == {"encoder": [0, 1, 2, 3, 4, 5, 3, 4],
                                                 "decoder": [5, 3, 4, 5, 6, 7, 8, 9, 10]}
    assert info["encoder_decoder"]["plain"] == {"encoder": [0, 1, 2, 3, 4], "decoder": [5, 6, 7, 8, 9, 10]}
    pairs = [(r["layer"], r["skip_from_encoder_slot"]) for r in info["skip_pairings_looped"]]
    assert pairs == [(5, 7), (3, 6), (4, 5), (5, 4), (6, 3), (7, 2), (8, 1), (9, 0), (10, None)]


def test_record_init_follows_spec():
    cfg = load_config("params/record.yaml", ["num_layers=2", "loop_start=0", "loop_end=1", "xsa_last_n=2"])
    model = build_model(cfg)
    assert model.tok_emb.weight.dtype == torch.bfloat16
    assert abs(model.tok_emb.weight.float().std().item() - 0.005) < 2e-4
    q = model.qo_bank[0]
    assert torch.allclose(q @ q.T, torch.eye(512), atol=2e-2)  # orthogonal, bf16-rounded
    assert torch.equal(q, q.bfloat16().float())
    assert model.qo_bank[2:].abs().max() == 0 and model.mlp_down_bank.abs().max() == 0
    assert torch.equal(model.blocks[0].attn.q_gain, torch.full((8,), 5.0))
    again = build_model(cfg)
    assert torch.equal(again.kv_bank, model.kv_bank)  # seeded
    other = build_model(cfg.replace(seed=7))
    assert not torch.equal(other.kv_bank, model.kv_bank)


def test_initial_weights_do_not_depend_on_the_thread_count():
    """The QRs of the orthogonal draws round differently on 1 and 2 threads; the draw runs on one."""
    cfg = load_config("params/record.yaml", ["num_layers=2", "loop_start=0", "loop_end=1", "xsa_last_n=2"])
    before = torch.get_num_threads()
    states = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            states.append(build_model(cfg).state_dict())
            assert torch.get_num_threads() == n  # the draw gave the count back
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_cpu_threads_gives_the_count_back_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with cpu_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_a_model_built_to_be_loaded_skips_the_draw(tmp_path, monkeypatch):
    cfg = load_config("params/record.yaml", ["num_layers=2", "loop_start=0", "loop_end=1", "xsa_last_n=2"])
    source = build_model(cfg.replace(seed=3))
    torch.save(source.state_dict(), tmp_path / "model.pt")

    def no_draw(*args, **kwargs):
        raise AssertionError("the initial weights were drawn for a model that is loaded next")

    monkeypatch.setattr(torch.nn.init, "orthogonal_", no_draw)
    loaded = build_model(cfg, init=False)
    load_checkpoint(loaded, tmp_path / "model.pt")
    assert loaded.tok_emb.weight.dtype == torch.bfloat16  # the record's embedding dtype all the same
    want = source.state_dict()
    assert all(torch.equal(v, want[k]) and v.dtype == want[k].dtype for k, v in loaded.state_dict().items())


def test_partial_rope_against_explicit_rotation():
    B, T, H, hd, rd = 2, 9, 3, 8, 4
    x = torch.randn(B, T, H, hd)
    out = apply_partial_rope(x, rd, 10_000.0, train_seq_len=16)
    ref = x.clone()
    for t in range(T):
        for j in range(rd // 2):
            theta = t * 10_000.0 ** (-2 * j / rd)
            a, b = x[:, t, :, j], x[:, t, :, j + rd // 2]
            ref[:, t, :, j] = a * math.cos(theta) + b * math.sin(theta)
            ref[:, t, :, j + rd // 2] = -a * math.sin(theta) + b * math.cos(theta)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[..., rd:], x[..., rd:])


def test_rope_ntk_scaling_only_beyond_train_length():
    x = torch.randn(1, 8, 1, 8)
    short = apply_partial_rope(x, 4, 10_000.0, train_seq_len=8)
    long_ = apply_partial_rope(x, 4, 10_000.0, train_seq_len=4)
    torch.testing.assert_close(apply_partial_rope(x, 4, 10_000.0 * 2 ** (4 / 2), train_seq_len=8), long_)
    assert not torch.allclose(short, long_)


def test_xsa_output_is_orthogonal_to_own_value():
    B, T, H, KV, hd = 2, 5, 4, 2, 8
    y, v = torch.randn(B, T, H, hd), torch.randn(B, T, KV, hd)
    out = exclusive_self_attention(y, v)
    for h in range(H):
        v_own = v[:, :, h // (H // KV)]
        assert (out[:, :, h] * v_own).sum(-1).abs().max() < 1e-4
        # and only that component was removed
        v_hat = v_own / v_own.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(out[:, :, h], y[:, :, h] - (y[:, :, h] * v_hat).sum(-1, keepdim=True) * v_hat)


def explicit_gqa(q, k, v):
    B, T, H, hd = q.shape
    out = torch.zeros_like(q)
    for h in range(H):
        kh, vh = k[:, :, h // (H // k.size(2))], v[:, :, h // (H // k.size(2))]
        for t in range(T):
            s = (q[:, t, h, None, :] * kh[:, : t + 1]).sum(-1) / math.sqrt(hd)  # (B, t+1)
            out[:, t, h] = (s.softmax(-1)[..., None] * vh[:, : t + 1]).sum(1)
    return out


@pytest.mark.parametrize("fn", [math_attention, sdpa_attention], ids=["math", "sdpa"])
def test_attention_backends_match_explicit_softmax(fn):
    q, k, v = torch.randn(2, 7, 4, 8), torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8)
    torch.testing.assert_close(fn(q, k, v), explicit_gqa(q, k, v), atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sdpa_cuda", "fa3", "fa4"])
def test_gpu_backends_match_math(name):
    try:
        fn = attention_fn(name)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    q, k, v = (torch.randn(2, 256, h, 64, device="cuda", dtype=torch.bfloat16) for h in (8, 4, 4))
    torch.testing.assert_close(fn(q, k, v).float(), math_attention(q, k, v).float(), atol=2e-2, rtol=2e-2)


def test_sdpa_cuda_scores_with_native_gqa_and_trains_with_expanded_heads(monkeypatch):
    """Without grad (scoring) cuDNN reads the shared KV heads itself; with grad the KV heads are expanded.
    Both compute the explicit softmax's function (on CPU, SDPA's math kernel)."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((k.size(1), kw.get("enable_gqa", False)))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = torch.randn(2, 7, 4, 8), torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8)
    fn, expanded = attention_fn("sdpa_cuda"), attention_fn("sdpa_cuda_expanded")
    with torch.no_grad():
        scored, scored_expanded = fn(q, k, v), expanded(q, k, v)
    trained = fn(q, k, v)
    assert seen == [(2, True), (4, False), (4, False)]  # (KV heads SDPA got, enable_gqa)
    for y in (scored, scored_expanded, trained):
        torch.testing.assert_close(y, explicit_gqa(q, k, v), atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_native_gqa_scoring_matches_expanded_heads_on_gpu():
    """The scorer's cuDNN attention with native GQA against the expanded heads, bf16, at a scorer shape."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(16, 2048, h, 64, device="cuda", dtype=torch.bfloat16, generator=g) for h in (8, 4, 4))
    with torch.no_grad():
        native = attention_fn("sdpa_cuda")(q, k, v)
        expanded = attention_fn("sdpa_cuda_expanded")(q, k, v)
    print(f"native vs expanded: max |difference| {(native.float() - expanded.float()).abs().max().item():.3g}")
    torch.testing.assert_close(native, expanded, atol=0, rtol=0)  # bit-equal on the H100 (bench/RESULTS.md)


def reference_hidden(model: GPT, ids):
    """The forward of spec §2.2-2.7 written out plainly (sequential math, explicit attention)."""
    cfg = model.cfg
    L, H, KV, hd = cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def norm(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)

    def attn(i, x):
        B, T, _ = x.shape
        q = norm((x @ model.qo_bank[i].T).view(B, T, H, hd))
        k = norm((x @ model.kv_bank[i].T).view(B, T, KV, hd))
        v = (x @ model.kv_bank[L + i].T).view(B, T, KV, hd)
        q = apply_partial_rope(q, cfg.rope_dims, cfg.rope_base, model.segment_len)
        k = apply_partial_rope(k, cfg.rope_dims, cfg.rope_base, model.segment_len)
        y = explicit_gqa(q * model.blocks[i].attn.q_gain[None, None, :, None], k, v)
        y = exclusive_self_attention(y, v)
        return y.reshape(B, T, H * hd) @ model.qo_bank[L + i].T

    def mlp(i, x):
        return (F.leaky_relu(x @ model.mlp_up_bank[i].T, 0.5) ** 2) @ model.mlp_down_bank[i].T

    x = norm(model.tok_emb.weight.float()[ids])
    x0 = x
    layers = list(range(L))
    if model.looping:
        layers = [0] + [1, 2] * 3 + [3]
    enc, dec = layers[: len(layers) // 2], layers[len(layers) // 2:]
    skips = []
    for i in enc:
        b = model.blocks[i]
        c = 1 / math.sqrt(i + 1)
        xin = b.resid_mix[0] * x + b.resid_mix[1] * x0
        x = xin + b.attn_scale * attn(i, norm(xin) * c)
        x = x + b.mlp_scale * mlp(i, norm(x) * c)
        skips.append(x)
    lane0 = lane1 = None
    for p, i in enumerate(dec):
        b, c = model.blocks[i], 1 / math.sqrt(i + 1)
        cur = x if lane0 is None else lane0
        if p < model.skip_weights.size(0) and skips:
            g = torch.sigmoid(model.skip_gates[p])
            cur = g * cur + (1 - g) * model.skip_weights[p] * skips.pop()
        if lane0 is None and i >= cfg.parallel_start_layer:
            lane0, lane1 = cur, cur
        if lane0 is None:
            xin = b.resid_mix[0] * cur + b.resid_mix[1] * x0
            x = xin + b.attn_scale * attn(i, norm(xin) * c)
            x = x + b.mlp_scale * mlp(i, norm(x) * c)
        else:
            xin = b.resid_mix[0] * cur + b.resid_mix[1] * x0
            lane0 = xin + b.attn_scale * attn(i, norm(xin) * c)
            lane1 = lane1 + b.mlp_scale * mlp(i, norm(lane1) * c)
    x = model.lane_merge * lane0 + (1 - model.lane_merge) * lane1
    return norm(x)


@pytest.mark.parametrize("looping", [False, True])
def test_forward_matches_reference_with_lanes(looping):
    model = randomized(tiny_cfg_32x4())
    model.set_looping(looping)
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(ids), reference_hidden(model, ids), atol=1e-4, rtol=1e-4)


FRONTIER_SWITCHES = dict(attention_mask="document", smear_gate=True, attn_out_gate=True, parallel_mode="lanes_mix")


@pytest.mark.parametrize("looping, switches", [(False, {}), (True, {}), (True, FRONTIER_SWITCHES)])
def test_fused_qkv_equals_three_projections(looping, switches):
    """fused_qkv: loss, every gradient and the suffix-only scoring path as the three separate GEMMs."""
    # fp32 embedding (the record's is bf16, whose gradient rounding would hide a small difference)
    base = randomized(tiny_cfg_32x4(fix_embed_fp32=True, **switches))
    fused = randomized(tiny_cfg_32x4(fix_embed_fp32=True, fused_qkv=True, **switches))
    assert fused.fused_kernels()["fused_qkv"] and not base.fused_kernels()["fused_qkv"]
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(int(looping)))
    losses, grads = [], []
    for model in (base, fused):
        model.set_looping(looping)
        loss = model(ids, ids)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) < 1e-5 and sorted(grads[0]) == sorted(grads[1])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(fused.nll_at(ids, ids, 8), base.nll_at(ids, ids, 8), atol=1e-5, rtol=1e-5)


def test_parallel_modes_differ_and_lanes_matter():
    ids = torch.randint(0, 96, (2, 12))
    outs = {}
    for mode in ("lanes", "single_stream", "none"):
        model = randomized(tiny_cfg_32x4(parallel_mode=mode))
        with torch.no_grad():
            outs[mode] = model.forward_logits(ids)
    assert not torch.allclose(outs["lanes"], outs["none"])
    assert not torch.allclose(outs["single_stream"], outs["none"])


@pytest.mark.parametrize("looping", [False, True])
def test_causality(looping):
    model = randomized(tiny_cfg_32x4())
    model.set_looping(looping)
    ids = torch.randint(0, 96, (1, 16))
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1) % 96
    with torch.no_grad():
        a, b = model.forward_logits(ids), model.forward_logits(changed)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_bank_round_trip_and_checkpoint_layouts(tmp_path):
    cfg = tiny_cfg_32x4()
    model = randomized(cfg)
    sd = model.state_dict()
    unbanked = unbank_state_dict(sd, cfg.num_layers)
    assert "blocks.3.attn.c_v.weight" in unbanked and "qo_bank" not in unbanked
    assert torch.equal(unbanked["blocks.1.attn.proj.weight"], sd["qo_bank"][cfg.num_layers + 1])
    assert torch.equal(unbanked["blocks.2.attn.c_v.weight"], sd["kv_bank"][cfg.num_layers + 2])
    rebanked = bank_state_dict(unbanked, cfg.num_layers)
    assert set(rebanked) == set(sd) and all(torch.equal(rebanked[k], sd[k]) for k in sd)

    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        want = model.forward_logits(ids)
    for layout in ("banked", "unbanked"):
        path = tmp_path / f"{layout}.pt"
        save_checkpoint(model, path, layout)
        fresh = build_model(cfg)
        load_checkpoint(fresh, path)
        with torch.no_grad():
            assert torch.equal(fresh.forward_logits(ids), want)


def test_load_errors_name_keys(tmp_path):
    cfg = tiny_cfg_32x4()
    model = build_model(cfg)
    sd = model.state_dict()
    sd.pop("lane_merge")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(GolfError, match=r"missing keys \['lane_merge'\].*unexpected keys \['extra.weight'\]"):
        load_checkpoint(model, path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GolfError, match="junk.pt"):
        load_checkpoint(model, tmp_path / "junk.pt")
    unb = unbank_state_dict(model.state_dict(), cfg.num_layers)
    unb.pop("blocks.0.mlp.fc.weight")
    with pytest.raises(GolfError, match="blocks.0.mlp.fc.weight"):
        bank_state_dict(unb, cfg.num_layers)


def test_demo_config_forward_backward():
    cfg = load_config("params/demo.yaml", ["device=cpu"])
    model = build_model(cfg)
    model.set_looping(True)
    ids, targets = torch.randint(0, cfg.vocab_size, (2, 2, cfg.train_seq_len))
    loss = model(ids, targets)
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.5  # near-uniform at init
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert count_params(model) > 0
