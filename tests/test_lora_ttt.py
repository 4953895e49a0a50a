"""Per-document LoRA TTT and phased TTT (spec §8, golf.lora_ttt): legal by ``TTTRecord`` (Issue #1017 C1,
C3, C4) on one process and two gloo processes, the identity at lr 0, documents independent, adapting."""
import numpy as np
import pytest
import torch

import golf.lora_ttt as lt
from gloo import run_gloo
from golf.bpb import token_bytes
from golf.scoring import TTTRecord
from golf.lora_ttt import DocAdapters, eval_lora_ttt, eval_phased_ttt
from golf.scoring import document_queue, document_spans, phase_documents, phase_points
from golf.layer_plan import virtual_layers
from golf.model import BOS_ID
from conftest import tiny_cfg_32x3, tiny_luts, tiny_model

LORA = dict(ttt_lora_rank=4, ttt_lora_chunk=8, ttt_lora_batch_docs=3, ttt_lora_lr=0.01, ttt_phase_docs=4,
            ttt_phases=2, ttt_global_chunk_tokens=64, ttt_global_lr=0.05)
DOC_LENS = (40, 12, 25, 7, 70, 30, 18)  # tokens, BOS included; two longer than eval_seq_len (32)


def lora_cfg(**kw):
    return tiny_cfg_32x3(**{**LORA, **kw})


def doc_tokens(lens=DOC_LENS, seed=1, vocab=64):
    """Documents that each start with BOS; no other token is BOS."""
    g = torch.Generator().manual_seed(seed)
    docs = [torch.cat((torch.tensor([BOS_ID]), torch.randint(2, vocab, (n - 1,), generator=g))) for n in lens]
    return torch.cat(docs)


def run(fn, cfg, tokens, seed=0):
    model = tiny_model(cfg, seed)
    rec = TTTRecord(tokens.numel() - 1)
    return fn(model, tokens, tiny_luts(), cfg, record=rec, progress=False), rec, model


# --- documents --------------------------------------------------------------------------------

def test_documents_tile_the_targets_and_end_at_the_next_bos():
    tokens = doc_tokens()
    starts, ends = document_spans(tokens)
    T = tokens.numel() - 1
    assert starts[0] == 0 and ends[-1] == T and (starts[1:] == ends[:-1]).all()
    assert (tokens[starts] == BOS_ID).all() and (tokens[ends[:-1]] == BOS_ID).all()  # last target: the next BOS
    assert list(ends - starts) == [*DOC_LENS[:-1], DOC_LENS[-1] - 1]
    s2, e2 = document_spans(tokens[5:])  # a stream that starts inside a document: its head is a document too
    assert s2[0] == 0 and e2[0] == DOC_LENS[0] - 5
    queue = document_queue(starts, ends, 3)
    # #1855: cut shortest first into [3, 1, 6], [2, 5, 0], [4]; run longest first, the partial batch leading
    assert [(i, list(d)) for i, d in queue] == [(2, [4]), (1, [2, 5, 0]), (0, [3, 1, 6])]
    assert phase_points(queue, 4, 2) == [(1, 2), (2, 4)] and phase_points(queue, 99, 1) == [(2, 7)]
    assert phase_points(queue, 4, 0) == [] and phase_points(queue, 0, 3) == []
    assert phase_points(queue, 1, 1) == [(0, 1)] and phase_points(queue, 1, 1, world=2) == [(1, 1)]  # rounds of 2
    assert list(phase_documents(queue, 1, 2)) == [2, 5]  # of 4, 2, 5, 0: by (place in the cut, in the batch)


# --- legality and the identity at lr 0 -----------------------------------------------------------

