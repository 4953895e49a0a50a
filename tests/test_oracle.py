"""The frontier switches against numbers made by PR #1855's own code (docs/record.md §8.1).

The fixtures come from ``dev/oracle_fixtures.py``, which runs the record's ``train_gpt.py`` and
``lossless_caps.py`` on CPU at a small size: its model with every parameter randomized, its LoRA
TTT forward, Muon step, LQER and gate packings, LR schedule, CaseOps transform with its shipped
tokenizer, and the hyperparameters its seed-42 log prints.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golf.caseops import OPERATORS, decode, encode
from golf.config import load_config
from golf.lora_ttt import DocAdapters, chunk_nll
from golf.banking import load_state_dict_checked, unbank_state_dict
from golf.layer_plan import virtual_layers
from golf.model import GPT, build_model, count_params
from golf.muon import BankMuon, ns_coefficients
from golf.gptq import absmax_int8
from golf.lqer import LQER_GROUP, lqer_quantize
from golf.quantized_state import quantize_state_dict
from golf.tokenizer import _caseops_token_bytes
from golf.train import lr_multiplier

FIXTURES = Path(__file__).parent / "fixtures"
# dev/oracle_fixtures.py's SMALL environment, in golf's keys, over params/frontier.yaml
SMALL = ["vocab_size=64", "num_layers=6", "model_dim=32", "num_heads=4", "num_kv_heads=2", "mlp_mult=2.0",
         "rope_dims=4", "xsa_last_n=6", "num_loops=2", "loop_start=1", "loop_end=2", "parallel_start_layer=4",
         "train_seq_len=32", "eval_seq_len=32", "eval_stride=16", "gate_dims=8", "seed=7", "ttt_lora_rank=4",
         "ttt_lora_chunk=16", "fused_ce=false", "device=cpu", "compile=off"]


@pytest.fixture(scope="module")
def oracle():
    return torch.load(FIXTURES / "pr1855_oracle.pt", weights_only=False)


def small_cfg(*extra: str):
    return load_config("params/frontier.yaml", SMALL + list(extra))


def record_model(oracle, cfg):
    model = build_model(cfg, "cpu", init=False)
    load_state_dict_checked(model, oracle["state_dict"])
    return model.eval()


def test_the_small_config_is_the_fixtures():
    env = torch.load(FIXTURES / "pr1855_oracle.pt", weights_only=False)["env"]
    cfg = small_cfg()
    assert (cfg.vocab_size, cfg.num_layers, cfg.model_dim, cfg.gate_dims, cfg.train_seq_len, cfg.seed) == (
        env["VOCAB_SIZE"], env["NUM_LAYERS"], env["MODEL_DIM"], env["GATE_WINDOW"], env["TRAIN_SEQ_LEN"], env["SEED"])
    assert cfg.attn_gate_scale == env["SPARSE_ATTN_GATE_SCALE"] and cfg.parallel_start_layer == env["PARALLEL_START_LAYER"]


def test_initial_weights_equal_the_records(oracle):
    """The same draws in the same order at the same seed: embedding, SmearGate's default fill, banks."""
    model = build_model(small_cfg(), "cpu")
    ours = model.state_dict()
    assert set(ours) == set(oracle["init"])
    for name, want in oracle["init"].items():
        assert torch.equal(ours[name].float(), want), name


@pytest.mark.parametrize("mask", ["causal", "document"])
@pytest.mark.parametrize("phase", ["plain", "looped"])
def test_logits_and_loss_equal_the_records(oracle, mask, phase):
    """Rows with BOS mid-row; ``document``: the record's cu_seqlens per packed row, segments cut at BOS
    and every train_seq_len tokens (the rows are longer than it)."""
    cfg = small_cfg(f"attention_mask={mask}", f"pack_documents={mask == 'document'}")
    model = record_model(oracle, cfg)
    model.set_looping(phase == "looped")
    ids, targets = oracle["ids"], oracle["targets"]
    want = oracle["logits"][f"{mask}_{phase}"]
    with torch.no_grad():
        got = model.forward_logits(ids)
        nll = model(ids, targets, reduction="none")
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)
    loss = nll.mean() if mask == "causal" else nll.mean(1)  # the record's document losses are per packed row
    torch.testing.assert_close(loss, oracle["loss"][f"{mask}_{phase}"], rtol=1e-5, atol=1e-6)


