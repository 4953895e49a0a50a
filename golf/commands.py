"""What each ``golf`` command does (docs/commands.md), and the checks and run-folder plumbing the
commands share with golf.cli's ``run_submission``; golf.cli parses the command line and calls them.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from golf.config import load_config
from golf.runs import QUANT_BUDGET, RunDir, eval_name
from golf.runtime import GolfError

log = logging.getLogger("golf")
# What an interrupted command leaves, said in its one line (a command updates it as it goes).
KEPT = {"note": "nothing was changed"}


class _BarSafeHandler(logging.StreamHandler):
    """Writes through tqdm, which lifts the progress bar first: a log line never lands on a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(log_file: Path | None = None, main: bool = True) -> None:
    handlers: list[logging.Handler] = []
    if main:
        handlers.append(_BarSafeHandler(sys.stderr))
        if log_file is not None:
            handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, handlers=handlers or [logging.NullHandler()],
                        format="%(asctime)s %(levelname)s %(message)s", force=True)


def _config(args):
    return load_config(args.params, args.set or [])


def _preflight(cfg, splits: tuple[str, ...] = ("train", "val")) -> dict:
    """Every check that needs no run folder, so that a bad value fails before one is made: the config
    for this world size, the tokenizer/data binding (and token ids), the attention kernel."""
    from golf.attention import check_backend_available
    from golf.config_rules import validate_for_world
    from golf.data_binding import check_data_binding
    from golf.val_stream import check_val_length
    from golf.runtime import check_model_fits

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
    validate_for_world(cfg, world)
    binding = check_data_binding(cfg, splits, rank, world)
    if "val" in splits:
        check_val_length(cfg)
    check_model_fits(cfg, training="train" in splits)
    check_backend_available(cfg.attention_backend)
    return binding


def _run_config(run_dir: Path, stage: str, overrides: list[str] | None = None):
    """A trained run's config with the overrides ``golf <stage>`` may apply to it."""
    from golf.config import parse_overrides
    from golf.config_stages import check_stage_overrides

    from golf.runs import CONFIG

    path = RunDir(run_dir).config_file
    if not path.is_file():
        raise GolfError(f"run folder {str(run_dir)!r} has no {CONFIG}: is it a golf run folder?")
    check_stage_overrides(stage, parse_overrides(overrides or []))  # before the cross-key rules it would trip
    return load_config(path, overrides or [])


# --- data ------------------------------------------------------------------------------------

def cmd_data_prepare(args) -> int:
    from golf.tokenizer import prepare_data

    setup_logging()
    if args.keep_order and args.seed is not None:
        raise GolfError("--seed shuffles the documents before the split and --keep-order keeps their corpus order: "
                        "give one")
    KEPT["note"] = f"{args.out} is kept as it was (the dataset being built beside it is dropped)"
    summary = prepare_data(args.corpus, args.out, vocab_size=args.vocab_size, val_docs=args.val_docs,
                           exclude_val_from_tokenizer=args.exclude_val_from_tokenizer,
                           shard_tokens=args.shard_tokens, tokenizer=args.tokenizer, caseops=args.caseops,
                           shuffle_seed=None if args.keep_order else 0 if args.seed is None else args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "shard_digests"}, indent=2, default=str))
    return 0


