"""Evaluation modes (spec §6): window geometry, each target scored once, and score-first TTT legality
(Issue #1017 C1, C3, C4) checked through ``TTTRecord`` rather than trusted (docs/record.md §10.1)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golf.evaluate import eval_plain, eval_sliding, eval_ttt
from golf.scoring import TTTRecord, count_windows, sliding_windows, ttt_chunks, window_chunk
from golf.compile_policy import compiled_nll, compiled_ttt_loss
from golf.attention import math_attention
from golf.blocks import suffix_attention
from golf.model import softcap_nll
from golf.compile_policy import fixed_batch
from conftest import T_TINY, tiny_cfg_32x3, tiny_luts, tiny_model, tiny_tokens

# --- geometry --------------------------------------------------------------------------------

def test_full_scale_window_and_chunk_counts():
    T, L, S, C = 40_540_160, 2048, 64, 32_768
    assert count_windows(T, L, S) == 633_409
    starts, offs = sliding_windows(T, L, S)
    assert len(starts) == 633_409 and offs[0] == 0 and (offs[1:] == L - S).all()
    ends = np.minimum(starts + L, T)
    scored_from = starts + offs
    assert scored_from[0] == 0 and ends[-1] == T and (scored_from[1:] == ends[:-1]).all()  # an exact tiling
    n_chunks = ttt_chunks(T, C)
    assert n_chunks == 1238 and T - (n_chunks - 1) * C == 6_144
    wc = window_chunk(starts, offs, C, n_chunks)
    assert wc[-1] == 1237 and (np.diff(wc) >= 0).all() and np.bincount(wc).max() == 512


def _record_windows(T, L, S):
    """The record's rule, enumerated: ws = 0, S, ... kept while ws + (L - S) < T (plus ws = 0 if none)."""
    kept = [ws for ws in range(0, T, S) if ws + (L - S) < T]
    return kept or ([0] if T > 0 else [])


@pytest.mark.parametrize("L,S", [(8, 1), (8, 3), (8, 8), (32, 8), (32, 5), (32, 32)])
def test_small_windows_match_enumeration_and_tile_every_target_once(L, S):
    for T in range(1, 150):
        starts, offs = sliding_windows(T, L, S)
        assert starts.tolist() == _record_windows(T, L, S) and count_windows(T, L, S) == len(starts)
        counts = np.zeros(T, int)
        for ws, s in zip(starts, offs):
            counts[ws + s: min(ws + L, T)] += 1
        assert (counts == 1).all(), (T, L, S)


def test_ttt_chunk_helpers():
    assert ttt_chunks(224, 64) == 4 and ttt_chunks(256, 64) == 4 and ttt_chunks(257, 64) == 5
    assert window_chunk(0, 0, 64, 4) == 0 and window_chunk(200, 24, 64, 4) == 3


# --- plain and sliding -----------------------------------------------------------------------

def test_sliding_scores_every_target_once_and_stride_L_equals_plain():
    cfg = tiny_cfg_32x3()
    model, luts, tokens = tiny_model(cfg), tiny_luts(), tiny_tokens()
    rec = TTTRecord(T_TINY)
    res = eval_sliding(model, tokens, luts, cfg, record=rec, progress=False)
    rec.check()
    assert res["n_tokens"] == T_TINY and res["n_windows"] == count_windows(T_TINY, 32, 8)
    assert np.isclose(np.nansum(rec.nll) / T_TINY, res["val_loss"])

    plain = eval_plain(model, tokens, luts, cfg, progress=False)
    wide = eval_sliding(model, tokens, luts, tiny_cfg_32x3(eval_stride=32), progress=False)
    assert plain["n_tokens"] == wide["n_tokens"] == T_TINY and plain["n_bytes"] == wide["n_bytes"]
    assert plain["val_loss"] == pytest.approx(wide["val_loss"], rel=1e-6)
    assert plain["val_bpb"] == pytest.approx(wide["val_bpb"], rel=1e-6)
    for key in ("val_loss", "val_bpb", "n_tokens", "n_bytes", "seconds"):
        assert key in plain and key in res


def test_sliding_short_tail_windows_score_correctly():
    """T not a multiple of the stride or batch: padded short windows give the NLL an unpadded pass gives."""
    cfg = tiny_cfg_32x3(eval_batch_seqs=3)
    T = 221
    model, tokens = tiny_model(cfg), tiny_tokens(T)
    rec = TTTRecord(T)
    eval_sliding(model, tokens, tiny_luts(), cfg, record=rec, progress=False)
    rec.check()
    ws = sliding_windows(T, 32, 8)[0][-1]  # the last window, shorter than 32
    with torch.no_grad():
        nll = model(tokens[None, ws:T], tokens[None, ws + 1:T + 1], reduction="none")[0]
    np.testing.assert_allclose(rec.nll[ws + 24:T], nll[24:].double().numpy(), rtol=1e-5, atol=1e-6)