def test_lora_ttt_losses_equal_the_records(oracle):
    """The record's forward_ttt (looped, one document a row) with its randomized LoRA set, through
    golf's adapters: Q, K, V, attention-out, MLP-out per virtual layer and the LM head, scale alpha/rank."""
    cfg = small_cfg()
    model = record_model(oracle, cfg)
    model.set_looping(True)
    ttt = oracle["ttt"]
    assert cfg.ttt_lora_alpha == ttt["alpha"]
    adapters = DocAdapters(cfg, n_docs=2, n_slots=len(virtual_layers(cfg, True)), gen=torch.Generator())
    names = {"lm_head_lora": "head", "q_loras": "q", "k_loras": "k", "v_loras": "v", "mlp_loras": "mlp",
             "o_loras": "o"}
    ours = {}
    for key, value in ttt["lora"].items():
        head, rest = key.split(".", 1)
        ours[f"{names[head]}.{rest}"] = value
    adapters.load_state_dict(ours, strict=True)
    ids, targets = ttt["ids"], ttt["targets"]
    with torch.no_grad():
        got = chunk_nll(model, adapters, ids, targets, torch.zeros(2, dtype=torch.long), ids.size(1))
    torch.testing.assert_close(got, ttt["nll"], rtol=1e-5, atol=1e-6)


# dev/oracle_fixtures.py's TTT settings, in golf's keys
TTT_SETTINGS = {"ttt_batch_size": "ttt_lora_batch_docs", "ttt_chunk_size": "ttt_lora_chunk", "eval_seq_len": "eval_seq_len",
                "ttt_lora_lr": "ttt_lora_lr", "ttt_beta2": "ttt_lora_beta2", "ttt_weight_decay": "ttt_lora_wd",
                "ttt_lora_rank": "ttt_lora_rank", "global_ttt_lr": "ttt_global_lr",
                "global_ttt_chunk_tokens": "ttt_global_chunk_tokens", "global_ttt_batch_seqs": "ttt_batch_seqs",
                "seed": "seed"}


@pytest.mark.parametrize("run", ["lora_ttt", "phased_ttt", "phased_ttt_cold_a"])
def test_ttt_procedures_equal_the_records(oracle, run):
    """The record's eval_val_ttt_phased on 11 documents in batches of 4 (a partial batch, which runs first;
    documents longer than the window): per-document LoRA TTT alone, and with two global phases, A kept
    warm or drawn anew; val loss and BPB, and the base model after the global SGD."""
    from golf.bpb import ByteLUTs
    from golf.lora_ttt import eval_lora_ttt, eval_phased_ttt

    procs = oracle["ttt_procedures"]
    want = procs["runs"][run]
    keys = [f"{TTT_SETTINGS[k]}={v}" for k, v in procs["settings"].items() if k in TTT_SETTINGS]
    # fix_embed_fp32: the fixture's record model is fp32 throughout; in a real run its tok_emb is bf16, as golf's
    cfg = small_cfg(*keys, "data_dir=data/none", "fix_embed_fp32=true", f"ttt_phase_docs={want['prefix_docs']}",
                    f"ttt_phases={want['phases']}", f"ttt_lora_keep_a={want['warm_a']}")
    model = record_model(oracle, cfg)
    model.set_looping(True)
    luts = ByteLUTs(**procs["luts"])
    fn = eval_phased_ttt if want["prefix_docs"] else eval_lora_ttt
    got = fn(model, procs["stream"], luts, cfg, progress=False)
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
    assert got["val_bpb"] == pytest.approx(want["val_bpb"], rel=1e-5)
    if want["prefix_docs"]:
        assert got["global_steps"] > 0
        after = model.state_dict()
        for name, value in want["state_dict"].items():
            torch.testing.assert_close(after[name].float(), value, rtol=1e-4, atol=1e-5, msg=name)


def test_muon_steps_equal_the_records(oracle):
    """Polar Express, MuonEq-R with the row norm rounded to bf16, Nesterov, shape scale, decay: three steps."""
    run = oracle["muon"]
    p = torch.nn.Parameter(run["p0"].clone())
    opt = BankMuon([p], lr=run["lrs"][0], momentum=run["momentum"], weight_decay=run["weight_decay"],
                   coefficients=ns_coefficients("polar_express"))
    for grad, lr in zip(run["grads"], run["lrs"]):
        opt.param_groups[0]["lr"] = lr
        p.grad = grad.clone()
        opt.step()
    assert torch.equal(p.detach(), run["p"])


def test_lqer_and_gate_packings_equal_the_records(oracle):
    q = oracle["quant"]
    for got, want in zip(lqer_quantize(q["A"], q["B"], LQER_GROUP), q["asym"]):
        assert torch.equal(got.reshape(want.shape), want)
    for got, want in zip(lqer_quantize(q["A"], q["B_odd"], 0), q["sym"]):  # r·cols not a multiple of 64
        assert torch.equal(got, want)
    for got, want in zip(absmax_int8(q["gate"]), q["gate_int8"]):
        assert torch.equal(got, want)