def cmd_data_download(args) -> int:
    from golf.download import download_shards

    setup_logging()
    summary = download_shards(args.variant, args.out, args.train_shards)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_data_check(args) -> int:
    import pandas as pd

    from golf.data_check import check_data_dir, infer_vocab_size
    from golf.paths import relative_hint

    if not Path(args.dir).is_dir():
        raise GolfError(f"data folder {args.dir!r} does not exist{relative_hint(args.given_paths['dir'])}")
    rows = check_data_dir(args.dir, args.vocab_size)
    totals = []
    for split in dict.fromkeys(r["split"] for r in rows):  # one total per split, in the table's order
        own = [r for r in rows if r["split"] == split]
        files = f"{len(own)} file" + ("" if len(own) == 1 else "s")
        totals.append({"file": f"total ({files})", "split": split, "tokens": sum(r["tokens"] for r in own),
                       "bytes": sum(r["bytes"] for r in own), "vocab_size": ""})
    frame = pd.DataFrame(rows + totals)
    name_width = int(frame["file"].str.len().max())
    header = [f"{'file':<{name_width}}", *frame.columns[1:]]  # the names read left-aligned, like their header
    table = frame.to_string(index=False, header=header, formatters={"file": lambda v: f"{v:<{name_width}}",
                                                                     "tokens": "{:,}".format, "bytes": "{:,}".format})
    lines = table.splitlines()
    width = max(len(line) for line in lines)
    print("\n".join(lines[:len(rows) + 1] + ["-" * width] + lines[len(rows) + 1:]))
    if args.vocab_size is None and infer_vocab_size(args.dir) is None:
        print("note: neither prepare.json nor a tokenizer says this folder's vocab size, so ids were checked "
              "against 65,536 only; give --vocab-size to check them against the real one")
    return 0


# --- model / train ---------------------------------------------------------------------------

def cmd_model_info(args) -> int:
    from golf.model import model_info

    from golf.runtime import check_model_fits

    cfg = _config(args)
    check_model_fits(cfg, training=False)
    print(json.dumps(model_info(cfg), indent=2))
    return 0


def _shared_run_dir(args, dist) -> Path:
    """Rank 0 picks (or checks) the run folder; the others learn it through a broadcast."""
    import torch.distributed as tdist

    from golf.paths import resolve
    from golf.runs import new_run_dir

    chosen: list = [None]
    if dist.is_main:
        try:
            chosen = [RunDir(resolve(args.run_dir)).claim().path if args.run_dir else new_run_dir(resolve(args.outputs),
                                                                                            args.study)]
        except GolfError as exc:
            chosen = [exc]  # the other ranks must hear of it too, or they wait in the broadcast forever
    if dist.distributed:
        tdist.broadcast_object_list(chosen, src=0)
    if isinstance(chosen[0], GolfError):
        raise chosen[0]
    return Path(chosen[0])


def cmd_train(args) -> int:
    from golf.runtime import init_distributed
    from golf.train import train

    cfg = _config(args)
    binding = _preflight(cfg)
    dist, device = init_distributed(cfg.device)
    run_dir = _shared_run_dir(args, dist)
    KEPT["note"] = (f"run folder {run_dir} is kept as it is, an interrupted run (its metrics and logs so far); "
                    "it is never trained into again: train into a new folder")
    run = RunDir(run_dir)
    setup_logging(run.train_log, dist.is_main)
    for warning in binding["warnings"] if dist.is_main else []:  # said on the console already: the log keeps it
        _log_to_file(run.train_log, f"WARNING {warning}")
    log.info("run folder %s, device %s (ready in %.1f s), world size %d", run_dir, device, dist.device_start_s,
             dist.world_size)
    if dist.is_main:
        from golf.runtime import atomic_write_json

        atomic_write_json(run.run_info, {"params_file": args.params, "set": args.set or [],
                                                 "world_size": dist.world_size,
                                                 "data_warnings": binding["warnings"]})
    try:
        result = train(cfg, run_dir, dist, device)
    except GolfError as exc:  # e.g. a diverged loss: the run's own log says why it ended
        if dist.is_main:
            _log_to_file(run.train_log, f"ERROR {exc}")
        raise
    if dist.is_main:
        run.release()
        print(json.dumps({"run_dir": str(run_dir), **result.summary}, indent=2))
    _destroy()
    return 0