def test_lora_ttt_is_legal_complete_and_leaves_the_model_alone():
    cfg, tokens = lora_cfg(), doc_tokens()
    model = tiny_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rec = TTTRecord(tokens.numel() - 1)
    res = eval_lora_ttt(model, tokens, tiny_luts(), cfg, record=rec, progress=False)
    rec.check()
    T = tokens.numel() - 1
    assert res["n_tokens"] == T and res["n_docs"] == len(DOC_LENS) and res["n_batches"] == 3
    assert res["lora_steps"] == 8 + 4 + 2  # per batch [4], [2, 5, 0], [3, 1, 6]: chunks of its longest document but the last
    starts, ends = document_spans(tokens)
    for s, e in zip(starts, ends):  # every chunk but each document's last trains on exactly its targets
        last = s + (e - s - 1) // 8 * 8
        assert (rec.trained_in_chunk[s:last] >= 0).all() and (rec.trained_in_chunk[last:e] == -1).all()
        assert (rec.trained_in_chunk[s:last] == rec.scored_at_chunk[s:last]).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_lora_ttt_training_before_scoring_is_caught(monkeypatch):
    """A record that says the step on chunk ci came first fails the check (the check is not vacuous)."""
    cfg, tokens = lora_cfg(), doc_tokens()
    _, rec, _ = run(eval_lora_ttt, cfg, tokens)
    rec.trained_through_chunk = np.where(rec.trained_in_chunk >= 0, rec.trained_in_chunk, rec.trained_through_chunk)
    with pytest.raises(AssertionError, match="C3"):
        rec.check()


def test_one_forward_a_chunk_scores_and_trains(monkeypatch):
    """Each chunk's scores come from the forward its step then trains on, and are the numbers a separate
    no-grad scoring pass with the same adapters gives: one forward a chunk, 3/4 of the work."""
    import golf.lora_ttt as lt

    real, calls = lt.chunk_nll, []

    def checked(model, adapters, x, y, off, width):
        out = real(model, adapters, x, y, off, width)
        calls.append(torch.is_grad_enabled())
        if torch.is_grad_enabled():
            with torch.no_grad():
                assert torch.equal(out.detach(), real(model, adapters, x, y, off, width))
        return out

    monkeypatch.setattr(lt, "chunk_nll", checked)
    res, rec, _ = run(eval_lora_ttt, lora_cfg(), doc_tokens())
    rec.check()
    assert res["lora_steps"] == 14 and calls.count(True) == 14  # a forward with grad per step
    assert calls.count(False) == 3  # and none beside: each batch's last chunk is only scored


def reference_per_document(model, tokens, cfg):
    """NLL of every target with only its own document as context: one forward per chunk window
    [max(0, c1 − L), c1) of the plain model, as LoRA TTT scores when its adapters are the identity."""
    starts, ends = document_spans(tokens)
    C, L = cfg.ttt_lora_chunk, cfg.eval_seq_len
    nll = np.full(tokens.numel() - 1, np.nan)
    with torch.no_grad():
        for s, e in zip(starts, ends):
            for c0 in range(0, e - s, C):
                c1 = min(c0 + C, e - s)
                w0 = max(0, c1 - L)
                x, y = tokens[s + w0:s + c1][None], tokens[s + w0 + 1:s + c1 + 1][None]
                nll[s + c0:s + c1] = model(x, y, reduction="none")[0, c0 - w0:].double().numpy()
    return nll


@pytest.mark.parametrize("switches", [{}, dict(parallel_mode="single_stream"), dict(parallel_mode="none"),
                                      dict(attention_mask="document", smear_gate=True, attn_out_gate=True)])
def test_lora_at_lr_zero_is_plain_per_document_scoring(switches):
    cfg, tokens = lora_cfg(ttt_lora_lr=0.0, **switches), doc_tokens()
    res, rec, model = run(eval_lora_ttt, cfg, tokens)
    rec.check()
    ref = reference_per_document(model, tokens, cfg)
    np.testing.assert_allclose(rec.nll, ref, rtol=1e-5, atol=1e-6)
    luts = tiny_luts()
    n_bytes = int(token_bytes(luts, tokens[:-1], tokens[1:]).sum())
    assert res["n_bytes"] == n_bytes
    assert res["val_loss"] == pytest.approx(ref.mean(), rel=1e-6)
    assert res["val_bpb"] == pytest.approx(ref.sum() / (np.log(2) * n_bytes), rel=1e-6)