def test_tensors_are_stored_as_the_record_stores_them(oracle):
    """int8 per row for the attention gates; fp16 for the SmearGate, the lane λ and the other small tensors."""
    cfg = small_cfg()
    model = record_model(oracle, cfg)
    _, meta = quantize_state_dict(unbank_state_dict(model.state_dict(), cfg.num_layers), {}, cfg)
    kinds = {"gate_int8_row": "int8", "passthrough (float16)": "passthrough"}
    banks = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
    checked = [n for n in oracle["storage"] if n not in banks]
    assert checked and all(meta[n]["type"] == kinds[oracle["storage"][n]] for n in checked)


def test_lr_schedule_equals_the_records(oracle):
    lr = oracle["lr"]
    got = [lr_multiplier(f, lr["warmdown_frac"], lr["min_lr"]) for f in lr["fracs"]]
    assert got == pytest.approx(lr["lr_mul"], abs=1e-12)


# --- CaseOps: lossless_caps_caseops_v1 with the record's shipped tokenizer ------------------------

CASEOPS = json.loads((FIXTURES / "pr1855_caseops.json").read_text())


def test_caseops_operators_are_the_shipped_tokenizers():
    assert list(OPERATORS) == CASEOPS["operators"] and CASEOPS["operator_ids"] == [4, 5, 6, 7]


@pytest.mark.parametrize("case", CASEOPS["cases"], ids=lambda c: repr(c["text"])[:30])
def test_caseops_encoding_and_bytes_equal_the_records(case):
    assert encode(case["text"]) == case["encoded"]
    assert decode(case["encoded"]) == case["text"]
    offsets = [tuple(o) for o in case["offsets"]]
    assert [case["encoded"][a:b] for a, b in offsets] == case["pieces"]
    assert _caseops_token_bytes(case["encoded"], offsets).tolist() == [0] + case["piece_bytes"]  # BOS first


# --- params/frontier.yaml is #1855's logged run -------------------------------------------------

RUN = json.loads((FIXTURES / "pr1855_run.json").read_text())
SAME = ["seed", "vocab_size", "train_seq_len", "eval_seq_len", "train_batch_tokens", "val_batch_tokens", "iterations",
        "max_wallclock_seconds", "gptq_reserve_seconds", "warmup_steps", "val_loss_every", "train_log_every",
        "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult", "tied_embed_init_std",
        "logit_softcap", "rope_base", "rope_dims", "rope_yarn", "ln_scale", "qk_gain_init", "xsa_last_n",
        "skip_gates_enabled", "num_loops", "loop_start", "loop_end", "enable_looping_at", "parallel_start_layer",
        "min_lr", "tied_embed_lr", "matrix_lr", "scalar_lr", "muon_momentum", "muon_backend_steps",
        "muon_momentum_warmup_start", "muon_momentum_warmup_steps", "muon_row_normalize", "beta1", "beta2",
        "adam_eps", "grad_clip_norm", "eval_stride", "adam_wd", "muon_wd", "embed_wd", "ema_decay", "ttt_lora_rank",
        "ttt_lora_lr", "gptq_calibration_batches", "matrix_bits", "embed_bits", "matrix_clip_sigmas",
        "embed_clip_sigmas", "mlp_clip_sigmas", "attn_clip_sigmas", "lqer_rank", "lqer_top_k", "warmdown_frac"]
RENAMED = {"smear_gate_enabled": "smear_gate", "sparse_attn_gate_enabled": "attn_out_gate",
           "sparse_attn_gate_scale": "attn_gate_scale", "gate_window": "gate_dims", "gated_attn_quant_gate": "gate_int8",
           "ttt_chunk_size": "ttt_lora_chunk", "ttt_batch_size": "ttt_lora_batch_docs",
           "ttt_weight_decay": "ttt_lora_wd", "ttt_beta2": "ttt_lora_beta2", "phased_ttt_prefix_docs": "ttt_phase_docs",
           "phased_ttt_num_phases": "ttt_phases", "global_ttt_lr": "ttt_global_lr",
           "global_ttt_momentum": "ttt_global_momentum", "global_ttt_epochs": "ttt_global_epochs",
           "global_ttt_chunk_tokens": "ttt_global_chunk_tokens", "global_ttt_batch_seqs": "ttt_batch_seqs",
           "global_ttt_grad_clip": "ttt_grad_clip", "fused_ce_enabled": "fused_ce"}
# Held by golf's structure rather than a key (checked in test_frontier_structure_is_the_logged_runs).
STRUCTURAL = {"parallel_final_lane", "caseops_enabled", "lqer_enabled", "lqer_factor_bits", "lqer_asym_enabled",
              "lqer_asym_group", "grad_accum_steps", "world_size", "ttt_enabled",
              "tie_embeddings"}
