"""LQER (#1797): rank-r corrections of the largest GPTQ errors, packed INT2 × INT4, stored in the
artifact and added back by the loader; off (lqer_rank 0) the artifact is byte for byte the old one."""
from __future__ import annotations

import pytest
import torch

from golf.artifact import pack_bits, unpack_bits
from golf.config import ConfigError, load_config
from golf.banking import unbank_state_dict
from golf.model import build_model
from golf.artifact import deserialize, serialize
from golf.gptq import collect_hessians, gptq_quantize
from golf.lqer import LQER_SUFFIXES, dequantize_matrix, lqer_correct, lqer_dequantize, lqer_group, lqer_quantize
from golf.quant import load_artifact, quantize_model
from golf.quantized_state import dequantize_state_dict, quantize_state_dict
from golf.runtime import GolfError

TINY = dict(vocab_size=256, model_dim=64, num_layers=4, num_heads=4, num_kv_heads=2, train_seq_len=64,
            loop_start=1, loop_end=2, parallel_start_layer=2, xsa_last_n=4, mlp_mult=2.0,
            gptq_calibration_batches=2, quant_passthrough_numel=1024)
CODE = 1000  # code bytes charged in the artifact tests


# --- packing and the scale rules ---------------------------------------------------------------

@pytest.mark.parametrize("bits,lo,hi", [(2, -2, 1), (4, -8, 7)])
@pytest.mark.parametrize("n", [0, 1, 3, 5, 64, 129])
def test_pack_bits_round_trips_the_integers(bits, lo, hi, n):
    q = torch.randint(lo, hi + 1, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.int8)
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-n * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, n), q)


def test_pack_bits_layout_and_range():
    assert pack_bits(torch.tensor([-2, -1, 0, 1]), 2).tolist() == [0b11_10_01_00]  # first value lowest
    assert pack_bits(torch.tensor([-8, 7, 0]), 4).tolist() == [0xF0, 0x08]
    with pytest.raises(GolfError, match="do not fit 2 bits"):
        pack_bits(torch.tensor([2]), 2)
    with pytest.raises(GolfError, match="do not fit 4 bits"):
        pack_bits(torch.tensor([-9]), 4)


def test_lqer_quantize_follows_the_stated_rules():
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(10, 4, generator=g), torch.randn(4, 48, generator=g)  # B: 192 entries, 3 groups of 64
    assert lqer_group(4, 48) == 64 and lqer_group(4, 40) == 0  # 160 entries: #1855's symmetric fallback
    qA, sA, qB, sB = lqer_quantize(A, B, group=64)
    assert sA.dtype == sB.dtype == torch.float16 and sA.shape == (1,) and sB.shape == (3,)
    assert sA.item() == torch.tensor(A.abs().max().item() / 1.5).half().item()
    assert torch.equal(qA, torch.round(A / sA.float()).clamp(-2, 1).to(torch.int8))
    flat = B.reshape(-1)
    for k in range(3):
        part = flat[64 * k:64 * (k + 1)]
        assert sB[k].item() == torch.tensor(part.abs().max().item() / 7.5).half().item()
        assert torch.equal(qB.reshape(-1)[64 * k:64 * (k + 1)], torch.round(part / sB[k].float()).clamp(-8, 7).to(torch.int8))
    assert int(qA.min()) >= -2 and int(qA.max()) <= 1 and int(qB.min()) >= -8 and int(qB.max()) <= 7
    want = (qA.float() * sA.float()) @ (qB.reshape(-1).float() * sB.float().repeat_interleave(64)).reshape(4, 48)
    assert torch.equal(lqer_dequantize(qA, sA, qB, sB, 64), want)
    sym = lqer_quantize(A, B[:, :40], group=0)  # per row, [-7, 7], scale max|row|/7
    assert sym[1].shape == (10,) and sym[3].shape == (4,)
    assert torch.equal(sym[0], torch.round(A / (A.abs().amax(1) / 7).half().float()[:, None]).clamp(-7, 7).to(torch.int8))
    zero = lqer_quantize(torch.zeros(3, 2), torch.zeros(2, 32))  # no NaN from a zero scale
    assert all(int(t.abs().sum()) == 0 for t in zero) and not lqer_dequantize(*zero).isnan().any()


# --- the correction on golf's own GPTQ ----------------------------------------------------------

def gptq_matrix(seed, rows=48, cols=128):
    """A random W, GPTQ int6 (the record's clip) under the Hessian of random inputs: (W, q, scale)."""
    g = torch.Generator().manual_seed(seed)
    W, X = torch.randn(rows, cols, generator=g), torch.randn(4 * cols, cols, generator=g)
    q, s = gptq_quantize(W, X.T @ X / X.shape[0], bits=6, clip_sigmas=12.85)
    return W, q, s