def test_lora_ttt_with_fused_qkv_equals_three_projections():
    """LoRA TTT runs with fused_qkv on (it used to raise on its adapted weights, which take their own
    F.linear, so the fusion stands aside): the same scores and steps as without."""
    tokens = doc_tokens()
    (res, rec, _), (res_fused, rec_fused, _) = (run(eval_lora_ttt, lora_cfg(fused_qkv=flag), tokens)
                                                 for flag in (False, True))
    rec_fused.check()
    assert res_fused["lora_steps"] == res["lora_steps"]
    np.testing.assert_allclose(rec_fused.nll, rec.nll, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (fused_mlp is CUDA-only)")
def test_lora_ttt_with_fused_mlp_on_gpu_runs_the_adapted_mlp():
    """LoRA TTT runs with fused_mlp on: its adapted MLP weights take the unfused path instead of failing
    in the kernel's operand check (the widths are block-aligned, so plain weights would be fused). The
    scores are then those of the unfused run; this guards against the crash, not a numerical change."""
    tokens = doc_tokens()
    results = []
    for flag in (False, True):
        cfg = lora_cfg(model_dim=64, num_heads=2, num_kv_heads=1, mlp_mult=4.0, fused_mlp=flag)
        model = tiny_model(cfg).cuda()
        model.compute_dtype = torch.bfloat16
        model.set_fused_kernels(mlp=flag, ce=False, qkv=False)
        assert model.fused_kernels()["fused_mlp"] == flag
        rec = TTTRecord(tokens.numel() - 1)
        results.append(eval_lora_ttt(model, tokens.cuda(), tiny_luts().to("cuda"), cfg, record=rec, progress=False))
        rec.check()
    assert results[1]["lora_steps"] == results[0]["lora_steps"]
    assert results[1]["val_loss"] == pytest.approx(results[0]["val_loss"], rel=1e-3)


def test_caseops_bytes_are_charged_by_stream_position():
    from golf.bpb import SidecarBytes

    cfg, tokens = lora_cfg(), doc_tokens()
    counts = torch.randint(0, 5, (tokens.numel(),), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    res = eval_lora_ttt(tiny_model(cfg), tokens, SidecarBytes(counts), cfg, progress=False)
    assert res["n_bytes"] == int(counts[1:].sum())  # target p charges the bytes of token p + 1


def test_one_document_at_lr_zero_is_the_sliding_window_with_stride_chunk():
    from golf.evaluate import eval_sliding

    cfg = lora_cfg(ttt_lora_lr=0.0, eval_stride=8)
    tokens = doc_tokens(lens=(97,))  # T = 96, a multiple of the chunk
    res, _, model = run(eval_lora_ttt, cfg, tokens)
    ref = eval_sliding(model, tokens, tiny_luts(), cfg, progress=False)
    assert res["n_tokens"] == ref["n_tokens"] == 96
    assert res["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-6)


def test_adapters_start_as_the_identity_one_set_per_virtual_layer():
    cfg = lora_cfg()
    ad = DocAdapters(cfg, 2, len(virtual_layers(cfg, True)), torch.Generator())
    assert len(ad.q) == len(ad.mlp) == 4  # layers 0, 1, 1, 2: the looped layer has two slots
    assert all((m.B == 0).all() and m.scale == 1.0 for m in ad.modules() if isinstance(m, lt.BatchedLoRA))
    bound = 1 / cfg.model_dim ** 0.5
    assert ad.q[0].A.abs().max() <= bound and ad.q[0].A.shape == (2, 4, cfg.model_dim)
    assert DocAdapters(lora_cfg(ttt_lora_alpha=6.0), 1, 4, torch.Generator()).head.scale == 1.5
    with pytest.raises(TypeError, match="F.linear"):
        torch.matmul(torch.ones(2, 2), lt._AdaptedWeight(torch.ones(2, 2), None))


@pytest.mark.parametrize("parallel_mode", ["lanes", "single_stream", "none"])
def test_every_adapter_reaches_the_loss(parallel_mode):
    """Q, K, V, attention-out and MLP-out of every virtual-layer slot, and the head, all get a gradient."""
    cfg = lora_cfg(parallel_mode=parallel_mode)
    model = tiny_model(cfg)
    ad = DocAdapters(cfg, 2, len(virtual_layers(cfg, True)), torch.Generator())
    tokens = doc_tokens()[:40].view(2, 20)
    nll = lt.chunk_nll(model, ad, tokens[:, :-1], tokens[:, 1:], torch.tensor([3, 5]), 8)
    assert nll.shape == (2, 8)
    nll.sum().backward()
    named = {n: m for n, m in ad.named_modules() if isinstance(m, lt.BatchedLoRA)}
    assert len(named) == 5 * 4 + 1
    assert all(m.B.grad is not None and (m.B.grad.abs().sum((1, 2)) > 0).all() for m in named.values()), \
        [n for n, m in named.items() if m.B.grad is None or not (m.B.grad.abs().sum((1, 2)) > 0).all()]


# --- independence and adaptation -----------------------------------------------------------------

def test_documents_are_independent():
    """Changing document k (same length) changes no other document's scores, with training on."""
    cfg, tokens = lora_cfg(), doc_tokens()
    starts, ends = document_spans(tokens)
    k = 1
    other = tokens.clone()
    other[starts[k] + 1:ends[k]] = doc_tokens(seed=7)[starts[k] + 1:ends[k]]
    assert not torch.equal(other, tokens) and (other[starts[k] + 1:ends[k]] != BOS_ID).all()
    _, rec_a, _ = run(eval_lora_ttt, cfg, tokens)
    _, rec_b, _ = run(eval_lora_ttt, cfg, other)
    mine = np.zeros(tokens.numel() - 1, bool)
    mine[starts[k]:ends[k]] = True
    np.testing.assert_allclose(rec_a.nll[~mine], rec_b.nll[~mine], rtol=1e-6, atol=1e-7)
    assert not np.allclose(rec_a.nll[mine], rec_b.nll[mine])


def test_lora_ttt_adapts_to_a_repetitive_document():
    cfg = lora_cfg(ttt_lora_rank=8)
    pattern = torch.randint(2, 64, (6,), generator=torch.Generator().manual_seed(3))
    tokens = torch.cat((torch.tensor([BOS_ID]), pattern.repeat(20)))  # one document, 120 targets
    _, rec0, _ = run(eval_lora_ttt, lora_cfg(ttt_lora_lr=0.0), tokens)
    _, rec1, _ = run(eval_lora_ttt, cfg, tokens)
    np.testing.assert_allclose(rec1.nll[:8], rec0.nll[:8], rtol=1e-6)  # chunk 0: scored before any step
    later = slice(48, None)
    assert rec1.nll[later].mean() < rec0.nll[later].mean() - 0.1


# --- phased TTT -----------------------------------------------------------------------------------

def test_phased_ttt_is_legal_and_its_phases_train_only_scored_documents(monkeypatch):
    """Batches of two run [4], [5, 0], [6, 2], [3, 1]; phases after the second (3 documents scored, the
    first 2 in #1855's order: 5, 0) and the third (5 scored; 6, 2, 5, 0)."""
    cfg, tokens = lora_cfg(ttt_lora_batch_docs=2), doc_tokens()
    calls = []
    original = lt.global_phase

    def spy(model, toks, spans, cfg_, record, step_id):
        calls.append((list(spans), step_id, record.scored_at_chunk.copy()))
        return original(model, toks, spans, cfg_, record, step_id)

    monkeypatch.setattr(lt, "global_phase", spy)
    res, rec, model = run(eval_phased_ttt, cfg, tokens)
    rec.check()
    assert res["n_tokens"] == tokens.numel() - 1 and res["phase_docs"] == [2, 4] and res["global_steps"] > 0
    starts, ends = document_spans(tokens)
    assert [spans for spans, _, _ in calls] == [[(starts[d], ends[d]) for d in docs] for docs in ([5, 0], [6, 2, 5, 0])]
    for spans, step_id, scored_at in calls:
        for lo, hi in spans:  # already scored when the phase ran, and before it in the step order
            assert (scored_at[lo:hi] >= 0).all() and (rec.scored_at_chunk[lo:hi] < step_id).all()
    # the batches before the first phase are scored by the unchanged base model, with the same adapters'
    # draws: the same as LoRA TTT; later ones are not
    _, rec_lora, _ = run(eval_lora_ttt, cfg, tokens)
    first = np.concatenate([np.arange(starts[d], ends[d]) for d in (4, 5, 0)])
    np.testing.assert_allclose(rec.nll[first], rec_lora.nll[first], rtol=1e-6)
    rest = np.setdiff1d(np.arange(tokens.numel() - 1), first)
    assert not np.allclose(rec.nll[rest], rec_lora.nll[rest])
    assert not torch.equal(model.qo_bank, tiny_model(cfg).qo_bank)  # the base model itself was trained


def test_phase_on_unscored_documents_is_caught(monkeypatch):
    cfg, tokens = lora_cfg(), doc_tokens()
    starts, ends = document_spans(tokens)
    original = lt.global_phase
    monkeypatch.setattr(lt, "global_phase", lambda m, t, spans, c, r, i: original(m, t, list(zip(starts, ends)), c,
                                                                                  r, i))
    _, rec, _ = run(eval_phased_ttt, cfg, tokens)
    with pytest.raises(AssertionError, match="C3"):
        rec.check()


# --- two gloo ranks -------------------------------------------------------------------------------

DIST_CFG = dict(fix_embed_fp32=True)  # see test_evaluate_dist: bf16 gradients summed over ranks round differently


def _both(rank=0):
    out = {}
    tokens = doc_tokens()
    for lr in (0.0, 0.01):
        cfg = lora_cfg(ttt_lora_lr=lr, ttt_global_lr=lr, **DIST_CFG)
        for name, fn in (("lora", eval_lora_ttt), ("phased", eval_phased_ttt)):
            res, rec, _ = run(fn, cfg, tokens)
            out[name, lr] = (res, rec)
    return out


def test_two_ranks_score_every_target_once_and_match_one_process_untrained():
    """Two ranks take the batches in turns and share the phases' documents. Each rank draws its adapters'
    A from its own generator, as #1855's ranks do, so with training on the scores depend on the rank
    count; untrained, they equal one process's exactly, and either way every target is scored once,
    before anything trained on it."""
    one = _both()
    for got in run_gloo(_both, 2):
        for key, (res, rec) in got.items():
            res1, rec1 = one[key]
            rec.check()  # merged over ranks: each target once, scored before trained on
            assert res["n_tokens"] == res1["n_tokens"] == doc_tokens().numel() - 1, key
            assert res["n_bytes"] == res1["n_bytes"] and res["phase_docs"] == res1["phase_docs"], key
            assert (rec.scored_at_chunk == rec1.scored_at_chunk).all(), key
            if key[1] == 0.0:
                assert res["val_loss"] == pytest.approx(res1["val_loss"], rel=1e-6), key
                np.testing.assert_allclose(rec.nll, rec1.nll, rtol=1e-5, atol=1e-6)
            else:
                assert (rec.trained_in_chunk >= 0).sum() > 0, key


def _keep_a(rank=0):
    res, rec, _ = run(eval_lora_ttt, lora_cfg(ttt_lora_keep_a=True, **DIST_CFG), doc_tokens())
    return res, rec


def test_keep_a_is_legal_on_two_ranks():
    """Each rank carries its own A from batch to batch (so the result depends on the rank count, as the
    README says); merged over ranks every target is scored once, before anything trained on it."""
    for res, rec in run_gloo(_keep_a, 2):
        rec.check()
        assert res["n_tokens"] == doc_tokens().numel() - 1


# --- the command -----------------------------------------------------------------------------------

def test_golf_evaluate_lora_and_phased_modes(tmp_path, demo_data):
    import json

    from golf.cli import main as golf_main
    from conftest import tiny_params

    params = tiny_params(tmp_path, demo_data, iterations=5, val_loss_every=0, max_val_tokens=2048)
    run_dir = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run_dir)]) == 0
    small = ["--set", "ttt_lora_rank=4", "ttt_phase_docs=1", "ttt_global_chunk_tokens=512", "fused_qkv=true"]
    for mode in ("lora_ttt", "phased_ttt"):
        assert golf_main(["evaluate", "--run-dir", str(run_dir), "--mode", mode, "--source", "raw", *small]) == 0
        result = json.loads((run_dir / f"eval_{mode}_raw.json").read_text())
        assert result["mode"] == mode and result["val_bpb"] > 0
        assert result["n_tokens"] == 31 * 64  # 2048 val tokens: 2047 targets cut to whole 64-token sequences
        # asked for; LoRA TTT's adapted weights leave it aside, phased TTT's global steps use it
        assert result["kernels_in_effect"]["fused_qkv"] == (mode == "phased_ttt")
    assert result["phase_docs"] == [1] and result["global_steps"] > 0


