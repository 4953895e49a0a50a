"""The evaluation modes on 2 gloo processes (CPU) against one process: same scores, each target once,
TTT legal (spec §6, Issue #1017 C3/C4), including a chunk of one sequence where rank 1 trains on nothing."""
import datetime
import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.evaluate import TTTRecord, eval_plain, eval_sliding, eval_ttt
from test_evaluate import T_TINY, tiny_cfg, tiny_luts, tiny_model, tiny_tokens

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
        cfg = tiny_cfg(**kw)
        rec_s, rec_t = TTTRecord(T_TINY), TTTRecord(T_TINY)
        out[name] = {
            "plain": eval_plain(tiny_model(cfg), tokens, tiny_luts(), cfg, progress=False),
            "sliding": eval_sliding(tiny_model(cfg), tokens, tiny_luts(), cfg, record=rec_s, progress=False),
            "ttt": eval_ttt(tiny_model(cfg), tokens, tiny_luts(), cfg, record=rec_t, progress=False),
            "rec_sliding": rec_s,
            "rec_ttt": rec_t,
        }
    return out


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        out = _run_all(tiny_tokens())
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as fh:
            pickle.dump(out, fh)
    finally:
        dist.destroy_process_group()
    # torch 2.13 CPU sometimes aborts at interpreter exit after a gloo group ("terminate called without an
    # active exception", in both ranks, after destroy_process_group returned); the results are on disk, so
    # leave without running the C++ static destructors
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("eval_dist")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    ranks = []
    for r in range(WORLD):
        with open(out_dir / f"rank{r}.pkl", "rb") as fh:
            ranks.append(pickle.load(fh))
    return ranks


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
