"""The later frontier's model switches (spec §8): document attention (VarLen #1530), SmearGate with its
BOS mask (#1667, #1851), the sparse attention output gate (#1787) and the Muon weight-decay taper (#1729).
Each is off by default; these tests pin what each does when on."""
from __future__ import annotations

import json

import pytest
import torch

from golf.attention import (_dense_document_attention, _flex_document_attention, _segmented_document_attention,
                            document_ids, math_attention)
from golf.cli import main as golf_main
from golf.config import ConfigError, load_config
from golf.blocks import Attention
from golf.model import BOS_ID, build_model
from golf.tokenizer import BOS_ID as TOKENIZER_BOS
from golf.train import Trainer, muon_wd_multiplier
from golf.runtime import DistInfo

TINY = ["num_layers=4", "model_dim=32", "num_heads=4", "num_kv_heads=2", "rope_dims=4", "xsa_last_n=4",
        "num_loops=1", "loop_start=1", "loop_end=2", "parallel_start_layer=2", "vocab_size=64",
        "train_seq_len=48", "eval_seq_len=48", "eval_stride=16", "compile=off", "device=cpu", "gate_dims=8"]


def tiny(*overrides: str):
    cfg = load_config(None, TINY + list(overrides))
    model = build_model(cfg)
    model.set_looping(True)
    _perturb(model)
    return cfg, model


def _perturb(model, seed: int = 0) -> None:
    """Non-zero values everywhere (W_o, W_down and the gates start at zero), so every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device, p.dtype))


def _row_of_documents(lengths, seed=1):
    """One row: documents of the given lengths, each starting with BOS; tokens never BOS otherwise."""
    g = torch.Generator().manual_seed(seed)
    docs = [torch.cat((torch.tensor([BOS_ID]), torch.randint(4, 64, (n - 1,), generator=g))) for n in lengths]
    return docs, torch.cat(docs)[None]


def test_bos_id_is_the_tokenizers(demo_data):
    """The model's BOS is the id a trained tokenizer gives BOS, and the id every document starts with."""
    import sentencepiece as spm

    from golf.val_stream import load_val_tokens

    assert BOS_ID == TOKENIZER_BOS
    assert spm.SentencePieceProcessor(model_file=str(demo_data.tokenizer_path)).bos_id() == BOS_ID
    assert int(load_val_tokens(demo_data.data_dir, 64)[0]) == BOS_ID


def test_document_ids_count_bos():
    ids = torch.tensor([[5, 1, 7, 7, 1, 9]])
    assert document_ids(ids, 1).tolist() == [[0, 1, 1, 1, 2, 2]]