def test_golf_evaluate_wires_ttt_lora_compile(tmp_path, demo_data, monkeypatch, capsys):
    """With compile on, ``ttt_lora_compile`` hands LoRA TTT the compiled forward (a spy here: compiling is
    the GPU's and slow on CPU) and the result says so; with compile off it warns and runs eager."""
    import json

    from golf.cli import main as golf_main
    from conftest import tiny_params

    made = []

    def spy_compiled(backend="inductor"):
        made.append(backend)
        return lt.chunk_nll

    monkeypatch.setattr(lt, "compiled_chunk_nll", spy_compiled)
    params = tiny_params(tmp_path, demo_data, iterations=2, val_loss_every=0, max_val_tokens=1024)
    run_dir = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run_dir)]) == 0
    base = ["evaluate", "--run-dir", str(run_dir), "--mode", "lora_ttt", "--source", "raw", "--set",
            "ttt_lora_rank=4", "ttt_lora_compile=true"]
    assert golf_main([*base, "compile=off"]) == 0
    result = json.loads((run_dir / "eval_lora_ttt_raw.json").read_text())
    assert made == [] and result["adapted_forward_compiled"] is False
    assert "ttt_lora_compile is set but compile is off" in capsys.readouterr().err
    (run_dir / "eval_lora_ttt_raw.json").unlink()
    assert golf_main([*base, "compile=on"]) == 0
    result = json.loads((run_dir / "eval_lora_ttt_raw.json").read_text())
    assert made == ["inductor"] and result["adapted_forward_compiled"] is True