def low_rank(rows, cols, norm, seed, rank=2):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)
    return L * (norm / L.norm())


def test_lqer_lowers_the_gptq_error():
    W, q, s = gptq_matrix(0)
    quantized, meta = {"w.q": q, "w.scale": s}, {"w": {"type": "int6", "bits": 6, "clip_sigmas": 12.85}}
    e0 = float((W - q.float() * s.float()[:, None]).norm())
    # plain GPTQ noise, then an error made mostly of rank 1: INT2 A still leaves much of it (0.54-0.68 of
    # the error stays, over seeds), so the margin asks for a quarter of it gone
    for extra, margin in ((0.0, 1.0), (3.0, 0.75)):
        sd = {"w": W + low_rank(*W.shape, extra * e0, seed=1, rank=1)}
        out, out_meta, rec = lqer_correct(sd, quantized, meta, rank=4, top_k=3)
        before = float((sd["w"] - dequantize_matrix(quantized, "w", meta["w"])).norm())
        after = float((sd["w"] - dequantize_matrix(out, "w", out_meta["w"])).norm())
        assert rec["w"]["err_before"] == pytest.approx(before) and rec["w"]["err_after"] == pytest.approx(after)
        assert after < margin * before, (extra, before, after)
        assert out_meta["w"] == {**meta["w"], "lqer_rank": 4, "lqer_group": 64}
        assert set(quantized) == {"w.q", "w.scale"} and "lqer_rank" not in meta["w"]  # the inputs stay as they were


def test_only_the_top_k_errors_get_corrections():
    quantized, meta, sd = {}, {}, {}
    for k, extra in enumerate((1.0, 4.0, 2.0, 3.0)):  # ‖E‖_F grows with extra
        W, q, s = gptq_matrix(k)
        e0 = float((W - q.float() * s.float()[:, None]).norm())
        name = f"m{k}"
        quantized[name + ".q"], quantized[name + ".scale"] = q, s
        meta[name] = {"type": "int6", "bits": 6, "clip_sigmas": 12.85}
        sd[name] = W + low_rank(*W.shape, extra * e0, seed=10 + k)
    quantized["g"], meta["g"], sd["g"] = torch.ones(3).half(), {"type": "passthrough"}, torch.ones(3)
    out, out_meta, rec = lqer_correct(sd, quantized, meta, rank=4, top_k=2)
    assert set(rec) == {"m1", "m3"} and rec["m1"]["err_before"] > rec["m3"]["err_before"]
    assert {n for n, m in out_meta.items() if m.get("lqer_rank")} == {"m1", "m3"}
    assert set(out) == set(quantized) | {n + s for n in ("m1", "m3") for s in LQER_SUFFIXES}



def test_a_correction_that_does_not_help_is_kept_as_the_record_keeps_it(monkeypatch, caplog):
    import golf.lqer as quant

    W, q, s = gptq_matrix(0)
    quantized, meta = {"w.q": q, "w.scale": s}, {"w": {"type": "int6", "bits": 6, "clip_sigmas": 12.85}}
    real = quant.lqer_quantize
    monkeypatch.setattr(quant, "lqer_quantize", lambda A, B, group: real(-3 * A, B, group))  # points the wrong way
    out, out_meta, rec = lqer_correct({"w": W}, quantized, meta, rank=4, top_k=1)
    assert rec["w"]["err_after"] > rec["w"]["err_before"] and out_meta["w"]["lqer_rank"] == 4
    assert "does not help" in caplog.text

# --- in the artifact ----------------------------------------------------------------------------

def random_batches(cfg, n, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.train_seq_len), generator=g)
        yield x, x.roll(-1, dims=1)


