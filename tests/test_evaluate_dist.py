"""The evaluation modes on 2 gloo processes (CPU) against one process: same scores, each target once,
TTT legal (spec §6, Issue #1017 C3/C4), including a chunk of one sequence where rank 1 trains on nothing."""

import numpy as np
import pytest

from gloo import run_gloo
from golf.evaluate import eval_plain, eval_sliding, eval_ttt
from golf.scoring import TTTRecord
from conftest import T_TINY, tiny_cfg_32x3, tiny_luts, tiny_model, tiny_tokens

WORLD = 2
CASES = {  # name -> config overrides
    # fp32 tok_emb: with the record's bf16 one, two ranks' bf16 gradients summed differ from one batched
    # bf16 gradient by bf16 rounding (~3e-3 in an element), which 9 SGD steps carry to ~1e-4 in the loss
    "two_seqs_per_chunk": dict(ttt_chunk_tokens=64, fix_embed_fp32=True),
    # bf16 tok_emb as the record; rank 1 holds no sequence and adds zero gradients (collectives still match)
    "one_seq_per_chunk": dict(ttt_chunk_tokens=32, eval_batch_seqs=3),
}


def _run_all(tokens):
    out = {}
    for name, kw in CASES.items():
        cfg = tiny_cfg_32x3(**kw)
        rec_s, rec_t = TTTRecord(T_TINY), TTTRecord(T_TINY)
        out[name] = {
            "plain": eval_plain(tiny_model(cfg), tokens, tiny_luts(), cfg, progress=False),
            "sliding": eval_sliding(tiny_model(cfg), tokens, tiny_luts(), cfg, record=rec_s, progress=False),
            "ttt": eval_ttt(tiny_model(cfg), tokens, tiny_luts(), cfg, record=rec_t, progress=False),
            "rec_sliding": rec_s,
            "rec_ttt": rec_t,
        }
    return out


def _rank_all(rank):
    return _run_all(tiny_tokens())


@pytest.fixture(scope="module")
def two_rank_results():
    return run_gloo(_rank_all, WORLD)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_process(two_rank_results, case):
    one = _run_all(tiny_tokens())[case]
    for got in (r[case] for r in two_rank_results):  # every rank holds the reduced totals
        for mode in ("plain", "sliding", "ttt"):
            assert got[mode]["n_tokens"] == one[mode]["n_tokens"] == T_TINY, mode
            assert got[mode]["n_bytes"] == one[mode]["n_bytes"], mode
            assert got[mode]["val_loss"] == pytest.approx(one[mode]["val_loss"], rel=1e-5), mode
            assert got[mode]["val_bpb"] == pytest.approx(one[mode]["val_bpb"], rel=1e-5), mode
        for rec in ("rec_sliding", "rec_ttt"):
            got[rec].check()  # merged over ranks: each target once, scored before trained on
            np.testing.assert_allclose(got[rec].nll, one[rec].nll, rtol=1e-4, atol=1e-6)
        assert (got["rec_ttt"].trained_in_chunk == one["rec_ttt"].trained_in_chunk).all()
        assert got["ttt"]["ttt_steps"] == one["ttt"]["ttt_steps"]