def test_compiled_lora_forward_that_fails_to_compile_goes_on_eager_with_one_warning(caplog):
    """Inductor failing on the adapted forward (torch 2.11, H100) must not end the evaluation: the failed
    call and every later one run eager, the scores equal eager's, one warning names the failure, and
    ``fallback`` keeps it for the result file."""
    import logging
    import sys

    from torch._inductor.exc import InductorError

    cfg, tokens = lora_cfg(), doc_tokens()
    eager, eager_rec, _ = run(eval_lora_ttt, cfg, tokens)
    compiled = lt.CompiledChunkNll(backend="eager")
    calls = []

    def failing(*args):
        calls.append(1)
        raise InductorError(AssertionError("rnumel1 == 1"), sys._getframe())

    compiled.compiled = failing
    with caplog.at_level(logging.WARNING, logger="golf"):
        model = tiny_model(cfg, 0)
        rec = TTTRecord(tokens.numel() - 1)
        res = eval_lora_ttt(model, tokens, tiny_luts(), cfg, record=rec, progress=False, nll_fn=compiled)
    assert len(calls) == 1 and compiled.fallback.startswith("InductorError in the forward: AssertionError")
    assert caplog.text.count("torch.compile failed on the adapted forward") == 1
    assert res["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-6)
    rec.check()
    eager_rec.check()


def test_compiled_lora_backward_that_fails_to_compile_goes_on_eager(caplog):
    """The compiled backward's graph compiles lazily, at ``backward()``, outside the forward call: a
    failure there also turns the rest eager, the chunk's step still runs (on the eager loss of the same
    adapters), and the scores and steps equal eager's."""
    import logging
    import sys

    from torch._inductor.exc import InductorError

    class FailsInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, nll):
            return nll.clone()

        @staticmethod
        def backward(ctx, grad):
            raise InductorError(AssertionError("rnumel1 == 1"), sys._getframe())

    cfg, tokens = lora_cfg(), doc_tokens()
    eager, _, _ = run(eval_lora_ttt, cfg, tokens)
    compiled = lt.CompiledChunkNll(backend="eager")
    compiled.compiled = lambda *args: FailsInBackward.apply(lt.chunk_nll(*args))
    with caplog.at_level(logging.WARNING, logger="golf"):
        rec = TTTRecord(tokens.numel() - 1)
        res = eval_lora_ttt(tiny_model(cfg, 0), tokens, tiny_luts(), cfg, record=rec, progress=False, nll_fn=compiled)
    assert compiled.fallback.startswith("InductorError in the backward")
    assert caplog.text.count("torch.compile failed on the adapted backward") == 1
    assert res["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-6)
    assert res["lora_steps"] == eager["lora_steps"] > 0
    rec.check()


def test_a_phase_after_the_last_batch_warns_that_it_changes_nothing(caplog):
    import logging

    from golf.scoring import phase_points

    queue = [(0, np.arange(4)), (1, np.arange(4, 8))]
    with caplog.at_level(logging.WARNING, logger="golf"):
        assert phase_points(queue, 2000, 1) == [(1, 8)]
    assert "changes no score" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="golf"):
        assert phase_points(queue, 4, 1) == [(0, 4)]
    assert "changes no score" not in caplog.text