def _log_to_file(path: Path, line: str) -> None:
    """One line into a log file only (the console gets the error line from main)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.absolute():
            handler.stream.write(f"{line}\n")
            handler.flush()


def _log_device(dist, device) -> None:
    log.info("device %s (ready in %.1f s), world size %d", device, dist.device_start_s, dist.world_size)


def _destroy() -> None:
    """The end of a command that succeeded on every rank: the ranks meet, then the process group goes (a
    gloo rank that tore it down while its peer was still finishing sometimes aborted at exit)."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def cmd_quantize(args) -> int:
    from golf.pipeline import check_quantize, quantize_run
    from golf.runtime import init_distributed

    cfg = _run_config(args.run_dir, "quantize", args.set)
    _preflight(cfg)
    check_quantize(Path(args.run_dir), force=args.force)  # before the device starts, as the checks above
    KEPT["note"] = (f"run folder {args.run_dir} is kept as it was (no new artifact written"
                    f"{'; its artifact and results stay in place' if args.force else ''})")
    dist, device = init_distributed(cfg.device)
    setup_logging(RunDir(args.run_dir).quantize_log, dist.is_main)
    _log_device(dist, device)
    budget = quantize_run(Path(args.run_dir), cfg, dist, device, force=args.force,
                          code_modes=tuple(args.modes))
    if dist.is_main:
        width = max(len(k) for k in budget)
        for key, value in budget.items():
            if isinstance(value, (dict, list)):  # e.g. LQER's per-tensor errors: in quant_budget.json
                value = f"{len(value)} entries ({QUANT_BUDGET})"
            print(f"{key:<{width}}  {value:>14,}" if isinstance(value, int) and not isinstance(value, bool)
                  else f"{key:<{width}}  {value!s:>14}")
    _destroy()
    return 0


def cmd_evaluate(args) -> int:
    from golf.pipeline import check_eval_tokenizer, check_evaluate, evaluate_run
    from golf.runtime import init_distributed

    run = RunDir(args.run_dir)
    modes = list(dict.fromkeys(args.mode))  # each once, in the order given
    cfg = _run_config(args.run_dir, "evaluate", args.set)
    binding = _preflight(cfg, ("val",))
    names = [check_evaluate(run.path, mode, source=args.source, force=args.force) for mode in modes]
    check_eval_tokenizer(run.path, cfg, args.allow_other_tokenizer)
    if {"lora_ttt", "phased_ttt"} & set(modes):
        from golf.lora_ttt import check_config

        check_config(cfg)
    dist, device = init_distributed(cfg.device)
    for i, mode in enumerate(modes):
        written = f"{', '.join(names[:i])} written, " if i else ""
        KEPT["note"] = f"run folder {args.run_dir} is kept ({written}no {names[i]} written)"
        log_file = run.eval_log(mode, raw=args.source == "raw")  # (a raw result's log stays beside model.pt's)
        if dist.is_main:  # the log of the result it makes, not of an earlier attempt
            log_file.unlink(missing_ok=True)
        setup_logging(log_file, dist.is_main)
        for warning in binding["warnings"] if dist.is_main else []:
            _log_to_file(log_file, f"WARNING {warning}")
        _log_device(dist, device)
        if i:  # each mode as its own process would see it: no graph or cached memory of the last
            _fresh_device_state(device)
        result = evaluate_run(run.path, mode, cfg, dist, device, source=args.source, force=args.force,
                              allow_other_tokenizer=args.allow_other_tokenizer)
        if dist.is_main:
            print(json.dumps(result, indent=2), flush=True)
    _destroy()
    return 0


def _fresh_device_state(device) -> None:
    import gc

    import torch

    torch._dynamo.reset()  # inductor's compiled code stays cached on disk: the next graph builds warm
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def cmd_run(args) -> int:
    from golf.study import run_study

    setup_logging()
    study = Path(args.outputs) / (args.study or Path(args.params).stem)
    KEPT["note"] = (f"study {study} is kept: finished seeds stay, a seed under way is left as an interrupted run; "
                    "the same command resumes the study")
    index, failures = run_study(args.params, args.seeds, study=args.study, overrides=args.set or [],
                                outputs=args.outputs, kernel=args.kernel, nproc=args.nproc)
    for line in failures:
        print(f"golf: error: {line}", file=sys.stderr)
    print(index)
    return 1 if failures else 0


