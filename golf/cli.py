"""``golf …`` / ``python -m golf …``: the commands of INTERFACE.md.

Every command resolves its config (params file + ``--set``) before any work starts, so an
unknown key or a wrongly typed value fails at once, naming the key.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from golf.config import ConfigError, load_config
from golf.runtime import GolfError

log = logging.getLogger("golf")


def setup_logging(log_file: Path | None = None, main: bool = True) -> None:
    handlers: list[logging.Handler] = []
    if main:
        handlers.append(logging.StreamHandler(sys.stderr))
        if log_file is not None:
            handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, handlers=handlers or [logging.NullHandler()],
                        format="%(asctime)s %(levelname)s %(message)s", force=True)


def _config(args):
    return load_config(args.params, args.set or [])


def _run_config(run_dir: Path, overrides: list[str] | None = None):
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise GolfError(f"run folder {str(run_dir)!r} has no config.yaml: is it a golf run folder?")
    return load_config(path, overrides or [])


# --- data ------------------------------------------------------------------------------------

def cmd_data_prepare(args) -> int:
    from golf.tokenizer import prepare_data

    setup_logging()
    summary = prepare_data(args.corpus, args.out, vocab_size=args.vocab_size, val_docs=args.val_docs,
                           exclude_val_from_tokenizer=args.exclude_val_from_tokenizer,
                           shard_tokens=args.shard_tokens)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_data_download(args) -> int:
    from golf.data import download_shards

    setup_logging()
    summary = download_shards(args.variant, args.out, args.train_shards)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_data_check(args) -> int:
    import pandas as pd

    from golf.data import check_data_dir

    rows = check_data_dir(args.dir, args.vocab_size)
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


# --- model / train ---------------------------------------------------------------------------

def cmd_model_info(args) -> int:
    from golf.model import model_info

    print(json.dumps(model_info(_config(args)), indent=2))
    return 0


def _shared_run_dir(args, dist) -> Path:
    """Rank 0 picks (or checks) the run folder; the others learn it through a broadcast."""
    import torch.distributed as tdist

    from golf.runtime import claim_run_dir, new_run_dir

    chosen = [None]
    if dist.is_main:
        run_dir = claim_run_dir(args.run_dir) if args.run_dir else new_run_dir(args.outputs, args.study)
        chosen = [str(run_dir)]
    if dist.distributed:
        tdist.broadcast_object_list(chosen, src=0)
    return Path(chosen[0])


def cmd_train(args) -> int:
    from golf.runtime import init_distributed
    from golf.train import train

    cfg = _config(args)
    dist, device = init_distributed(cfg.device)
    run_dir = _shared_run_dir(args, dist)
    setup_logging(run_dir / "train.log", dist.is_main)
    log.info("run folder %s, device %s, world size %d", run_dir, device, dist.world_size)
    result = train(cfg, run_dir, dist, device)
    if dist.is_main:
        print(json.dumps({"run_dir": str(run_dir), **result.summary}, indent=2))
    _destroy()
    return 0


def _destroy() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def cmd_quantize(args) -> int:
    from golf.pipeline import quantize_run
    from golf.runtime import init_distributed

    cfg = _run_config(args.run_dir, args.set)
    dist, device = init_distributed(cfg.device)
    setup_logging(Path(args.run_dir) / "quantize.log", dist.is_main)
    budget = quantize_run(Path(args.run_dir), cfg, dist, device, force=args.force)
    if dist.is_main:
        width = max(len(k) for k in budget)
        for key, value in budget.items():
            print(f"{key:<{width}}  {value:>14,}" if isinstance(value, int) and not isinstance(value, bool)
                  else f"{key:<{width}}  {value!s:>14}")
    _destroy()
    return 0


def cmd_evaluate(args) -> int:
    from golf.pipeline import evaluate_run
    from golf.runtime import init_distributed

    cfg = _run_config(args.run_dir, args.set)
    dist, device = init_distributed(cfg.device)
    setup_logging(Path(args.run_dir) / f"eval_{args.mode}.log", dist.is_main)
    result = evaluate_run(Path(args.run_dir), args.mode, cfg, dist, device, source=args.source, force=args.force)
    if dist.is_main:
        print(json.dumps(result, indent=2))
    _destroy()
    return 0


def cmd_run(args) -> int:
    from golf.notebooks import run_study

    setup_logging()
    report = run_study(args.params, args.seeds, study=args.study, overrides=args.set or [],
                       outputs=args.outputs, kernel=args.kernel, nproc=args.nproc)
    print(report)
    return 0


def cmd_export(args) -> int:
    from golf.submission import export_submission

    out = export_submission(Path(args.run_dir), Path(args.out))
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="golf", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add_params(sp, required=True):
        sp.add_argument("--params", required=required, help="params YAML file (see params/)")
        sp.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override params keys")

    data = sub.add_parser("data", help="prepare, download or check token shards")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="train the SentencePiece BPE tokenizer and write shards")
    prep.add_argument("--corpus", required=True, help="built-in corpus name(s), comma-separated, or a path")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--vocab-size", type=int, default=8192)
    prep.add_argument("--val-docs", type=int, default=50_000, help="first N documents go to val")
    prep.add_argument("--shard-tokens", type=int, default=10**8, help="tokens per shard (the record: 1e8)")
    prep.add_argument("--exclude-val-from-tokenizer", action="store_true",
                      help="fix of spec 9.18: train the tokenizer on train documents only")
    prep.set_defaults(func=cmd_data_prepare)
    dl = dsub.add_parser("download", help="fetch the official shards from the Hugging Face dataset")
    dl.add_argument("--variant", default="sp8192")
    dl.add_argument("--out", required=True)
    dl.add_argument("--train-shards", type=int, default=80)
    dl.set_defaults(func=cmd_data_download)
    chk = dsub.add_parser("check", help="validate every shard and print a table")
    chk.add_argument("dir")
    chk.add_argument("--vocab-size", type=int, default=None, help="default: from tokenizer.model beside the shards")
    chk.set_defaults(func=cmd_data_check)

    info = sub.add_parser("model-info", help="print parameter count, bank shapes and layer plans as JSON")
    add_params(info)
    info.set_defaults(func=cmd_model_info)

    tr = sub.add_parser("train", help="train (one process, or under torchrun)")
    add_params(tr)
    tr.add_argument("--run-dir", help="run folder (default: OUTPUTS/STUDY/<timestamp>)")
    tr.add_argument("--study", default="default")
    tr.add_argument("--outputs", default="outputs")
    tr.set_defaults(func=cmd_train)

    q = sub.add_parser("quantize", help="GPTQ + Brotli artifact final_model.int6.ptz")
    q.add_argument("--run-dir", required=True)
    q.add_argument("--set", nargs="*", metavar="KEY=VALUE")
    q.add_argument("--force", action="store_true", help="replace an existing artifact")
    q.set_defaults(func=cmd_quantize)

    ev = sub.add_parser("evaluate", help="evaluate the artifact; writes eval_<mode>.json")
    ev.add_argument("--run-dir", required=True)
    ev.add_argument("--mode", required=True, choices=("plain", "sliding", "ttt"))
    ev.add_argument("--source", default="artifact", choices=("artifact", "raw"),
                    help="the quantized artifact (default) or the raw model.pt")
    ev.add_argument("--set", nargs="*", metavar="KEY=VALUE")
    ev.add_argument("--force", action="store_true", help="replace an existing eval_<mode>.json")
    ev.set_defaults(func=cmd_evaluate)

    rn = sub.add_parser("run", help="execute the notebooks with papermill for each seed, then the seed analysis")
    add_params(rn)
    rn.add_argument("--seeds", nargs="+", type=int, required=True)
    rn.add_argument("--study", default=None)
    rn.add_argument("--outputs", default="outputs")
    rn.add_argument("--kernel", default=None, help="Jupyter kernel name (default: this Python)")
    rn.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun when > 1)")
    rn.set_defaults(func=cmd_run)

    ex = sub.add_parser("export-submission", help="write a challenge record folder")
    ex.add_argument("--run-dir", required=True)
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, GolfError) as exc:
        print(f"golf: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