# --- score-first TTT -------------------------------------------------------------------------

def run_ttt(cfg, tokens, seed=0, **kw):
    model = tiny_model(cfg, seed)
    rec = TTTRecord(tokens.numel() - 1)
    res = eval_ttt(model, tokens, tiny_luts(), cfg, record=rec, progress=False, **kw)
    return res, rec, model


def test_ttt_record_is_legal_and_complete():
    cfg = tiny_cfg_32x3()
    res, rec, _ = run_ttt(cfg, tiny_tokens())
    rec.check()
    assert res["n_tokens"] == T_TINY and res["n_chunks"] == 4 and res["last_chunk_tokens"] == 32
    assert res["ttt_steps"] == 3 * cfg.ttt_epochs  # one step per epoch for each chunk but the last
    assert (rec.trained_in_chunk[:192] == np.arange(192) // 64).all()  # chunks 0-2 train on all their targets
    assert (rec.trained_in_chunk[192:] == -1).all()  # the last chunk is score-only
    assert (rec.trained_through_chunk == rec.scored_at_chunk - 1).all()


def test_train_before_score_is_caught():
    with pytest.raises(AssertionError, match="C3"):
        run_ttt(tiny_cfg_32x3(), tiny_tokens(), _train_before_score=True)[1].check()


def test_check_catches_double_scoring_and_grad_scoring():
    rec = TTTRecord(4)
    with torch.no_grad():
        rec.note_scored(np.arange(4), np.zeros(4), 0, -1)
        rec.check()
        rec.note_scored(np.array([2]), np.zeros(1), 0, -1)
    with pytest.raises(AssertionError, match="C4: target position 2"):
        rec.check()
    rec = TTTRecord(2)
    rec.note_scored(np.arange(2), np.zeros(2), 0, -1)  # autograd on (the default)
    with pytest.raises(AssertionError, match="autograd"):
        rec.check()


def test_ttt_first_chunk_matches_sliding_then_adapts():
    cfg = tiny_cfg_32x3()
    tokens = tiny_tokens()
    _, rec, _ = run_ttt(cfg, tokens)
    slide = TTTRecord(T_TINY)
    eval_sliding(tiny_model(cfg), tokens, tiny_luts(), cfg, record=slide, progress=False)
    np.testing.assert_array_equal(rec.nll[:64], slide.nll[:64])  # chunk 0: the untouched weights
    assert not np.allclose(rec.nll[64:], slide.nll[64:])  # later chunks: the adapted weights


def test_ttt_is_causal_across_chunks():
    """C1: changing the tokens of chunk k leaves every score before chunk k bit-identical."""
    cfg, k = tiny_cfg_32x3(), 2
    a = tiny_tokens()
    b = a.clone()
    b[k * 64 + 1:] = (b[k * 64 + 1:] + 7) % 64  # targets k*64 .. T-1 all change
    _, ra, _ = run_ttt(cfg, a)
    _, rb, _ = run_ttt(cfg, b)
    np.testing.assert_array_equal(ra.nll[:k * 64], rb.nll[:k * 64])
    assert not np.allclose(ra.nll[k * 64:], rb.nll[k * 64:])


def test_ttt_freeze_blocks_masks_bank_slices_and_restores_requires_grad():
    cfg = tiny_cfg_32x3(ttt_freeze_blocks=1)
    before = tiny_model(cfg)
    res, rec, after = run_ttt(cfg, tiny_tokens())
    rec.check()
    L = cfg.num_layers
    for name in ("qo_bank", "kv_bank"):
        b, a = getattr(before, name), getattr(after, name)
        assert torch.equal(b[[0, L]], a[[0, L]]) and not torch.equal(b[[1, 2]], a[[1, 2]])
    for name in ("mlp_up_bank", "mlp_down_bank"):
        b, a = getattr(before, name), getattr(after, name)
        assert torch.equal(b[0], a[0]) and not torch.equal(b[1:], a[1:])
    for (n, pb), pa in zip(before.blocks[0].named_parameters(), after.blocks[0].parameters()):
        assert torch.equal(pb, pa), n
    assert not torch.equal(before.blocks[1].attn_scale, after.blocks[1].attn_scale)
    assert all(p.requires_grad for p in after.parameters())


def test_ttt_momentum_reset_flag_changes_the_updates():
    """Chunk 0 starts from zero momentum either way, so chunks 0-1 score the same; from chunk 1's steps
    on, the updates (and so the weights and the later scores) differ."""
    tokens = tiny_tokens()
    r0, rec0, m0 = run_ttt(tiny_cfg_32x3(), tokens)
    r1, rec1, m1 = run_ttt(tiny_cfg_32x3(fix_ttt_reset_momentum=True), tokens)
    assert r0["n_tokens"] == r1["n_tokens"] and r0["ttt_steps"] == r1["ttt_steps"]
    assert np.array_equal(rec0.nll[:128], rec1.nll[:128])  # scored before and after chunk 0's steps
    assert not np.array_equal(rec0.nll[128:192], rec1.nll[128:192])  # after chunk 1's steps
    for name, p0 in m0.named_parameters():
        assert not torch.equal(p0, m1.get_parameter(name)), name


def test_ttt_trains_the_model_it_is_given():
    """eval_ttt trains the model it is given: the caller must pass a copy (the record deserializes one)."""
    cfg = tiny_cfg_32x3()
    model = tiny_model(cfg)
    ref = copy.deepcopy(model.state_dict())
    eval_ttt(model, tiny_tokens(), tiny_luts(), cfg, progress=False)
    for name, p in model.named_parameters():  # ttt_freeze_blocks 0: every parameter trains, in place
        assert not torch.equal(ref[name], p.detach()), name


# --- the scored-positions path against the full-logits path (issue 14) ------------------------

def test_softcap_nll_equals_cross_entropy_of_softcapped_logits():
    g = torch.Generator().manual_seed(3)
    h, w = torch.randn(3, 37, 16, generator=g), 0.5 * torch.randn(50, 16, generator=g)
    y = torch.randint(0, 50, (3, 37), generator=g)
    logits = F.linear(h, w)
    z = 30.0 * torch.tanh(logits / 30.0)
    want = F.cross_entropy(z.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
    for rows in (8192, 7, 1):  # one chunk, uneven chunks, one row at a time
        torch.testing.assert_close(softcap_nll(h, w, y, 30.0, chunk_rows=rows), want, rtol=1e-5, atol=1e-5)


def test_suffix_attention_is_the_last_rows_of_causal_attention():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 12, h, 8, generator=g) for h in (4, 2, 2))
    full = math_attention(q, k, v)
    for s in (0, 5, 11):
        torch.testing.assert_close(suffix_attention(q[:, s:], k, v), full[:, s:], rtol=1e-5, atol=1e-6)


