"""Regenerate tests/fixtures/pr1855_*: numbers made by PR #1855's own code, for tests/test_oracle.py.

    python dev/oracle_fixtures.py --mirror PATH_TO_A_CLONE_OF_openai/parameter-golf [--out tests/fixtures]

Needs golf's test environment plus protobuf (sentencepiece's proto output).

The record's files are read from the clone's git objects into a temporary folder and run there on
CPU in fp32 (FlashAttention replaced by an SDPA stand-in, torch.compile by the identity); nothing of
them is written into golf. What is saved (docs/record.md §8.1):
- pr1855_oracle.pt: a small model of the record's own GPT with every parameter randomized, its
  initial weights at a seed, logits and losses on rows with BOS mid-row (causal and document
  attention, plain and looped), per-token TTT losses through its LoRA forward, one Muon run on
  fixed gradients, LQER and gate packings, the quantizer's storage classes, and its LR schedule;
- pr1855_caseops.json: its CaseOps encoding of hard strings, and the per-piece original byte
  counts of their pieces under its shipped tokenizer;
- pr1855_run.json: the hyperparameters its train_seed42.log prints, a few constants of its code
  that the log does not print, and its model_params line.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

RECORD = "records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
FILES = ("train_gpt.py", "lossless_caps.py", "train_seed42.log",
         "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model")
# The small model, in the record's environment variables (golf's keys: tests/test_oracle.py).
SMALL = dict(VOCAB_SIZE=64, NUM_LAYERS=6, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=2.0, ROPE_DIMS=4,
             XSA_LAST_N=6, NUM_LOOPS=2, LOOP_START=1, LOOP_END=2, PARALLEL_START_LAYER=4, TRAIN_SEQ_LEN=32,
             EVAL_SEQ_LEN=32, GATE_WINDOW=8, SMEAR_GATE_ENABLED=1, SPARSE_ATTN_GATE_ENABLED=1,
             SPARSE_ATTN_GATE_SCALE=0.5, GATED_ATTN_QUANT_GATE=1, FUSED_CE_ENABLED=0, TTT_LORA_RANK=4, SEED=7)
HARD_STRINGS = [
    "Hello World", "NASA's Launch", "McDonald", "CPUs and GPUs", "iPhone", "A", "I am OK.", "ABCdef", "abcDEF",
    "x1Y2Z", "R2-D2", "e.g. U.S.A.", "ÉCOLE École éCOLE", "Straße STRASSE", "İstanbul", "ΣΟΦΙΑ σοφία",
    "hello 😀 World", "McKay's iPod-Touch", "MacBook Pro M2", "JSON-RPC over HTTPs", "OpenAI GPT-4o",
    "\ue000 sentinel \ue001 title \ue004 esc", "\ue001Hello", "tHE qUICK bROWN", "camelCaseWord", "snake_Case_WORD",
    "line one\nLine Two\r\nLINE THREE\n", "  Leading  Double  SPACES ", "123 456", "",
]


def extract(mirror: Path, where: Path) -> None:
    for name in FILES:
        blob = subprocess.run(["git", "--git-dir", str(mirror), "show", f"HEAD:{RECORD}/{name}"],
                              check=True, capture_output=True).stdout
        (where / Path(name).name).write_bytes(blob)


def _sdpa(q, k, v, causal=True, **_):
    """(B, T, H, hd) causal GQA through SDPA: FlashAttention's stand-in on CPU."""
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                       enable_gqa=True)
    return y.transpose(1, 2)


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=True, **_):
    """(N, H, hd) causal attention inside each [cu[i], cu[i+1]) segment (padding entries repeat the end)."""
    out = torch.empty_like(q)
    cu = cu_seqlens_q.tolist()
    for a, b in zip(cu, cu[1:]):
        if b > a:
            out[a:b] = _sdpa(q[None, a:b], k[None, a:b], v[None, a:b])[0]
    return out