# --- keep A warm (#1787) ---------------------------------------------------------------------------

def test_full_batches_reuse_one_adapter_set_whose_a_stays_trained_with_keep_a(monkeypatch):
    """#1855: one full-size adapter set serves batch after batch, B zeroed each time; with ttt_lora_keep_a its
    A stays as the last batch trained it (only already scored documents shaped it, so the legality record
    holds), else A is drawn anew. Batches of two run [4] (partial: a set of its own), [5, 0], [6, 2], [3, 1]."""
    tokens = doc_tokens()
    real = lt.DocAdapters.reset

    for keep in (True, False):
        seen: list = []

        def spy(self, gen, keep_a):
            before = [m.A.detach().clone() for m in self.loras()]
            real(self, gen, keep_a)
            seen.append((id(self), before, [m.A.detach().clone() for m in self.loras()]))

        monkeypatch.setattr(lt.DocAdapters, "reset", spy)
        res, rec, _ = run(eval_lora_ttt, lora_cfg(ttt_lora_batch_docs=2, ttt_lora_keep_a=keep), tokens)
        rec.check()
        assert res["n_batches"] == 4 and len(seen) == 3 and len({i for i, _, _ in seen}) == 1
        for (_, before, after) in seen:
            assert all(torch.equal(a, b) for a, b in zip(before, after)) == keep
        # between two resets the set trained: its A moved
        assert not all(torch.equal(a, b) for a, b in zip(seen[0][2], seen[1][1]))
    monkeypatch.setattr(lt.DocAdapters, "reset", real)
    idle = run(eval_lora_ttt, lora_cfg(ttt_lora_keep_a=True, ttt_lora_lr=0.0), tokens)[0]
    assert idle["val_loss"] == pytest.approx(run(eval_lora_ttt, lora_cfg(ttt_lora_lr=0.0), tokens)[0]["val_loss"],
                                             rel=1e-12)


