"""GPTQ, SDClip, storage, artifact format and prune-to-fit (spec §5, §9.9, §9.14, §9.15)."""
from __future__ import annotations

import struct
import zlib

import pytest
import torch

from gloo import run_gloo
from golf.config import load_config
from golf.banking import unbank_state_dict
from golf.model import build_model
from golf.artifact import ArtifactError, byte_shuffle, byte_unshuffle, deserialize, serialize
from golf.budget import artifact_budget, prune_to_fit
from golf.gptq import collect_hessians, gptq_quantize, rtn_quantize, sdclip_scales
from golf.quant import load_artifact, quantize_model
from golf.quantized_state import dequantize_state_dict, quantize_state_dict
from golf.runtime import GolfError

TINY = dict(vocab_size=256, model_dim=64, num_layers=4, num_heads=4, num_kv_heads=2, train_seq_len=64,
            loop_start=1, loop_end=2, parallel_start_layer=2, xsa_last_n=4, mlp_mult=2.0,
            gptq_calibration_batches=2, quant_passthrough_numel=1024)


def tiny_cfg_64x4(**over):
    """256 tokens, width 64, 4 layers."""
    return load_config(None, {**TINY, **over})


def random_batches(cfg, n, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.train_seq_len), generator=g)
        yield x, x.roll(-1, dims=1)