DEEP = dict(num_layers=4, loop_start=1, loop_end=2, num_loops=2, parallel_start_layer=2, xsa_last_n=4)


@pytest.mark.parametrize("mode", ["lanes", "lanes_mix", "single_stream", "none"])
@pytest.mark.parametrize("looping", [False, True])
@pytest.mark.parametrize("geometry", ["tiny", "deep"])
def test_nll_at_equals_forward_on_the_scored_slice(mode, looping, geometry):
    """``start`` skips only work that the positions start.. do not depend on: their NLL is unchanged.
    "deep": lanes split three decoder layers before the last, with a looped layer inside them."""
    cfg = tiny_cfg_32x3(parallel_mode=mode, **(DEEP if geometry == "deep" else {}))
    model = tiny_model(cfg)
    model.set_looping(looping)
    ids, y = tiny_tokens(3 * 32 - 1).view(3, 32), tiny_tokens(3 * 32 - 1, seed=2).view(3, 32)
    with torch.no_grad():
        full = model(ids, y, reduction="none")
        for start in (0, 24, 31):
            torch.testing.assert_close(model.nll_at(ids, y, start), full[:, start:], rtol=1e-5, atol=1e-5)


def test_fixed_batch_pads_every_tensor_argument():
    cfg = tiny_cfg_32x3()
    model = tiny_model(cfg)
    ids, y = tiny_tokens(3 * 32 - 1).view(3, 32), tiny_tokens(3 * 32 - 1, seed=2).view(3, 32)
    shapes = []

    def nll(a, b, start):
        shapes.append((tuple(a.shape), tuple(b.shape), start))
        return model.nll_at(a, b, start)

    with torch.no_grad():
        got = fixed_batch(nll, 5)(ids, y, 24)
        torch.testing.assert_close(got, model.nll_at(ids, y, 24), rtol=1e-6, atol=1e-6)
    assert shapes == [((5, 32), (5, 32), 24)]


def _old_and_new(fn, cfg, tokens):
    """(result, record) of the full-logits path and of the scored-positions path on identical models."""
    out = []
    for old in (True, False):
        model = tiny_model(cfg)
        rec = TTTRecord(tokens.numel() - 1)
        kw = {"forward_logits": model.forward_logits} if old else {}
        out.append((fn(model, tokens, tiny_luts(), cfg, record=rec, progress=False, **kw), rec))
    return out


