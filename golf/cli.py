"""``golf …`` / ``python -m golf …``: the command line of the user contract (README, docs/commands.md),
parsed here and run by golf.commands; and ``run_submission``, what a submission's train_gpt.py runs.

Every command resolves its config (params file + ``--set``) before any work starts, so an
unknown key or a wrongly typed value fails at once, naming the key.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from golf.commands import KEPT, _destroy, _preflight, _shared_run_dir, cmd_compare, cmd_config, cmd_data_check, \
    cmd_data_download, cmd_data_prepare, cmd_evaluate, cmd_export, cmd_model_info, cmd_quantize, cmd_report, cmd_run, \
    cmd_study, cmd_train, setup_logging
from golf.config import EVAL_MODES, ConfigError, load_config
from golf.runs import ARTIFACT, MODEL, REPORT, RunDir, eval_name
from golf.runtime import GolfError

log = logging.getLogger("golf")


def run_submission(values: dict, modes: tuple[str, ...], code_bytes: int) -> int:
    """The exported train_gpt.py's run (``torchrun --standalone --nproc_per_node=N train_gpt.py``, no
    arguments): train, quantize and evaluate ``modes`` in one process tree, with the config embedded in
    the file (``values``), into a new ``outputs/submission/run-NNN``; the last line is the scored val_bpb."""
    from golf.pipeline import evaluate_run, quantize_run
    from golf.runtime import die_with_parent, init_distributed
    from golf.train import train

    die_with_parent()  # a torchrun rank dies with its parent
    try:
        cfg = load_config(None, values)
        binding = _preflight(cfg)
        dist, device = init_distributed(cfg.device)
        run_dir = _shared_run_dir(argparse.Namespace(run_dir=None, outputs="outputs", study="submission"), dist)
        run = RunDir(run_dir)
        setup_logging(run.train_log, dist.is_main)
        log.info("run folder %s, device %s, world size %d", run_dir, device, dist.world_size)
        if dist.is_main:
            from golf.runtime import atomic_write_json

            atomic_write_json(run.run_info, {"params_file": "train_gpt.py", "set": [], "world_size": dist.world_size,
                                             "data_warnings": binding["warnings"]})
        train(cfg, run_dir, dist, device)
        if dist.is_main:
            run.release()
        setup_logging(run.quantize_log, dist.is_main)
        quantize_run(run_dir, cfg, dist, device, code_bytes=code_bytes)
        results = {}
        for mode in modes:
            setup_logging(run.eval_log(mode), dist.is_main)
            results[mode] = evaluate_run(run_dir, mode, cfg, dist, device)["val_bpb"]
        if dist.is_main:
            for mode, bpb in results.items():
                print(f"{mode} val_bpb {bpb:.8f}")
            print(f"final val_bpb {results[modes[-1]]:.8f}" if modes else f"run folder {run_dir}")
        _destroy()
        return 0
    except (ConfigError, GolfError) as exc:
        print(f"golf: error: {exc}", file=sys.stderr)
        return 1


PATHS_NOTE = ("Relative paths (params files, data, run and output folders) start at the project root, the "
              "folder holding params/ and notebooks/, whatever the current folder (golf.paths).")


def _command(sub, name: str, help_: str, examples: str):
    """A subcommand whose --help ends with examples and the paths rule."""
    text = help_.replace("%%", "%")
    return sub.add_parser(name, help=help_, description=text[0].upper() + text[1:] + ".",
                          epilog=f"examples:\n{examples}\n\n{PATHS_NOTE}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from golf import __version__

    p = argparse.ArgumentParser(
        prog="golf", description="An open lab for the Parameter Golf 10 min / 16 MB track: the PR #1533 record "
        "stack (docs/record.md), from data to a submission.",
        epilog="examples:\n  golf run --params params/demo.yaml --seeds 42 314      # the CPU demo, 2 seeds\n"
               "  golf config                                            # every params key\n"
               "  golf COMMAND --help                                    # a command's options and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"golf {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_set(sp, help_):  # repeated flags add up (argparse's default keeps the last one's only)
        sp.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"{help_}; may be repeated")

    def add_params(sp, required=True):
        sp.add_argument("--params", required=required, metavar="FILE", help="params YAML file (see params/)")
        add_set(sp, "override params keys (golf config lists them); an unknown key is an error")

    data = sub.add_parser("data", help="prepare, download or check token shards")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    prep = _command(dsub, "prepare", "train the SentencePiece BPE tokenizer on a corpus and write shards",
                    "  golf data prepare --corpus shakespeare --out outputs/demo_data --vocab-size 1024 --val-docs 2\n"
                    "  golf data prepare --corpus ~/texts/ --out data/mine --vocab-size 8192")
    prep.add_argument("--corpus", required=True, help="built-in corpus name(s), comma-separated, or a folder of "
                      ".txt files")
    prep.add_argument("--out", required=True, metavar="DIR", help="output folder (built aside, swapped in at the end)")
    prep.add_argument("--vocab-size", type=int, default=None, help="tokenizer pieces (default 8192, the record's; "
                      "with --tokenizer, a check of its pieces)")
    prep.add_argument("--val-docs", type=int, default=None, help="the first N documents (of the shuffled order, "
                      "or of corpus order with --keep-order) go to val (default 50,000, the record's; capped at a "
                      "tenth of a small corpus)")
    prep.add_argument("--shard-tokens", type=int, default=10**8, help="tokens per shard (default 1e8, the record's)")
    prep.add_argument("--tokenizer", default=None, metavar="FILE",
                      help="tokenize with this SentencePiece model (e.g. the official SP8192) instead of training one; "
                           "it is copied beside the shards and bound to them by its fingerprint")
    prep.add_argument("--exclude-val-from-tokenizer", action="store_true",
                      help="fix of docs/record.md §9.18: train the tokenizer on train documents only")
    prep.add_argument("--caseops", action="store_true",
                      help="CaseOps (PR #1729): lowercase text plus case-operator tokens; BPB stays on the original "
                           "bytes through the val byte sidecars fineweb_val_bytes_*.bin")
    prep.add_argument("--seed", type=int, default=None, help="seed of the shuffle of all documents (default 0): val "
                      "is the first --val-docs of the shuffled order and train the rest, as FineWeb's split")
    prep.add_argument("--keep-order", action="store_true",
                      help="no shuffle: val is the first --val-docs in corpus order and train the rest, in order")
    prep.set_defaults(func=cmd_data_prepare)
    dl = _command(dsub, "download", "fetch the challenge's official shards and tokenizer (Hugging Face dataset)",
                  "  golf data download --variant sp8192 --out data --train-shards 80   # where params/record.yaml "
                  "reads\n  golf data download --variant sp8192 --out data --train-shards 1    # one shard, to try\n\n"
                  "Each train shard is 100M tokens (200 MB); all 80 and the val shard are about 16.1 GB.")
    dl.add_argument("--variant", default="sp8192", help="tokenizer variant of the dataset (default sp8192)")
    dl.add_argument("--out", required=True, metavar="DIR",
                    help="data root: the shards go to DIR/datasets/fineweb10B_sp8192/, the tokenizer to "
                         "DIR/tokenizers/ (the shard folder itself is read as its root)")
    dl.add_argument("--train-shards", type=int, default=80, help="train shards to fetch (default 80, all)")
    dl.set_defaults(func=cmd_data_download)
    chk = _command(dsub, "check", "validate every shard (magic, version, size, ids < vocab) and print a table",
                   "  golf data check outputs/demo_data")
    chk.add_argument("dir", help="data folder holding fineweb_{train,val}_*.bin")
    chk.add_argument("--vocab-size", type=int, default=None,
                     help="ids must be below it (default: from prepare.json or tokenizer.model beside the shards)")
    chk.set_defaults(func=cmd_data_check)

    info = _command(sub, "model-info", "print parameter count, bank shapes and layer plans as JSON",
                    "  golf model-info --params params/record.yaml\n"
                    "  golf model-info --params params/record.yaml --set num_layers=12")
    add_params(info)
    info.set_defaults(func=cmd_model_info)

    cfg = _command(sub, "config", "list every params key with its value, type and help",
                   "  golf config\n  golf config --params params/demo.yaml --set iterations=50")
    add_params(cfg, required=False)
    cfg.set_defaults(func=cmd_config)

    tr = _command(sub, "train", "train one run (one process, or under torchrun --nproc_per_node=N -m golf train)",
                  "  golf train --params params/demo.yaml --set iterations=50\n"
                  "  torchrun --standalone --nproc_per_node=8 -m golf train --params params/record.yaml")
    add_params(tr)
    tr.add_argument("--run-dir", metavar="DIR", help="a new run folder (default: OUTPUTS/STUDY/run-NNN, numbered); "
                    "a folder holding a run, finished or interrupted, is refused")
    tr.add_argument("--study", default="default", help="study folder for the default run folder (default 'default')")
    tr.add_argument("--outputs", default="outputs", metavar="DIR", help="outputs root (default outputs/)")
    tr.set_defaults(func=cmd_train)

    q = _command(sub, "quantize", f"GPTQ + Brotli artifact {ARTIFACT} of a trained run, within the budget",
                 "  golf quantize --run-dir outputs/default/run-001\n"
                 "  golf quantize --run-dir outputs/default/run-001 --force --set matrix_clip_sigmas=12")
    q.add_argument("--run-dir", required=True, metavar="DIR", help=f"a trained run folder (holding {MODEL})")
    add_set(q, "override quantization keys of the run's config")
    q.add_argument("--force", action="store_true", help="replace an existing artifact")
    q.add_argument("--modes", nargs="+", choices=EVAL_MODES, metavar="MODE", default=["plain", "sliding", "ttt"],
                   help="the stages the run will score (default plain sliding ttt): the byte budget counts the "
                        "code of a submission scoring them")
    q.set_defaults(func=cmd_quantize)

    ev = _command(sub, "evaluate", f"evaluate the artifact; writes {eval_name('<mode>')}",
                  "  golf evaluate --run-dir outputs/default/run-001 --mode plain sliding ttt   # one process, in order\n"
                  "  golf evaluate --run-dir outputs/default/run-001 --mode ttt --set ttt_lr=0.004 --force\n"
                  "  golf evaluate --run-dir outputs/default/run-001 --mode lora_ttt --set max_val_tokens=262144"
                  "   # a first slice of the val text: quicker, not comparable with a full evaluation")
    ev.add_argument("--run-dir", required=True, metavar="DIR", help="a quantized run folder")
    ev.add_argument("--mode", required=True, nargs="+", choices=EVAL_MODES, metavar="MODE",
                    help="one or more, each on a fresh copy of the model: plain (non-overlapping), sliding (stride "
                         "eval_stride), ttt (score-first test-time training), lora_ttt (per-document LoRA TTT) or "
                         "phased_ttt (LoRA TTT with global SGD phases)")
    ev.add_argument("--source", default="artifact", choices=("artifact", "raw"),
                    help=f"the quantized artifact (default) or the raw {MODEL}")
    add_set(ev, "override evaluation keys of the run's config")
    ev.add_argument("--force", action="store_true", help=f"replace an existing {eval_name('<mode>')}")
    ev.add_argument("--allow-other-tokenizer", action="store_true",
                    help="evaluate with a tokenizer other than the training one (the result records it)")
    ev.set_defaults(func=cmd_evaluate)

    rn = _command(sub, "run", "a study: the notebooks through papermill for each seed, then the seed analysis",
                  "  golf run --params params/demo.yaml --seeds 42 314\n"
                  "  golf run --params params/demo.yaml --seeds 42 314 --study demo-no-ema --set ema_decay=0\n"
                  "  golf run --params params/record.yaml --seeds 42 --nproc 8\n\n"
                  "Running the same command again resumes the study: finished seeds are kept, a killed or\n"
                  "failed seed is retried in a fresh folder (seedN-2).")
    add_params(rn)
    rn.add_argument("--seeds", nargs="+", type=int, required=True, help="one run per seed (sets the key seed)")
    rn.add_argument("--study", default=None, help="study folder name under OUTPUTS (default: the params file's name)")
    rn.add_argument("--outputs", default="outputs", metavar="DIR", help="outputs root (default outputs/)")
    rn.add_argument("--kernel", default=None, help="Jupyter kernel (default: golf if installed, else python3)")
    rn.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per run; torchrun when more than 1")
    rn.set_defaults(func=cmd_run)

    st = _command(sub, "study", "arms x seeds: each run through the notebooks, on this machine's GPUs or a Ray "
                  "cluster, then golf compare of the arms",
                  '  golf study --study abl --seeds 42 314 --arms base=params/demo.yaml "no-ema=params/demo.yaml '
                  'ema_decay=0"\n'
                  "  golf study ... --gpus 0 1 2 3            # one run per GPU at a time\n"
                  "  golf study ... --nproc 8 --ray HOST:6379  # each run a Ray task on 8 GPUs of a cluster\n\n"
                  "Each arm's runs go to OUTPUTS/STUDY/ARM/seedS, the comparison (the first arm the baseline) to\n"
                  "OUTPUTS/STUDY/compare. Running the same command again resumes the study: finished runs are\n"
                  "kept, a killed or failed run is kept and its seed runs again in a fresh folder (seedS-2).\n"
                  "Arms that differ only in quantization keys train once a seed; the others quantize a copy.")
    st.add_argument("--arms", nargs="+", required=True, metavar='"NAME=PARAMS [KEY=VALUE ...]"',
                    help="each arm: a name, its params file and its own overrides; the first is the baseline")
    st.add_argument("--seeds", nargs="+", type=int, required=True, help="one run per arm and seed")
    st.add_argument("--study", required=True, help="study folder name under OUTPUTS")
    add_set(st, "overrides for every arm (an arm's own come after)")
    st.add_argument("--modes", nargs="+", default=["ttt"], help="evaluation modes (the first is compared)")
    st.add_argument("--outputs", default="outputs", metavar="DIR", help="outputs root (default outputs/)")
    st.add_argument("--kernel", default=None, help="Jupyter kernel (default: golf if installed, else python3)")
    st.add_argument("--nproc", type=int, default=1, help="GPUs per run; torchrun when more than 1")
    st.add_argument("--gpus", nargs="+", default=None, metavar="INDEX",
                    help="this machine's GPUs, a worker per --nproc of them ('cpu': CPU runs; default: one worker "
                         "that sees what golf sees)")
    st.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="run each (arm, seed) as a task on this Ray cluster ('local': start one here); needs golf[ray]")
    st.add_argument("--lead-arms", nargs="+", default=[], metavar="ARM", help="these arms' runs (every seed) first")
    st.add_argument("--archive", metavar="FILE", help="after every run and at the end, pack the finished runs (no "
                    "weights or artifacts), the plan and the comparison into this .tar.gz")
    st.add_argument("--restore", metavar="FILE", help="first unpack such an archive into OUTPUTS")
    st.add_argument("--stop-taking-after", type=float, default=0, metavar="SECONDS",
                    help="start no new run after this many seconds (0: no limit)")
    st.add_argument("--without-notebooks", action="store_true",
                    help="run golf train, quantize and evaluate directly (a machine without Jupyter; no reports)")
    st.set_defaults(func=cmd_study)

    cp = _command(sub, "compare", "ablations side by side: val_bpb per seed, mean, std, difference with 95%% CI "
                  "and Welch's t-test, differing keys; writes compare.html",
                  "  golf compare outputs/demo outputs/demo-no-ema\n"
                  "  golf compare outputs/demo outputs/demo-no-ema --names baseline no-ema --stage sliding")
    cp.add_argument("studies", nargs="+", metavar="STUDY_OR_RUN", help="study or run folders, the baseline first")
    cp.add_argument("--names", nargs="*", default=None, help="a label per folder (default: folder names)")
    cp.add_argument("--stage", default="ttt", help="stage compared (default ttt)",
                    choices=("prequant", *EVAL_MODES))
    cp.add_argument("--out", default=None, metavar="DIR", help="output folder (default outputs/compare/compare-NNN)")
    cp.set_defaults(func=cmd_compare)

    ex = _command(sub, "export-submission", "write a challenge record folder (train_gpt.py, README, "
                  "submission.json, logs)", "  golf export-submission --run-dir outputs/demo/seed42 --out submission/")
    ex.add_argument("--run-dir", required=True, metavar="DIR", help="an evaluated run folder")
    ex.add_argument("--out", required=True, metavar="DIR", help="output folder (new, or an empty one)")
    ex.add_argument("--allow-over-budget", action="store_true",
                    help="export an artifact over the byte limit (submission.json says fits: false)")
    ex.add_argument("--allow-mixed-tokens", action="store_true",
                    help="export a headline scored on fewer val tokens than another stage (each count is given)")
    ex.add_argument("--allow-other-tokenizer", action="store_true",
                    help="export stages scored with a tokenizer the run did not train with (they say so)")
    ex.set_defaults(func=cmd_export)

    rep = _command(sub, "report", f"draw a run's figures and tables from its files and render its {REPORT} "
                   "(the notebooks do this after each step)", "  golf report --run-dir outputs/default/run-001")
    rep.add_argument("--run-dir", required=True, metavar="DIR", help="a run folder, at any stage")
    rep.set_defaults(func=cmd_report)
    return p


# Options naming files or folders: resolved once, here, by the one rule of golf.paths.
PATH_ARGS = ("params", "run_dir", "outputs", "out", "dir", "tokenizer", "archive", "restore")
WRITTEN_PATH_ARGS = ("outputs", "out", "archive")  # where golf writes: the project root's, always


def _resolve_path_args(args) -> None:
    from golf.paths import resolve_typed

    args.given_paths = {}  # as typed, for error messages (golf.paths.relative_hint)
    notes = []
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            args.given_paths[name] = value
            written = name in WRITTEN_PATH_ARGS or (name == "run_dir" and args.command == "train")  # a new run
            path, note = resolve_typed(value, params=name == "params", read=not written)
            setattr(args, name, str(path))
            notes.append(note)
    if isinstance(getattr(args, "studies", None), list):
        typed = [resolve_typed(v) for v in args.studies]
        args.studies = [str(path) for path, _ in typed]
        notes += [note for _, note in typed]
    for note in filter(None, notes):  # which of two files of one name is read
        print(f"golf: note: {note}", file=sys.stderr)


def _on_sigterm(signum, _frame) -> None:
    """SIGTERM ends a command as Ctrl-C does: its one line, its cleanup, exit status 143."""
    KEPT["signal"] = signum
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    from golf.runtime import die_with_parent

    die_with_parent()  # a child of golf (notebook kernel, golf run) or a torchrun rank dies with its parent
    args = build_parser().parse_args(argv)
    _resolve_path_args(args)
    KEPT.update(note="nothing was changed", signal=signal.SIGINT)
    if argv is None:  # the process is ours (not a test calling main): SIGTERM unwinds like Ctrl-C
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
        return code
    except KeyboardInterrupt:
        import logging

        from tqdm import tqdm

        # papermill's kernel task dies with us; asyncio would print its never-retrieved DeadKernelError at exit
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)

        for bar in list(getattr(tqdm, "_instances", ())):  # cleared now, not over the line below at exit
            bar.close()
        print(f"golf: interrupted: {KEPT['note']}", file=sys.stderr)
        return 128 + int(KEPT["signal"])
    except (ConfigError, GolfError) as exc:
        print(f"golf: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `golf config | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file or folder the user named cannot be read or written
        print(f"golf: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