def trained_like(cfg, seed=0):
    """The init zeroes W_o and W_down; perturb every bank so that each matrix has content."""
    model = build_model(cfg, "cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bank in model.bank_params():
            bank.add_(0.05 * torch.randn(bank.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_cfg_64x4()
    model = trained_like(cfg)
    hessians = collect_hessians(model, random_batches(cfg, 2), 2, "cpu")
    return cfg, model, hessians


@pytest.fixture(scope="module")
def artifact(tiny):
    cfg, model, _ = tiny
    blob, report = quantize_model(model, cfg, random_batches(cfg, 2), "cpu", code_bytes=1000)
    return blob, report


# --- scales and rounding ---------------------------------------------------------------------

@pytest.mark.parametrize("bits,k", [(6, 12.85), (6, 2.0), (8, 20.0), (8, 3.0)])
def test_rtn_range_and_half_step_bound(bits, k):
    R = 2 ** (bits - 1) - 1
    W = torch.randn(32, 96, generator=torch.Generator().manual_seed(1))
    q, s = rtn_quantize(W, bits, k)
    assert q.dtype == torch.int8 and s.dtype == torch.float16 and s.shape == (32,)
    assert int(q.abs().max()) <= R
    sf = s.float()[:, None]
    unclipped = (W / sf).abs() <= R
    err = (W - q.float() * sf).abs()
    assert torch.all(err[unclipped] <= sf.expand_as(W)[unclipped] / 2 * (1 + 1e-6))
    if k < 4:  # a tight clip leaves some entries clipped at ±R
        assert (~unclipped).any() and torch.all(q[~unclipped].abs() == R)


def test_sdclip_scale_is_unbiased_std_rounded_to_fp16():
    W = torch.randn(8, 50)
    s = sdclip_scales(W, 6, 12.85)
    assert torch.equal(s, (12.85 * W.std(dim=1, unbiased=True) / 31).half())
    assert torch.all(sdclip_scales(torch.zeros(2, 5), 6, 12.85) == 0)  # fp16(1e-10) underflows to 0


def test_gptq_range_dead_columns_and_zero_rows():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(16, 40, generator=g)
    W[3] = 0.0
    X = torch.randn(200, 40, generator=g)
    X[:, 7] = 0.0  # a dead input column
    for bits in (6, 8):
        q, s = gptq_quantize(W, X.T @ X, bits, 12.85 if bits == 6 else 20.0, block_size=16)
        R = 2 ** (bits - 1) - 1
        assert q.dtype == torch.int8 and int(q.abs().max()) <= R and s.dtype == torch.float16
        assert torch.all(q[:, 7] == 0) and torch.all(q[3] == 0)


def test_gptq_beats_rtn_on_every_matrix(tiny):
    """The GPTQ objective: tr(E H Eᵀ) with E = W − Ŵ is smaller than round-to-nearest's."""
    cfg, model, hessians = tiny
    sd = unbank_state_dict(model.state_dict(), cfg.num_layers)
    checked = 0
    for name, H in hessians.items():
        W = sd[name].float()
        bits, k = (8, cfg.embed_clip_sigmas) if name == "tok_emb.weight" else (6, cfg.matrix_clip_sigmas)
        errs = []
        for q, s in (gptq_quantize(W, H, bits, k), rtn_quantize(W, bits, k)):
            E = W - q.float() * s.float()[:, None]
            errs.append(float(torch.einsum("ri,ij,rj->", E, H, E)))
        assert errs[0] < errs[1], f"{name}: GPTQ {errs[0]:.4g} >= RTN {errs[1]:.4g}"
        checked += 1
    assert checked == 6 * cfg.num_layers + 1


# --- Hessians -------------------------------------------------------------------------------

def test_collect_hessians_shapes_sharing_and_restore(tiny):
    cfg, model, hessians = tiny
    assert model.capture is None and model.looping is False and model.training
    D, Hm = cfg.model_dim, cfg.mlp_hidden
    for i in range(cfg.num_layers):
        hq = hessians[f"blocks.{i}.attn.c_q.weight"]
        assert hq is hessians[f"blocks.{i}.attn.c_k.weight"] is hessians[f"blocks.{i}.attn.c_v.weight"]
        assert hq.shape == (D, D) and hq.dtype == torch.float32
        assert hessians[f"blocks.{i}.attn.proj.weight"].shape == (D, D)
        assert hessians[f"blocks.{i}.mlp.fc.weight"].shape == (D, D)
        assert hessians[f"blocks.{i}.mlp.proj.weight"].shape == (Hm, Hm)
        assert torch.allclose(hq, hq.T)
    assert hessians["tok_emb.weight"].shape == (D, D)
    # mlp.fc's input is rms_norm(x)/sqrt(i+1): each token adds D/(i+1) to the trace, once per pass;
    # looped layers 1..2 run num_loops+1 = 3 passes (spec §5.2), others one; H is per batch of 4x64
    for i, passes in enumerate((1, 3, 3, 1)):
        tr = float(hessians[f"blocks.{i}.mlp.fc.weight"].trace())
        assert tr == pytest.approx(passes * 4 * cfg.train_seq_len * D / (i + 1), rel=1e-4)


def test_hessian_is_mean_of_per_batch_xtx():
    cfg = tiny_cfg_64x4(num_layers=2, loop_start=0, loop_end=0, parallel_start_layer=1, num_loops=0)
    model = trained_like(cfg)
    batches = list(random_batches(cfg, 2, batch=2))
    h2 = collect_hessians(model, iter(batches), 2, "cpu")
    h_a = collect_hessians(model, iter(batches[:1]), 1, "cpu")
    h_b = collect_hessians(model, iter(batches[1:]), 1, "cpu")
    for name in h2:
        want = (h_a[name] + h_b[name]) / 2
        assert float((h2[name] - want).norm() / want.norm()) < 1e-5, name


def test_record_layout_has_67_hessians():
    cfg = load_config(None, {"vocab_size": 64, "model_dim": 32, "num_heads": 2, "num_kv_heads": 1,
                             "rope_dims": 8, "mlp_mult": 1.0, "train_seq_len": 16})
    assert cfg.num_layers == 11
    model = build_model(cfg, "cpu")
    hessians = collect_hessians(model, iter([torch.zeros(1, 8, dtype=torch.long) + 3]), 1, "cpu")
    expected = set(unbank_state_dict(model.state_dict(), 11))
    expected = {k for k in expected if k.endswith(("c_q.weight", "c_k.weight", "c_v.weight", "proj.weight",
                                                    "fc.weight")) or k == "tok_emb.weight"}
    assert len(hessians) == 67 and set(hessians) == expected


def _rank_hessians(rank):
    cfg = tiny_cfg_64x4()
    model = trained_like(cfg)
    return {flag: collect_hessians(model, random_batches(cfg, 2, seed=rank), 2, "cpu", all_reduce=flag)
            for flag in (False, True)}


def test_hessians_per_rank_or_averaged_spec_9_9():
    """The record quantizes with each rank's own Hessians (§9.9); all_reduce=True averages them."""
    got = run_gloo(_rank_hessians, 2)
    cfg = tiny_cfg_64x4()
    local = [collect_hessians(trained_like(cfg), random_batches(cfg, 2, seed=r), 2, "cpu") for r in range(2)]
    def close(a, b):  # the workers run 1 thread, this process several: fp32 sums differ in order
        return float((a - b).norm() / b.norm()) < 1e-5

    for name in local[0]:
        for r in range(2):
            assert close(got[r][False][name], local[r][name]), name
            assert close(got[r][True][name], (local[0][name] + local[1][name]) / 2), name
        assert not torch.allclose(local[0][name], local[1][name])


# --- byte shuffle and artifact format ------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 1001])
@pytest.mark.parametrize("stride", [2, 3])
def test_byte_shuffle_inverts(n, stride):
    data = bytes((i * 37 + 11) % 256 for i in range(n))
    shuffled = byte_shuffle(data, stride)
    assert shuffled[:4] == b"BSHF" and shuffled[4] == stride and len(shuffled) == n + 5
    assert byte_unshuffle(shuffled) == data


def test_byte_shuffle_lanes():
    assert byte_shuffle(b"abcde") == b"BSHF\x02" + b"ace" + b"bd"


def test_serialize_roundtrip_bit_identical(tiny):
    cfg, model, hessians = tiny
    sd = unbank_state_dict(model.state_dict(), cfg.num_layers)
    quantized, meta = quantize_state_dict(sd, hessians, cfg)
    for compressor in ("brotli", "lzma"):
        q2, m2 = deserialize(serialize(quantized, meta, compressor))
        assert m2 == meta and set(q2) == set(quantized)
        assert all(torch.equal(q2[k], v) and q2[k].dtype == v.dtype for k, v in quantized.items())
    deq = dequantize_state_dict(quantized, meta, sd)
    assert deq["tok_emb.weight"].dtype == sd["tok_emb.weight"].dtype == torch.bfloat16
    assert deq["blocks.0.attn.c_q.weight"].dtype == torch.float32
    n_int6 = sum(m["type"] == "int6" for m in meta.values())
    assert n_int6 == 6 * cfg.num_layers and meta["tok_emb.weight"]["type"] == "int8"
    assert quantized["blocks.0.attn_scale"].dtype == torch.float16


def test_quantize_model_report_and_logits_from_artifact(tiny, artifact):
    cfg, model, _ = tiny
    blob, report = artifact
    df = report["tensors"]
    assert len(df) == 6 * cfg.num_layers + 1 and report["n_hessians"] == 6 * cfg.num_layers + 1
    assert (df.rel_error < 0.2).all() and (df.q_bytes > 0).all() and df.q_bytes.sum() < len(blob)
    assert report["total"] == len(blob) + 1000 and report["fits"] and report["n_pruned"] == 0
    assert {"hessian_s", "gptq_s", "compress_s", "prune_s", "verify_s"} <= set(report) and report["prune_s"] == 0
    # the artifact's model and the in-memory dequantized model give the same logits
    quantized, meta = deserialize(blob)
    fresh = build_model(cfg.replace(seed=7), "cpu")
    load_artifact(blob, fresh)
    ref = build_model(cfg.replace(seed=8), "cpu")
    template = unbank_state_dict(ref.state_dict(), cfg.num_layers)
    from golf.banking import bank_state_dict
    ref.load_state_dict(bank_state_dict(dequantize_state_dict(quantized, meta, template), cfg.num_layers))
    ids = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b, orig = fresh.forward_logits(ids), ref.forward_logits(ids), model.forward_logits(ids)
    assert torch.equal(a, b)
    assert not torch.equal(a, orig) and (a - orig).abs().max() < 0.5


def test_load_artifact_from_path(tmp_path, tiny, artifact):
    cfg, _, _ = tiny
    path = tmp_path / "final_model.int6.ptz"
    path.write_bytes(artifact[0])
    load_artifact(path, build_model(cfg, "cpu"))
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope.ptz", build_model(cfg, "cpu"))


def test_corruptions_raise_clear_errors(tiny, artifact):
    """The format's own tests are in test_artifact.py; here, the artifact quantize_model makes."""
    blob = artifact[0]
    assert blob[4] == 2
    with pytest.raises(ArtifactError, match="truncated: header declares"):
        deserialize(blob[:-10])
    with pytest.raises(ArtifactError, match="truncated: 5 bytes"):
        deserialize(blob[:5])
    with pytest.raises(ArtifactError, match="wrong magic"):
        deserialize(b"XXXX" + blob[4:])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match=r"corrupt: piece \d+ of \d+ \(.+\) fails its crc32 check"):
        deserialize(bytes(flipped))
    garbage = b"\x00not brotli at all\xff" * 3  # a valid format-1 header around an invalid stream
    header = struct.pack("<4sBBQI", b"GOLF", 1, 1, len(garbage), zlib.crc32(garbage))
    with pytest.raises(ArtifactError, match="corrupt: the brotli stream"):
        deserialize(header + garbage)
    assert issubclass(ArtifactError, GolfError)


def test_key_and_shape_mismatch(tiny, artifact):
    cfg, _, _ = tiny
    quantized, meta = deserialize(artifact[0])
    q2 = {k: v for k, v in quantized.items() if not k.startswith("blocks.1.attn_scale")}
    m2 = {k: v for k, v in meta.items() if k != "blocks.1.attn_scale"}
    q2["extra.weight"], m2["extra.weight"] = torch.zeros(3, dtype=torch.float16), {"type": "passthrough"}
    with pytest.raises(ArtifactError, match=r"missing keys \['blocks.1.attn_scale'\].*unexpected keys \['extra.weight'\]"):
        load_artifact(serialize(q2, m2), build_model(cfg, "cpu"))
    with pytest.raises(ArtifactError, match="missing keys"):  # the artifact lacks blocks.4.*
        load_artifact(artifact[0], build_model(cfg.replace(num_layers=5), "cpu"))
    with pytest.raises(ArtifactError, match="shape"):
        load_artifact(artifact[0], build_model(cfg.replace(mlp_mult=3.0), "cpu"))


# --- budget and prune-to-fit ---------------------------------------------------------------

def test_artifact_budget():
    b = artifact_budget(15_980_000, 19_760)
    assert b == {"model_bytes": 15_980_000, "code_bytes": 19_760, "total": 15_999_760,
                 "limit": 16_000_000, "headroom": 240, "fits": True}
    assert not artifact_budget(15_990_000, 19_760)["fits"]


def _prunable(rows=32, cols=64, sigma=2.0, names=("a.weight", "b.weight")):
    g = torch.Generator().manual_seed(5)
    quantized, meta = {}, {}
    for name in names:
        quantized[name + ".q"] = (torch.randn(rows, cols, generator=g) * sigma).round().clamp(-31, 31).to(torch.int8)
        quantized[name + ".scale"] = torch.linspace(1.0, 0.01, rows).half()  # smallest scales in the last rows
        meta[name] = {"type": "int6", "bits": 6, "clip_sigmas": 12.85}
    quantized["c"], meta["c"] = torch.ones(4, dtype=torch.float16), {"type": "passthrough"}
    return quantized, meta


@pytest.fixture
def count_compressions(monkeypatch):
    """How many times prune_to_fit serializes the artifact (each a full compression in the record)."""
    import golf.budget as gq

    calls = []

    def counted(*args, **kw):
        calls.append(1)
        return serialize(*args, **kw)

    monkeypatch.setattr(gq, "serialize", counted)
    return calls


@pytest.mark.parametrize("fix", [False, True])
def test_prune_to_fit_fits_and_spec_9_14(fix, count_compressions):
    quantized, meta = _prunable()
    blob0 = serialize(quantized, meta)
    limit = len(blob0) - 60
    pruned, n, blob = prune_to_fit(quantized, meta, code_bytes=0, limit=limit, fix=fix, blob=blob0)
    assert 0 < n and len(blob) <= limit and len(blob) == len(serialize(pruned, meta))
    assert len(count_compressions) <= 2 + 1  # + the check just above
    zeroed_total = 0
    for name in ("a.weight", "b.weight"):
        before, after = quantized[name + ".q"], pruned[name + ".q"]
        changed = (before != after).reshape(-1).nonzero().squeeze(1)
        zeroed_total += changed.numel()
        assert torch.all(before.reshape(-1)[changed].abs() == 1) and torch.all(after.reshape(-1)[changed] == 0)
        ones = (before.reshape(-1).abs() == 1).nonzero().squeeze(1)
        if fix:  # the candidates' own entries: rows with the smallest scales (the last rows)
            assert changed.numel() == 0 or int(changed.min()) // 64 >= 16
        else:  # the record's bug: the first ±1 entries of the tensor in flat order (the first rows)
            assert torch.equal(changed, ones[:changed.numel()])
    assert zeroed_total == n
    assert torch.equal(pruned["c"], quantized["c"])


@pytest.mark.parametrize("compressor", ["brotli", "rans", "best"])
@pytest.mark.parametrize("over", [300, 3000, 6000])
@pytest.mark.parametrize("fix", [False, True])
def test_prune_to_fit_compresses_at_most_twice(fix, over, compressor, count_compressions):
    """Predicted from each tensor's compressed bytes: one compression, a top-up at most (issue 14)."""
    quantized, meta = _prunable(rows=128, cols=256, sigma=2.4, names=("a.weight", "b.weight", "c.weight"))
    blob0 = serialize(quantized, meta, compressor)
    code = 1234
    limit = len(blob0) + code - over
    pruned, n, blob = prune_to_fit(quantized, meta, code, limit, compressor, fix=fix, blob=blob0)
    assert len(blob) + code <= limit and 0 < n
    assert len(count_compressions) <= 2, f"{len(count_compressions)} compressions"
    ones = sum(int((quantized[k].abs() == 1).sum()) for k in quantized if k.endswith(".q"))
    assert n < ones  # it did not just zero everything
    assert_rows_equal = [torch.equal(deserialize(blob)[0][k], v) for k, v in pruned.items()]
    assert all(assert_rows_equal)


def test_prune_to_fit_noop_when_it_fits(count_compressions):
    quantized, meta = _prunable()
    pruned, n, blob = prune_to_fit(quantized, meta, code_bytes=0, limit=10**9)
    assert n == 0 and all(torch.equal(pruned[k], v) for k, v in quantized.items())
    assert len(count_compressions) == 1  # the check that it fits


def test_prune_to_fit_when_the_candidates_run_out(count_compressions):
    quantized, meta = _prunable()
    pruned, n, blob = prune_to_fit(quantized, meta, code_bytes=0, limit=100)
    assert len(blob) > 100 and n == sum(int((quantized[k].abs() == 1).sum()) for k in ("a.weight.q", "b.weight.q"))
    assert all(int((pruned[k].abs() == 1).sum()) == 0 for k in ("a.weight.q", "b.weight.q"))
    assert len(count_compressions) == 2  # the unpruned one, then everything pruned at once


# --- golf quantize from the command line ---------------------------------------------------

def test_golf_quantize_shows_every_stage_and_prunes_with_two_compressions_at_most(tmp_path, demo_data, capsys,
                                                                                  monkeypatch):
    """Each stage logs its start and seconds and shows a bar; the seconds land in quant_budget.json. The code's
    count is held at 20,000 bytes here (tests/test_submission.py tests the count itself)."""
    import json
    import re

    import golf.submission
    from golf.cli import main as golf_main
    from conftest import tiny_params

    monkeypatch.setattr(golf.submission, "budget_code_bytes",
                        lambda cfg, modes=None: lambda model_bytes, limit: (20_000, True))

    params = tiny_params(tmp_path, demo_data, iterations=4, val_loss_every=0)
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert golf_main(["quantize", "--run-dir", str(run)]) == 0
    err = capsys.readouterr().err
    lines = ["Hessians: 2 calibration batches", "Hessians: done in", "GPTQ: 25 matrices (24 int6, 1 int8)",
             "GPTQ: done in", "compress: ", "compress: done in", "verify: ", "verify: done in"]
    log = (run / "quantize.log").read_text()
    for line in lines:
        assert line in err and line in log, line
    for bar in ("Hessians", "GPTQ", "compress", "decompress"):  # tqdm's bars, on stderr only
        assert re.search(bar + r": +\d+%\|", err) and not re.search(bar + r": +\d+%\|", log), bar
    budget = json.loads((run / "quant_budget.json").read_text())
    stages = ("hessian_s", "gptq_s", "compress_s", "prune_s", "verify_s", "quantize_s")
    assert all(budget[k] >= 0 for k in stages) and budget["prune_s"] == 0 and budget["n_pruned"] == 0

    limit = budget["total"] - 300  # over by 300 bytes: prune-to-fit
    assert golf_main(["quantize", "--run-dir", str(run), "--force", "--set", f"artifact_limit_bytes={limit}"]) == 0
    err = capsys.readouterr().err
    budget = json.loads((run / "quant_budget.json").read_text())
    assert "prune: 300 bytes over" in err
    assert 1 <= len(re.findall(r"prune round \d+: \d+ bytes \(saved \d+\)", err)) <= 2
    assert budget["fits"] and budget["total"] <= limit and budget["n_pruned"] > 0 and budget["prune_s"] > 0


@pytest.mark.parametrize("compressor,cid", [("rans", 3), ("best", 4)])
def test_other_compressors_hold_the_same_integers(tiny, artifact, compressor, cid):
    """compressor: rans or best changes the bytes, not what they hold."""
    cfg, model, hessians = tiny
    blob, report = quantize_model(model, cfg.replace(compressor=compressor), None, "cpu", code_bytes=1000,
                                  hessians=hessians)
    assert blob[5] == cid and report["compressor"] == compressor and report["hessian_s"] == 0
    got, want = deserialize(blob), deserialize(artifact[0])
    assert got[1] == want[1] and all(torch.equal(got[0][k], v) for k, v in want[0].items())