NEW_VS_OLD = {  # name -> (config overrides, targets)
    "even": ({}, T_TINY),
    "short_last_window": (dict(eval_batch_seqs=3), 221),  # T not a multiple of stride or batch
    "stride_equals_L": (dict(eval_stride=32), T_TINY),  # every window scores from 0: one path
    "shorter_than_context": ({}, 20),  # one window, shorter than L - stride
}


@pytest.mark.parametrize("case", list(NEW_VS_OLD))
@pytest.mark.parametrize("fn", [eval_sliding, eval_ttt], ids=["sliding", "ttt"])
def test_scored_positions_path_equals_full_logits_path(fn, case):
    kw, T = NEW_VS_OLD[case]
    cfg = tiny_cfg_32x3(**kw)
    (old, rec_old), (new, rec_new) = _old_and_new(fn, cfg, tiny_tokens(T))
    rec_old.check()
    rec_new.check()  # TTT: each target once, scored under no_grad before any step trained on it
    assert new["n_tokens"] == old["n_tokens"] == T and new["n_bytes"] == old["n_bytes"]
    assert new["val_loss"] == pytest.approx(old["val_loss"], rel=1e-5, abs=1e-5)
    assert new["val_bpb"] == pytest.approx(old["val_bpb"], rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(rec_new.nll, rec_old.nll, rtol=1e-5, atol=1e-5)
    for key in ("scored_at_chunk", "trained_through_chunk", "trained_in_chunk", "score_count"):
        assert (getattr(rec_new, key) == getattr(rec_old, key)).all(), key


def test_first_window_goes_through_the_model_and_the_rest_through_nll_fn():
    """A compiled nll_fn sees one start (L - stride) and full batches once padded; window 0 runs eagerly."""
    cfg = tiny_cfg_32x3(eval_batch_seqs=3)
    model = tiny_model(cfg)
    calls = []

    def nll_fn(ids, targets, start):
        calls.append((ids.size(0), start))
        return model.nll_at(ids, targets, start)

    res = eval_sliding(model, tiny_tokens(221), tiny_luts(), cfg, nll_fn=fixed_batch(nll_fn, 3), progress=False)
    ref = eval_sliding(tiny_model(cfg), tiny_tokens(221), tiny_luts(), cfg, progress=False)
    assert res["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-6)
    assert set(calls) == {(3, 24)} and len(calls) == -(-(count_windows(221, 32, 8) - 1) // 3)


def test_scorer_and_ttt_loss_trace_as_single_graphs():
    """compiled_nll and compiled_ttt_loss trace with fullgraph=True and give the eager results
    (aot_eager: dynamo and AOTAutograd without code generation, so it runs on CPU)."""
    cfg = tiny_cfg_32x3(eval_batch_seqs=5)
    model = tiny_model(cfg)
    ids, y = tiny_tokens(3 * 32 - 1).view(3, 32), tiny_tokens(3 * 32 - 1, seed=2).view(3, 32)
    with torch.no_grad():
        got = compiled_nll(model, cfg, backend="aot_eager")(ids, y, 24)  # padded to 5 rows and back
        torch.testing.assert_close(got, model.nll_at(ids, y, 24), rtol=1e-5, atol=1e-5)
    compiled_ttt_loss(model, backend="aot_eager")(ids, y).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model(ids, y, reduction="none").sum().backward()
    for g, p in zip(got, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)


def test_sliding_rank_shares_score_every_target_once(monkeypatch):
    """Each rank's share of windows on the new path (run one rank at a time, no process group): the
    partial sums add up to one process's, and only rank 0 holds the first window."""
    import golf.evaluate as ev
    from golf.runtime import DistInfo

    cfg, T, W = tiny_cfg_32x3(eval_batch_seqs=3), 221, 3
    tokens = tiny_tokens(T)
    one = eval_sliding(tiny_model(cfg), tokens, tiny_luts(), cfg, progress=False)
    counts, loss_sum, n_tokens, n_bytes = np.zeros(T, int), 0.0, 0, 0
    for r in range(W):
        monkeypatch.setattr(ev, "dist_info", lambda r=r: DistInfo(r, r, W))
        rec = TTTRecord(T)
        part = eval_sliding(tiny_model(cfg), tokens, tiny_luts(), cfg, record=rec, progress=False)
        counts += rec.score_count
        loss_sum += part["val_loss"] * part["n_tokens"]
        n_tokens, n_bytes = n_tokens + part["n_tokens"], n_bytes + part["n_bytes"]
    assert (counts == 1).all() and n_tokens == T and n_bytes == one["n_bytes"]
    assert loss_sum / T == pytest.approx(one["val_loss"], rel=1e-6)