def load_record(where: Path):
    os.environ.update({k: str(v) for k, v in SMALL.items()})
    sys.modules["flash_attn_interface"] = types.SimpleNamespace(flash_attn_func=_sdpa, flash_attn_varlen_func=_varlen)
    torch.compile = lambda fn=None, **_: fn if fn is not None else (lambda f: f)
    sys.path.insert(0, str(where))
    spec = importlib.util.spec_from_file_location("pr1855", where / "train_gpt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.BOS_ID = 1
    return mod


def randomize(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        model.tok_emb.weight.copy_(model.tok_emb.weight.bfloat16().float())  # golf keeps it in bf16, as the record


def rows(seed: int, V: int, bos_at: list[list[int]], T: int = 48):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (len(bos_at), T), generator=g)
    for r, where in enumerate(bos_at):
        ids[r, where] = 1
    return ids, torch.randint(0, V, ids.shape, generator=g)


def model_outputs(mod, h) -> dict:
    torch.manual_seed(h.seed)
    init_model = mod.GPT(h)
    init = {k: v.bfloat16().float() for k, v in init_model.state_dict().items()}  # train_model casts to bf16 and back
    model = mod.GPT(h).eval()
    for m in model.modules():
        if isinstance(m, mod.MLP):
            m.use_fused = False
    randomize(model, 1)
    ids, targets = rows(2, h.vocab_size, [[0, 17, 30], [5, 40]])
    out = {"init": init, "state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "ids": ids,
           "targets": targets, "logits": {}, "loss": {}}
    with torch.no_grad():
        for looped in (False, True):
            model.looping_active = looped
            phase = "looped" if looped else "plain"
            out["logits"][f"causal_{phase}"] = model.forward_logits(ids)
            out["loss"][f"causal_{phase}"] = model(ids, targets)
            doc_logits, doc_loss = [], []
            for r in range(ids.size(0)):  # one packed row at a time, as the record's loader feeds it
                x = ids[r]
                cu, max_len = mod._build_cu_seqlens((x == 1).nonzero().flatten().tolist(), x.numel(), x.device,
                                                    h.train_seq_len, 64)
                doc_logits.append(model.forward_logits(x[None], cu_seqlens=cu, max_seqlen=max_len)[0])
                doc_loss.append(model(x[None], targets[r][None], cu_seqlens=cu, max_seqlen=max_len))
            out["logits"][f"document_{phase}"] = torch.stack(doc_logits)
            out["loss"][f"document_{phase}"] = torch.stack(doc_loss)
        model.looping_active = True  # TTT scores the looped model; one document a row, BOS first
        ttt_ids, ttt_targets = rows(3, h.vocab_size, [[0], [0]], T=h.eval_seq_len)  # TTT rows are at most this long
        lora = mod.BatchedTTTLoRA(2, model, h.ttt_lora_rank)
        g = torch.Generator().manual_seed(4)
        for p in lora.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
        out["ttt"] = {"ids": ttt_ids, "targets": ttt_targets, "lora": lora.state_dict(),
                      "alpha": mod.BatchedLinearLoRA._ALPHA, "nll": model.forward_ttt(ttt_ids, ttt_targets, lora)}
    _, meta = mod.gptq_mixed_quantize(model.state_dict(), {}, types.SimpleNamespace(**{**vars(type(h)), "lqer_enabled": False}))
    out["storage"] = meta
    return out


def muon_run(mod) -> dict:
    g = torch.Generator().manual_seed(5)
    p0 = 0.1 * torch.randn(3, 16, 8, generator=g)
    grads = [torch.randn(3, 16, 8, generator=g) for _ in range(3)]
    p = torch.nn.Parameter(p0.clone())
    opt = mod.Muon([p], lr=0.026, momentum=0.97, backend_steps=5, weight_decay=0.095, row_normalize=True)
    for k, grad in enumerate(grads):
        opt.param_groups[0]["lr"] = 0.026 * (1.0 - 0.2 * k)
        p.grad = grad.clone()
        opt.step()
    return {"p0": p0, "grads": grads, "lrs": [0.026 * (1.0 - 0.2 * k) for k in range(3)], "momentum": 0.97,
            "weight_decay": 0.095, "p": p.detach().clone()}


def quant_packings(mod) -> dict:
    g = torch.Generator().manual_seed(6)
    A, B = torch.randn(24, 4, generator=g), torch.randn(4, 48, generator=g)  # 192 entries: groups of 64
    B_odd = torch.randn(4, 40, generator=g)  # 160 entries: the symmetric fallback
    gate = torch.randn(8, 12, generator=g)
    return {"A": A, "B": B, "B_odd": B_odd, "asym": mod._lqer_pack_asym(A, B, 64), "sym": mod._lqer_pack(A, B_odd, 4),
            "gate": gate, "gate_int8": mod._quantize_gate_int8_row(gate)}


def packed_batches(mod, where: Path) -> dict:
    """The record's DocumentPackingLoader on two small shards: 2 ranks x 6 steps of 96-token rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from golf.shards import write_shard

    g = torch.Generator().manual_seed(8)
    shards = []
    for i, n in enumerate((700, 500)):
        tokens = torch.randint(2, 64, (n,), generator=g)
        tokens[torch.randint(0, n, (n // 25,), generator=g)] = 1
        tokens[:3] = torch.tensor([5, 6, 1])  # the first BOS is not at 0: the loader starts there
        write_shard(where / f"fineweb_train_{i:06d}.bin", tokens.numpy().astype("uint16"))
        shards.append(tokens)
    empty = torch.empty
    torch.empty = lambda *a, pin_memory=False, **k: empty(*a, **k)  # no pinned memory without CUDA
    torch.Tensor.pin_memory = lambda self, *a, **k: self
    out = {"shards": shards, "tokens_per_row": 96, "train_seq_len": 32, "ranks": []}
    for rank in range(2):
        h = types.SimpleNamespace(rank=rank, world_size=2, train_seq_len=32,
                                  train_files=str(where / "fineweb_train_*.bin"))
        loader = mod.DocumentPackingLoader(h, torch.device("cpu"))
        steps = []
        for _ in range(6):
            x, y, cu, max_len = loader.next_batch(96 * 2 * 8, 8)  # global tokens, accumulation: 96 a row
            cu = cu.tolist()
            steps.append({"x": x, "y": y, "cu_seqlens": cu[:cu.index(96) + 1]})
        out["ranks"].append(steps)
    torch.empty = empty
    return out


def lr_schedule(mod, h) -> dict:
    fracs = [i / 20 for i in range(21)]
    h2 = types.SimpleNamespace(warmdown_frac=0.85, min_lr=0.1)
    # lr_mul is local to train_model: the same rule, read back from its source to fail loudly if it changes
    src = Path(mod.__file__).read_text()
    body = re.search(r"    def lr_mul\(frac\):\n((?:        .*\n)+)", src).group(0)
    scope: dict = {"h": h2}
    exec(body.replace("    def lr_mul", "def lr_mul").replace("\n        ", "\n    "), scope)
    return {"warmdown_frac": 0.85, "min_lr": 0.1, "fracs": fracs, "lr_mul": [scope["lr_mul"](f) for f in fracs]}


def caseops(mod_dir: Path) -> dict:
    import sentencepiece as spm

    sys.path.insert(0, str(mod_dir))
    import lossless_caps as lc

    sp = spm.SentencePieceProcessor(model_file=str(mod_dir / FILES[3].split("/")[-1]))
    cases = []
    for text in HARD_STRINGS:
        enc = lc.encode_lossless_caps_v2(text)
        assert lc.decode_lossless_caps_v2(enc) == text
        proto = sp.encode(enc, return_type="proto")  # the record's encode_as_immutable_proto, in sentencepiece 0.2.3
        pieces = [p.surface for p in proto.pieces]
        char_at = {0: 0}  # the proto's byte offsets as character offsets (golf reads SentencePiece's offset_mapping)
        for i, c in enumerate(enc):
            char_at[len(enc[:i + 1].encode("utf-8"))] = i + 1
        counts = lc.surface_piece_original_byte_counts(pieces, text_transform_name=lc.LOSSLESS_CAPS_CASEOPS_V1)
        cases.append({"text": text, "encoded": enc, "ids": sp.encode(enc), "pieces": pieces,
                      "offsets": [[char_at[p.begin], char_at[p.end]] for p in proto.pieces], "piece_bytes": list(counts)})
    return {"transform": lc.LOSSLESS_CAPS_CASEOPS_V1, "operators": lc.get_text_transform_control_symbols(
        lc.LOSSLESS_CAPS_CASEOPS_V1), "operator_ids": [sp.piece_to_id(c) for c in lc.get_text_transform_control_symbols(
        lc.LOSSLESS_CAPS_CASEOPS_V1)], "cases": cases}


# The val stream of the TTT runs: document lengths (BOS first) chosen so that batches of 4 leave a partial
# one, several documents are longer than the 32-token window, and the global phases cross their chunks.
TTT_DOC_LENS = [70, 9, 33, 5, 48, 120, 17, 64, 3, 40, 90]
TTT_RUNS = {  # name: (phased_ttt_prefix_docs, phased_ttt_num_phases, TTT_WARM_START_A)
    "lora_ttt": (0, 1, True), "phased_ttt": (7, 2, True), "phased_ttt_cold_a": (7, 2, False)}
TTT_SEED = 11


def ttt_procedures(mod, h, state_dict) -> dict:
    """The record's eval_val_ttt_phased on one small val stream (golf's keys: tests/test_oracle.py):
    per-document LoRA TTT alone, and with two global phases, with and without warm A."""
    g = torch.Generator().manual_seed(9)
    V = h.vocab_size
    stream = torch.cat([torch.cat([torch.tensor([1]), torch.randint(2, V, (n - 1,), generator=g)])
                        for n in TTT_DOC_LENS])
    luts = {"base_bytes": torch.randint(1, 4, (V,), generator=g, dtype=torch.int16),
            "has_leading_space": torch.rand(V, generator=g) < 0.3, "is_boundary": torch.zeros(V, dtype=torch.bool)}
    luts["is_boundary"][:2] = True
    luts["base_bytes"][:2] = 0
    val_data = types.SimpleNamespace(val_tokens=stream, base_bytes_lut=luts["base_bytes"],
                                     has_leading_space_lut=luts["has_leading_space"],
                                     is_boundary_token_lut=luts["is_boundary"], caseops_enabled=False, val_bytes=None)
    # ttt_lora_lr 0.001: at 0.01 AdamW (beta1 0, eps 1e-10) turns one-ulp differences into 1e-3 of loss
    settings = dict(ttt_batch_size=4, ttt_chunk_size=8, ttt_eval_seq_len=32, eval_seq_len=32, ttt_lora_lr=0.001,
                    ttt_beta2=0.99, ttt_weight_decay=0.5, ttt_lora_rank=4, global_ttt_lr=0.01,
                    global_ttt_chunk_tokens=64, global_ttt_batch_seqs=2, rank=0, world_size=1,
                    run_id="golf_oracle", seed=TTT_SEED)
    out = {"stream": stream, "luts": luts, "settings": settings, "runs": {}}
    for name, (prefix, phases, warm) in TTT_RUNS.items():
        model = mod.GPT(h).eval()
        for m in model.modules():
            if isinstance(m, mod.MLP):
                m.use_fused = False
        model.load_state_dict(state_dict)
        model.looping_active = True
        hh = types.SimpleNamespace(**{**vars(type(h)), **vars(h), **settings, "phased_ttt_prefix_docs": prefix,
                                      "phased_ttt_num_phases": phases})
        mod.BatchedLinearLoRA._WARM_START_A = warm
        torch.manual_seed(TTT_SEED)  # the adapters' A come from the global generator
        loss, bpb = mod.eval_val_ttt_phased(hh, model, torch.device("cpu"), val_data, model.forward_ttt)
        out["runs"][name] = {"prefix_docs": prefix, "phases": phases, "warm_a": warm, "val_loss": loss,
                             "val_bpb": bpb}
        if prefix:  # the global phases trained the base model
            out["runs"][name]["state_dict"] = {k: v.clone() for k, v in model.state_dict().items()}
    mod.BatchedLinearLoRA._WARM_START_A = True
    return out


def run_table(where: Path, mod) -> dict:
    log = (where / "train_seed42.log").read_text()
    hp = {}
    for line in log.split("Hyperparameters:\n", 1)[1].splitlines():
        m = re.match(r"  (\w+): (.*)$", line)
        if not m:  # the block ends at the first line that is not "  key: value"
            break
        hp[m.group(1)] = m.group(2)
    return {"source": f"{RECORD}/train_seed42.log", "hyperparameters": hp,
            "model_params": int(re.search(r"model_params:(\d+)", log).group(1)),
            "code_constants": {"TTT_LORA_ALPHA": mod.BatchedLinearLoRA._ALPHA,
                               "TTT_WARM_START_A": mod.BatchedLinearLoRA._WARM_START_A,
                               "muon_ns_coefficients": [list(c) for c in mod._PE_COEFFS]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirror", required=True, type=Path, help="a clone (or bare git dir) of openai/parameter-golf")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    args = ap.parse_args()
    mirror = args.mirror / ".git" if (args.mirror / ".git").exists() else args.mirror
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        extract(mirror, where)
        mod = load_record(where)
        h = mod.Hyperparameters()
        oracle = {"env": SMALL, **model_outputs(mod, h), "muon": muon_run(mod), "quant": quant_packings(mod),
                  "lr": lr_schedule(mod, h), "packed": packed_batches(mod, where)}
        oracle["ttt_procedures"] = ttt_procedures(mod, h, oracle["state_dict"])
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(oracle, args.out / "pr1855_oracle.pt")
        (args.out / "pr1855_caseops.json").write_text(json.dumps(caseops(where), indent=1) + "\n")
        (args.out / "pr1855_run.json").write_text(json.dumps(run_table(where, mod), indent=1) + "\n")
    print(f"wrote {args.out}/pr1855_oracle.pt, pr1855_caseops.json, pr1855_run.json")


if __name__ == "__main__":
    main()