def test_progress_counts_chunks_and_reaches_its_total(monkeypatch):
    """The bar moves a chunk at a time (a batch of long documents is many minutes on one GPU) and ends full."""
    import golf.lora_ttt as lt

    bars = []

    class Bar:
        def __init__(self, total, desc, enabled, unit):
            self.total, self.unit, self.n = total, unit, 0
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            pass

        def set_postfix_str(self, text):
            pass

    monkeypatch.setattr(lt, "progress_bar", Bar)
    res, _, _ = run(eval_lora_ttt, lora_cfg(), doc_tokens())
    (bar,) = bars
    assert bar.unit == "chunk" and bar.total == bar.n == res["lora_steps"] + res["n_batches"]  # 9 + 4 + 1


def test_compiled_adapted_forward_scores_as_eager():
    """``ttt_lora_compile``'s forward through dynamo and AOTAutograd (CPU: backend aot_eager; inductor's
    code generation is the GPU's) gives the eager scores and stays legal, over chunks of changing window
    and width, in a few graphs, not one a chunk. Phased TTT: LoRA TTT's batches, and the base weights changed
    in place between them, which a compiled graph must read afresh (one run of it: compiling is slow)."""
    evaluate = eval_phased_ttt
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    cfg, tokens = lora_cfg(), doc_tokens(DOC_LENS[:6])  # two full batches of 3: no short last batch to compile
    res_e, rec_e, _ = run(evaluate, cfg, tokens)
    torch._dynamo.reset()
    model = tiny_model(cfg, 0)
    rec_c = TTTRecord(tokens.numel() - 1)
    res_c = evaluate(model, tokens, tiny_luts(), cfg, record=rec_c, progress=False,
                     nll_fn=torch.compile(lt.chunk_nll, dynamic=True, backend=counter))
    rec_c.check()
    np.testing.assert_allclose(rec_c.nll, rec_e.nll, rtol=1e-6, atol=1e-7)
    assert res_c["val_loss"] == pytest.approx(res_e["val_loss"], rel=1e-7)
    # 4 graphs for 13 chunks: with grad, the first chunk (window = width) and the rest; without grad, the
    # last chunks, and width 1 (sizes 0 and 1 stay specialised). Below torch's recompile limit of 8.
    assert 2 <= counter.frame_count <= 6, counter.frame_count