# What golf does not build, or builds one way only, at #1855's value; and the run's paths and identity.
FIXED_OR_NOT_BUILT = {
    "compressor": "pergroup",  # golf: brotli (README: not built)
    "ttt_optimizer": "adam", "ttt_beta1": "0.0", "ttt_k_lora": "True", "ttt_mlp_lora": "True", "ttt_o_lora": "True",
    "ttt_grad_steps": "1", "ttt_eval_seq_len": "2048", "ttt_eval_batches": "",
    "attn_out_gate_enabled": "False", "attn_out_gate_src": "proj", "gated_attn_enabled": "False",
    "gated_attn_init_std": "0.01", "sparse_attn_gate_init_std": "0.0", "embed_lr": "0.6",
    "global_ttt_warmup_start_lr": "0.0", "global_ttt_warmup_chunks": "0", "global_ttt_respect_doc_boundaries": "True",
    "val_doc_fraction": "1.0", "rope_train_seq_len": "2048", "ttt_lora_lr": None,
}
RUN_IDENTITY = {"artifact_dir", "data_dir", "datasets_dir", "distributed", "is_main_process", "local_rank", "logfile",
                "model_path", "quantized_model_path", "rank", "run_id", "tokenizer_path", "train_files", "val_files",
                "val_bytes_files"}


def _logged(value: str, like):
    if isinstance(like, bool):
        return value == "True"
    return type(like)(float(value)) if isinstance(like, (int, float)) else value


def test_every_logged_hyperparameter_is_accounted_for():
    known = set(SAME) | set(RENAMED) | STRUCTURAL | set(FIXED_OR_NOT_BUILT) | RUN_IDENTITY
    assert sorted(set(RUN["hyperparameters"]) - known) == []


def test_frontier_params_equal_the_logged_run():
    cfg = load_config("params/frontier.yaml").to_dict()
    logged = RUN["hyperparameters"]
    pairs = [(k, k) for k in SAME] + list(RENAMED.items())
    wrong = {ours: (cfg[ours], logged[theirs]) for theirs, ours in pairs if cfg[ours] != _logged(logged[theirs], cfg[ours])}
    assert wrong == {}
    for key, value in FIXED_OR_NOT_BUILT.items():
        assert value is None or logged[key] == value, key


def test_frontier_structure_is_the_logged_runs():
    cfg = load_config("params/frontier.yaml")
    logged, constants = RUN["hyperparameters"], RUN["code_constants"]
    assert logged["parallel_final_lane"] == "mean" and cfg.parallel_mode == "lanes_mix"
    assert logged["caseops_enabled"] == "True" and "caseops" in cfg.data_dir and "caseops" in cfg.tokenizer_path
    assert logged["lqer_enabled"] == logged["lqer_asym_enabled"] == "True" and cfg.lqer_rank > 0
    assert int(logged["lqer_asym_group"]) == LQER_GROUP and logged["lqer_factor_bits"] == "4"
    assert int(logged["grad_accum_steps"]) * int(logged["world_size"]) == cfg.grad_accum_total
    assert constants["TTT_LORA_ALPHA"] == cfg.ttt_lora_alpha and constants["TTT_WARM_START_A"] == cfg.ttt_lora_keep_a
    assert [list(c) for c in ns_coefficients(cfg.muon_ns_coefficients)] == constants["muon_ns_coefficients"]
    assert cfg.muon_wd_taper_at == 0  # #1729's taper is not in #1855
    assert logged["tie_embeddings"] == "True"  # golf builds the tied head only


def test_frontier_model_has_the_records_parameter_count():
    assert count_params(build_model(load_config("params/frontier.yaml"), init=False)) == RUN["model_params"]  # 35,945,671


def test_packed_loader_and_segments_equal_the_records(oracle, tmp_path):
    """#1855's DocumentPackingLoader (2 ranks, 6 steps) and its cu_seqlens, against golf's loader and
    ``document_ids`` on the same shards."""
    from golf.attention import document_ids
    from golf.loaders import PackedDocumentLoader
    from golf.shards import write_shard

    packed = oracle["packed"]
    files = []
    for i, tokens in enumerate(packed["shards"]):
        files.append(write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", tokens.numpy().astype("uint16")))
    for rank, steps in enumerate(packed["ranks"]):
        loader = PackedDocumentLoader(files, rank, 2, packed["tokens_per_row"])
        for step in steps:
            x, y = loader.next_batch()
            assert torch.equal(x, step["x"]) and torch.equal(y, step["y"])
            seg = document_ids(x, 1, packed["train_seq_len"])[0]
            bounds = [0] + (torch.nonzero(seg[1:] != seg[:-1]).flatten() + 1).tolist() + [x.size(1)]
            assert bounds == step["cu_seqlens"]