def cmd_study(args) -> int:
    from dataclasses import replace

    from golf.paths import resolve, resolve_typed
    from golf.study import run_arms
    from golf.study_executors import LocalExecutor, RayExecutor
    from golf.study_plan import Study, parse_arm

    setup_logging()
    # each arm's params file read as --params is (one only the current folder holds is that one)
    arms = [replace(a, params=str(resolve_typed(a.params, params=True)[0])) for a in map(parse_arm, args.arms)]
    folder = resolve(args.outputs) / args.study
    KEPT["note"] = (f"study {folder} is kept: finished runs stay, a run under way is left as an interrupted run; "
                    "the same command resumes the study")
    st = Study(folder, arms, args.seeds, args.set or [], args.modes, args.nproc, args.kernel,
               notebooks=not args.without_notebooks, lead_arms=args.lead_arms)
    if args.ray:
        executor_for = lambda: RayExecutor(args.ray, args.nproc, gpus=args.gpus != ["cpu"])  # noqa: E731
    else:
        executor_for = lambda: LocalExecutor(args.gpus, args.nproc)  # noqa: E731
    page, failures = run_arms(st, executor_for, archive=resolve(args.archive) if args.archive else None,
                              restore=resolve(args.restore) if args.restore else None,
                              stop_taking_after=args.stop_taking_after)
    for line in failures:
        print(f"golf: error: {line}", file=sys.stderr)
    print(page or f"{folder} (no comparison yet)")
    return 1 if failures else 0


def cmd_compare(args) -> int:
    from golf.compare import close_figures, compare, readable

    setup_logging()
    result = compare(args.studies, names=args.names, stage=args.stage, out_dir=args.out)
    close_figures(result)  # saved; a notebook shows them, the command does not
    print(readable(result["summary"]).to_string(index=False, na_rep="–"))  # as compare.html shows it
    if len(result["summary"]) > 1:
        paired = "paired_p" in result["summary"]
        print("test: Welch's t-test over seeds" + (", and the paired t-test (paired_ columns) where a study shares "
              "the baseline's trained weights seed by seed" if paired else " (no study shares the baseline's trained "
              "weights seed by seed, which a paired test needs)") + "; see compare.html")
    if len(result["keys"]):
        print("\nkeys that differ:\n" + result["keys"].to_string(index=False))
    print(result["out_dir"] / "compare.html")
    return 0


def cmd_config(args) -> int:
    """The config as a tree of sections, in YAML a params file may hold, each key's type and help beside it."""
    import yaml

    from golf.config import describe_keys, section_title

    cfg = load_config(args.params, args.set or []).to_dict() if args.params or args.set else None
    section = None
    for d in describe_keys():
        if d["section"] != section:
            section = d["section"]
            print(f"{section}:  # {section_title(section).split(': ', 1)[1]}")
        value = cfg[d["key"]] if cfg is not None else d["default"]
        mark = "" if cfg is None or value == d["default"] else f" (record: {d['default']!r})"
        shown = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
        print(f"  {d['key']}: {shown}  # [{d['type']}] {d['help']}{mark}")
    return 0


def cmd_export(args) -> int:
    from golf.submission import export_submission

    out = export_submission(Path(args.run_dir), Path(args.out), allow_over_budget=args.allow_over_budget,
                            allow_mixed_tokens=args.allow_mixed_tokens,
                            allow_other_tokenizer=args.allow_other_tokenizer)
    sub = json.loads((out / "submission.json").read_text())
    print(f"code {sub['bytes_code']:,} bytes (train_gpt.py) + model {sub['bytes_model']:,} bytes = "
          f"{sub['bytes_total']:,} bytes")
    print(out)
    return 0


def cmd_report(args) -> int:
    from golf.report import build_run_report

    print(build_run_report(Path(args.run_dir)))
    return 0