def test_dense_and_flex_document_attention_agree_with_attention_per_document():
    g = torch.Generator().manual_seed(0)
    B, T, H, KV, hd = 2, 64, 4, 2, 8
    q, k, v = (torch.randn(B, T, n, hd, generator=g) for n in (H, KV, KV))
    ids = torch.randint(4, 50, (B, T), generator=g)
    ids[0, [0, 20, 41]] = 1
    ids[1, 33] = 1  # row 1 starts inside a document
    doc = document_ids(ids, 1)
    dense = _dense_document_attention(q, k, v, doc)
    flex = _flex_document_attention(q, k, v, doc)  # eager here: the unfused reference of the same kernel
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    segmented = _segmented_document_attention(q, k, v, document_ids(ids, 1, 16))  # and cut every 16 tokens
    torch.testing.assert_close(segmented, _dense_document_attention(q, k, v, document_ids(ids, 1, 16)),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_segmented_document_attention(q, k, v, doc), dense, atol=1e-5, rtol=1e-5)
    for b in range(B):
        cuts = [0] + [int(i) for i in torch.nonzero(ids[b] == 1).flatten() if i > 0] + [T]
        for lo, hi in zip(cuts, cuts[1:]):
            alone = math_attention(q[b:b + 1, lo:hi], k[b:b + 1, lo:hi], v[b:b + 1, lo:hi])
            torch.testing.assert_close(dense[b:b + 1, lo:hi], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("smear", [False, True])
def test_document_mask_scores_each_document_as_if_alone(smear, segmented, monkeypatch):
    """Per-position NLL of a packed row equals each document's NLL run alone (RoPE is relative), through
    the explicit mask and, as a row longer than ``SEGMENTED_FROM`` goes, segment by segment."""
    import golf.attention

    if segmented:
        monkeypatch.setattr(golf.attention, "SEGMENTED_FROM", 8)
    cfg, model = tiny("attention_mask=document", f"smear_gate={smear}", "attn_out_gate=true")
    docs, row = _row_of_documents([13, 20, 15])
    targets = torch.randint(4, 64, row.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        packed = model(row, targets, reduction="none")[0]
        lo = 0
        for d in docs:
            alone = model(d[None], targets[:, lo:lo + len(d)], reduction="none")[0]
            torch.testing.assert_close(packed[lo:lo + len(d)], alone, atol=2e-5, rtol=2e-5)
            lo += len(d)


@pytest.mark.parametrize("smear", [False, True])
def test_changing_a_document_leaves_the_next_documents_scores_unchanged(smear):
    cfg, model = tiny("attention_mask=document", f"smear_gate={smear}")
    docs, row = _row_of_documents([20, 28])
    changed = row.clone()
    changed[0, 1:20] = torch.randint(4, 64, (19,), generator=torch.Generator().manual_seed(9))
    targets = torch.roll(row, -1, 1)
    with torch.no_grad():
        a = model(row, targets, reduction="none")[0]
        b = model(changed, targets, reduction="none")[0]
        # the sliding-window path: last-layer suffix attention on the scored positions only
        sa, sb = model.nll_at(row, targets, 24)[0], model.nll_at(changed, targets, 24)[0]
    assert not torch.allclose(a[:20], b[:20])  # document 0 did change
    torch.testing.assert_close(a[20:], b[20:], atol=1e-6, rtol=0)
    torch.testing.assert_close(sa, sb, atol=1e-6, rtol=0)
    torch.testing.assert_close(sa, a[24:], atol=2e-5, rtol=2e-5)


def test_causal_mask_lets_documents_see_each_other():
    """The record's default: attention crosses BOS (what the document mask removes)."""
    cfg, model = tiny()
    _, row = _row_of_documents([20, 28])
    changed = row.clone()
    changed[0, 1:20] = torch.randint(4, 64, (19,), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a, b = model(row, row, reduction="none")[0], model(changed, row, reduction="none")[0]
    assert not torch.allclose(a[20:], b[20:])


def test_smear_gate_starts_as_the_identity_and_never_reads_across_bos():
    cfg_off, plain = tiny()
    cfg_on = load_config(None, TINY + ["smear_gate=true"])
    smeared = build_model(cfg_on)
    smeared.set_looping(True)
    state = smeared.state_dict()
    state.update(plain.state_dict())  # same weights; the smear parameters stay zero
    smeared.load_state_dict(state)
    _, row = _row_of_documents([10, 14])
    with torch.no_grad():
        torch.testing.assert_close(smeared(row, row), plain(row, row), atol=0, rtol=0)
        smeared.smear_lambda.fill_(0.7)
        smeared.smear_gate.weight.normal_(generator=torch.Generator().manual_seed(2))
        e = smeared.tok_emb(row)
        out = smeared.smear(e, row)
    torch.testing.assert_close(out[0, 10], e[0, 10])  # BOS of document 1: no term from document 0
    torch.testing.assert_close(out[0, 0], e[0, 0])  # the row's first token has no previous one
    assert not torch.allclose(out[0, 11], e[0, 11])  # inside a document the previous token is mixed in


def test_sparse_attention_gate_halves_each_head_at_start_and_adds_only_its_parameters():
    cfg = load_config(None, TINY + ["attn_out_gate=true", "attn_gate_scale=0.5"])
    cfg_off = load_config(None, TINY)
    gated, plain = Attention(cfg.model, 0, cfg.train_seq_len), Attention(cfg_off.model, 0, cfg.train_seq_len)
    g = torch.Generator().manual_seed(4)
    h = torch.randn(2, 16, 32, generator=g)
    w = [torch.randn(s, 32, generator=g) * 0.2 for s in (32, 16, 16, 32)]
    y_plain = plain(h, *w, math_attention, None)
    torch.testing.assert_close(gated(h, *w, math_attention, None), 0.5 * y_plain)
    extra = set(build_model(cfg).state_dict()) - set(build_model(cfg_off).state_dict())
    assert extra == {f"blocks.{i}.attn.attn_gate_w" for i in range(cfg.num_layers)}  # the record's name


def test_gate_dims_beyond_the_model_width_is_refused():
    with pytest.raises(ConfigError, match="gate_dims"):
        load_config(None, TINY + ["smear_gate=true", "gate_dims=33"])


def test_muon_weight_decay_taper():
    cfg = load_config(None, TINY + ["muon_wd_taper_at=0.7", "muon_wd_taper_final=0.5"])
    assert [muon_wd_multiplier(f, cfg) for f in (0.0, 0.7, 0.85, 1.0, 1.2)] == pytest.approx([1, 1, 0.75, 0.5, 0.5])
    off = load_config(None, TINY)
    assert muon_wd_multiplier(0.99, off) == 1.0
    trainer = Trainer(build_model(cfg), cfg, DistInfo())
    trainer.set_schedule(1.0, 0, frac=0.85)
    assert all(g["weight_decay"] == pytest.approx(cfg.muon_wd * 0.75) for g in trainer.muon.param_groups)


def test_frontier_switches_train_quantize_and_evaluate_end_to_end(tmp_path, demo_data):
    """All model switches on, packed documents too: train, quantize (the new small tensors go into the
    artifact) and every evaluation, TTT's legality checks included."""
    from conftest import tiny_params

    params = tiny_params(tmp_path, demo_data, iterations=6, val_loss_every=0, attention_mask="document",
                         pack_documents=True, smear_gate=True, attn_out_gate=True, muon_wd_taper_at=0.5,
                         parallel_mode="lanes_mix", rope_yarn=False, init_mlp_banks_last=True, lqer_rank=2)
    run = tmp_path / "run"
    assert golf_main(["train", "--params", str(params), "--run-dir", str(run)]) == 0
    assert golf_main(["quantize", "--run-dir", str(run)]) == 0
    for mode in ("plain", "sliding", "ttt"):
        assert golf_main(["evaluate", "--run-dir", str(run), "--mode", mode]) == 0
        res = json.loads((run / f"eval_{mode}.json").read_text())
        assert res["val_bpb"] == res["val_bpb"] and res["val_bpb"] > 0  # finite, not NaN


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: FlexAttention runs fused only there")
def test_compiled_document_attention_on_cuda_matches_the_eager_mask():
    """Under torch.compile on CUDA the document mask runs as FlexAttention; loss and gradients agree
    with the explicit-mask path in bf16, and so does the compiled sliding-window scorer."""
    from golf.compile_policy import compiled_nll

    cfg = load_config(None, TINY + ["attention_mask=document", "smear_gate=true", "attn_out_gate=true",
                                    "device=cuda", "train_seq_len=256", "eval_seq_len=256", "eval_batch_seqs=4",
                                    "model_dim=64"])  # FlexAttention's kernels need head_dim >= 16
    model = build_model(cfg, "cuda")
    model.set_looping(True)
    _perturb(model)
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(4, 64, (4, 256), device="cuda", generator=g)
    ids[:, [0, 70, 71, 200]] = BOS_ID
    ids[1, 0] = 5  # a row that starts inside a document
    grads = []
    for fwd in (model, torch.compile(model, dynamic=False, fullgraph=True)):
        model.zero_grad()
        loss = fwd(ids, ids)
        loss.backward()
        grads.append((loss.detach(), model.qo_bank.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=5e-2, rtol=5e-2)
    with torch.no_grad():
        s = cfg.eval_seq_len - cfg.eval_stride
        torch.testing.assert_close(compiled_nll(model, cfg)(ids, ids, s), model.nll_at(ids, ids, s),
                                   atol=5e-2, rtol=5e-2)


def test_per_class_clip_sigmas_and_int7_embeddings():
    """#1626: SDClip sigmas by matrix class (0 keeps matrix_clip_sigmas) and a 7-bit embedding."""
    from golf.banking import unbank_state_dict
    from golf.quantized_state import quantize_state_dict

    cfg = load_config(None, TINY + ["attn_clip_sigmas=13", "mlp_clip_sigmas=12", "embed_clip_sigmas=15",
                                    "embed_bits=7", "quant_passthrough_numel=64"])
    sd = unbank_state_dict(build_model(cfg).state_dict(), cfg.num_layers)
    _perturb_sd = {k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in sd.items()}
    hessians = {k: torch.eye(v.shape[1]) for k, v in _perturb_sd.items() if v.ndim == 2}
    quantized, meta = quantize_state_dict(_perturb_sd, hessians, cfg)
    assert meta["blocks.0.attn.c_q.weight"]["clip_sigmas"] == 13
    assert meta["blocks.0.mlp.fc.weight"]["clip_sigmas"] == 12
    assert meta["tok_emb.weight"]["bits"] == 7 and meta["tok_emb.weight"]["clip_sigmas"] == 15
    assert int(quantized["tok_emb.weight.q"].abs().max()) <= 63
    shared = load_config(None, TINY + ["quant_passthrough_numel=64"])
    assert quantize_state_dict(_perturb_sd, hessians, shared)[1]["blocks.0.attn.c_q.weight"]["clip_sigmas"] == \
        shared.matrix_clip_sigmas


def test_lanes_mix_parameters_are_the_records_and_every_cross_term_reaches_the_loss():
    """#1530's lane parameters, named, shaped and started as the record's (the logits are held against the
    record's own code in tests/test_oracle.py): per layer a [from output][to lane] mix of ones and two
    residual λ of 1.1 rounded to bf16; no lane_merge."""
    cfg, lanes = tiny()
    mixed = build_model(cfg.replace(parallel_mode="lanes_mix"))
    mixed.set_looping(True)
    L = cfg.num_layers
    assert set(mixed.state_dict()) - set(lanes.state_dict()) == {"parallel_post_lambdas", "parallel_resid_lambdas"}
    assert "lane_merge" not in mixed.state_dict()
    assert torch.equal(mixed.parallel_post_lambdas, torch.ones(L, 2, 2))
    assert torch.equal(mixed.parallel_resid_lambdas, torch.full((L, 2), 1.1).bfloat16().float())
    _perturb(mixed)
    ids, y = _row_of_documents([20, 28])[1], _row_of_documents([20, 28], seed=2)[1]
    mixed(ids, y).backward()
    grad = mixed.parallel_post_lambdas.grad
    lane = cfg.parallel_start_layer
    assert bool((grad[lane:] != 0).all()) and bool((grad[:lane] == 0).all())  # only the lane layers take part


def test_gates_are_stored_int8_per_row_and_read_back_within_half_a_step():
    """#1736/#1855: the attention gate weights go int8 per row (absmax scale), not fp16; they need no
    Hessian, take no LQER correction and are never pruned; gate_int8=false keeps fp16. The SmearGate
    stays fp16, as #1855 stores it."""
    from golf.artifact import deserialize, serialize
    from golf.banking import unbank_state_dict
    from golf.lqer import lqer_correct
    from golf.quantized_state import dequantize_state_dict, quantize_state_dict

    cfg, model = tiny("smear_gate=true", "attn_out_gate=true", "quant_passthrough_numel=64", "lqer_rank=2",
                      "lqer_top_k=100")
    sd = unbank_state_dict(model.state_dict(), cfg.num_layers)
    gates = [n for n in sd if n.endswith("attn.attn_gate_w")]
    assert len(gates) == cfg.num_layers
    hessians = {k: torch.eye(v.shape[1]) for k, v in sd.items() if v.ndim == 2 and not k.endswith(("gate_w", "smear_gate.weight"))}
    quantized, meta = quantize_state_dict(sd, hessians, cfg)  # no Hessian asked for the gates
    for name in gates:
        assert meta[name] == {"type": "int8", "bits": 8, "rounding": "absmax"} and name not in quantized
        q, scale = quantized[name + ".q"], quantized[name + ".scale"]
        assert q.dtype == torch.int8 and q.shape == sd[name].shape and scale.shape == (sd[name].shape[0],)
        assert int(q.abs().amax()) == 127  # each row's largest weight lands on the end of the range
    assert meta["smear_lambda"]["type"] == meta["smear_gate.weight"]["type"] == "passthrough"  # fp16
    assert quantized["smear_gate.weight"].dtype == torch.float16
    back = dequantize_state_dict(*deserialize(serialize(quantized, meta)), sd)
    for name in gates:
        step = quantized[name + ".scale"].float()[:, None]
        assert ((back[name] - sd[name]).abs() <= step / 2 + 1e-6).all()
    _, lqer_meta, records = lqer_correct(sd, quantized, meta, 2, 100)
    assert records and not set(records) & set(gates) and all("lqer_rank" not in lqer_meta[n] for n in gates)
    fp16 = quantize_state_dict(sd, hessians, cfg.replace(gate_int8=False))[1]
    assert all(fp16[n]["type"] == "passthrough" for n in gates)


def test_frontier_demo_has_the_frontier_switches_on_the_demo_model():
    import yaml

    demo, frontier = load_config("params/frontier_demo.yaml"), load_config("params/frontier.yaml")
    for key in yaml.safe_load(open("params/frontier.yaml")):
        sized_for_the_record = ("seed", "data_dir", "tokenizer_path", "parallel_start_layer", "ema_decay", "fused_ce",
                                "gptq_calibration_batches", "gptq_reserve_seconds", "val_loss_every", "ttt_phase_docs",
                                "pack_documents")  # the demo corpus is in order: see its comment
        if key not in sized_for_the_record:
            assert getattr(demo, key) == getattr(frontier, key), key
    assert demo.model_dim == load_config("params/demo.yaml").model_dim


@pytest.mark.parametrize("switch", ["smear_gate=true", "attn_out_gate=true", "attention_mask=document",
                                    "parallel_mode=lanes_mix"])
def test_each_frontier_graph_switch_turns_the_mix_order_fusion_off_and_the_record_keeps_it(switch):
    import torch._inductor.config as inductor_config

    from golf.compile_policy import apply_inductor_workarounds

    with inductor_config.patch({"triton.mix_order_reduction": True}):  # restored on exit
        apply_inductor_workarounds(load_config("params/record.yaml"))
        assert inductor_config.triton.mix_order_reduction is True
        apply_inductor_workarounds(load_config("params/record.yaml", overrides=[switch]))
        assert inductor_config.triton.mix_order_reduction is False