@pytest.fixture(scope="module")
def tiny():
    """A tiny model whose matrices all have content (the init zeroes W_o and W_down), and its Hessians."""
    cfg = load_config(None, TINY)
    model = build_model(cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bank in model.bank_params():
            bank.add_(0.05 * torch.randn(bank.shape, generator=g))
    return cfg, model, collect_hessians(model, random_batches(cfg, 2), 2, "cpu")


def quantize(tiny, **over):
    cfg, model, hessians = tiny
    return quantize_model(model, cfg.replace(**over), None, "cpu", CODE, hessians=hessians, threads=1,
                          progress=False)


def test_lqer_rank_0_artifact_is_byte_identical(tiny):
    cfg, model, hessians = tiny
    sd = unbank_state_dict(model.state_dict(), cfg.num_layers)
    before_lqer = serialize(*quantize_state_dict(sd, hessians, cfg), cfg.compressor, threads=1)  # the old path
    blob, report = quantize(tiny)
    assert cfg.lqer_rank == 0 and blob == before_lqer
    assert not any(k.startswith("lqer") for k in report)
    with pytest.raises(ConfigError, match="lqer_top_k"):  # a rank with no matrix to correct is a mistake, said
        quantize(tiny, lqer_rank=4, lqer_top_k=0)


def test_lqer_artifact_loads_the_corrected_weights(tiny):
    cfg, model, hessians = tiny
    blob, report = quantize(tiny, lqer_rank=4, lqer_top_k=3)
    assert report["fits"] and report["n_pruned"] == 0 and report["lqer_bytes"] > 0 and report["lqer_s"] >= 0
    corrected = report["lqer_tensors"]
    assert len(corrected) == 3 and all(r["err_after"] < r["err_before"] for r in corrected.values())
    # the same steps in memory: GPTQ, then the corrections, then the loader's dequantization
    sd = unbank_state_dict(model.state_dict(), cfg.num_layers)
    plain, plain_meta = quantize_state_dict(sd, hessians, cfg)
    quantized, meta, rec = lqer_correct(sd, plain, plain_meta, 4, 3)
    assert rec == corrected and deserialize(blob)[1] == meta
    want = dequantize_state_dict(quantized, meta, sd)
    fresh = build_model(cfg.replace(seed=7), "cpu")
    load_artifact(blob, fresh)
    got = unbank_state_dict(fresh.state_dict(), cfg.num_layers)
    assert all(torch.equal(got[k], want[k]) for k in want)
    uncorrected = dequantize_state_dict(plain, plain_meta, sd)
    assert {k for k in want if not torch.equal(want[k], uncorrected[k])} == set(corrected)
    df = report["tensors"].set_index("name")  # the report's errors are those of the loaded weights
    for name, r in corrected.items():
        assert df.loc[name, "rel_error"] == pytest.approx(r["err_after"] / float(sd[name].float().norm()))


def test_prune_to_fit_counts_the_corrections(tiny):
    blob, report = quantize(tiny, lqer_rank=4, lqer_top_k=3)
    limit = report["total"] - 200  # fits without the corrections' bytes only if pruning finds 200 bytes
    pruned_blob, pruned = quantize(tiny, lqer_rank=4, lqer_top_k=3, artifact_limit_bytes=limit)
    assert pruned["fits"] and len(pruned_blob) + CODE == pruned["total"] <= limit and pruned["n_pruned"] > 0
    quantized, meta = deserialize(pruned_blob)
    assert {n for n, m in meta.items() if m.get("lqer_rank")} == set(report["lqer_tensors"])
    assert all(n + s in quantized for n in report["lqer_tensors"] for s in LQER_SUFFIXES)


def test_prune_to_fit_off_leaves_the_artifact_as_made(tiny, caplog):
    """#1855 zeroes nothing to fit: over the limit, prune_to_fit=false keeps the artifact, says how far over."""
    blob, report = quantize(tiny, lqer_rank=4, lqer_top_k=3)
    limit = report["total"] - 200
    with caplog.at_level("WARNING", logger="golf"):
        same_blob, over = quantize(tiny, lqer_rank=4, lqer_top_k=3, artifact_limit_bytes=limit, prune_to_fit=False)
    assert same_blob == blob and over["n_pruned"] == 0 and not over["fits"] and over["total"] == report["total"]
    assert "200 bytes over the limit; prune_to_fit is off" in caplog.text

def test_golf_quantize_records_lqer_in_quant_budget(tmp_path, demo_data, capsys):
    import json

    from golf.cli import main as golf_main
    from conftest import tiny_params

    run = tmp_path / "run"
    params = tiny_params(tmp_path, demo_data, iterations=4, val_loss_every=0)
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert golf_main(["quantize", "--run-dir", str(run), "--set", "lqer_rank=4", "lqer_top_k=2"]) == 0
    table = capsys.readouterr().out  # per-tensor detail stays in the file, not in the console table
    assert "2 entries (quant_budget.json)" in table and "err_before" not in table
    budget = json.loads((run / "quant_budget.json").read_text())
    assert budget["lqer_rank"] == 4 and budget["lqer_bytes"] > 0 and len(budget["lqer_tensors"]) == 2
    assert budget["config_changes"] == {"lqer_rank": 4, "lqer_top_k": 2}
    log = (run / "quantize.log").read_text()
    assert all(f"LQER {name}: ‖E‖_F" in log for name in budget["lqer_tensors"])
    # each CLI step says how long its device took to start (on a GPU host, the CUDA driver's start-up)
    assert "device cpu (ready in " in log and "device cpu (ready in " in (run / "train.log").read_text()
