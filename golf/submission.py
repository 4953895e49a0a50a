"""The code a submission carries, and the challenge record folder (spec §5.5).

The challenge counts code bytes + compressed model bytes against 16,000,000. golf's code is a
package, so a submission's ``train_gpt.py`` is *generated*: a short wrapper holding the golf
sources as an xz-compressed, base85-encoded zip that it imports from, then runs the pipeline.
"""
from __future__ import annotations

import base64
import io
import json
import lzma
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from golf.config import EVAL_MODES
from golf.runs import ARTIFACT, CONFIG, ENVIRONMENT, METRICS, QUANT_BUDGET, QUANTIZE_CONFIG, QUANTIZE_LOG, TRAIN_LOG, \
    RunDir, eval_name
from golf.runtime import GolfError, atomic_write_text, read_json_object

PACKAGE_DIR = Path(__file__).resolve().parent
# The report side (notebook plumbing, plots, seed statistics, comparisons) and this file are not part
# of the scored code; every other module is, so a module that training starts to import is never missed.
NOT_SCORED = ("compare", "lab", "notebooks", "plots", "report", "stats", "study", "submission")

# The zip lives in a temporary folder for the run (zipimport reads it lazily) and goes at exit.
WRAPPER = '''import atexit,base64,lzma,os,shutil,sys,tempfile
d=tempfile.mkdtemp();atexit.register(shutil.rmtree,d,True);z=os.path.join(d,"golf.zip");open(z,"wb").write(lzma.decompress(base64.b85decode({payload!r})))
sys.path.insert(0,z);from golf.cli import main;sys.exit(main(sys.argv[1:]))
'''


def runtime_modules() -> list[str]:
    """The golf modules a record run carries, sorted."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem not in NOT_SCORED)


def scored_source(path: Path) -> str:
    """A module as it counts against the budget: the same code, without comments and docstrings
    (ast.unparse), since every byte of code is a byte the model cannot use."""
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _package_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in runtime_modules():
            path = PACKAGE_DIR / f"{name}.py"
            if path.is_file():
                info = zipfile.ZipInfo(f"golf/{name}.py", date_time=(2026, 1, 1, 0, 0, 0))  # reproducible bytes
                zf.writestr(info, scored_source(path))
    return buf.getvalue()


@lru_cache(maxsize=1)
def train_gpt_source() -> str:
    """The single-file ``train_gpt.py``: xz preset 9 (CRC64) + base85, like the records' wrappers."""
    payload = base64.b85encode(lzma.compress(_package_zip(), preset=9, check=lzma.CHECK_CRC64)).decode()
    return WRAPPER.format(payload=payload)


def code_bytes() -> int:
    return len(train_gpt_source().encode())


def _read_json(path: Path) -> dict:
    return read_json_object(path)


def _made_from_artifact(path: Path, record: dict, sha: str, redo: str) -> None:
    """Refuse a result file that does not name the run's current artifact as its source."""
    recorded = record.get("artifact_sha256")
    if recorded != sha:
        what = f"artifact sha256 {recorded[:12]}" if recorded else "no artifact (made before golf recorded it)"
        raise GolfError(f"{str(path)!r} names {what}, but the run's {ARTIFACT} is sha256 {sha[:12]}: "
                        f"it describes another artifact and would ship beside this one; {redo}")


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _check_headline(results: dict, run_dir: Path, allow_mixed_tokens: bool) -> None:
    """The headline (last stage) must be measured on as many val tokens as every other stage shipped."""
    counts = {m: r.get("n_tokens") for m, r in results.items() if isinstance(r.get("n_tokens"), int)}
    if not counts or allow_mixed_tokens:
        return
    head = next(m for m in reversed(EVAL_MODES) if m in results)
    most = max(counts, key=counts.get)
    if head in counts and counts[head] < counts[most]:
        raise GolfError(f"{str(RunDir(run_dir).eval_result(head))!r}, the headline, scored {counts[head]:,} val "
                        f"tokens but {eval_name(most)} scored {counts[most]:,}: its BPB is not comparable with the others; "
                        f"evaluate {head} on the same text (--force, max_val_tokens as for {most}), or pass "
                        "--allow-mixed-tokens (submission.json and README.md then give each stage's count)")


def export_submission(run_dir: Path, out_dir: Path, allow_over_budget: bool = False,
                      allow_mixed_tokens: bool = False) -> Path:
    """A record folder: ``train_gpt.py``, ``README.md``, ``submission.json`` and the run's logs.

    Every result and budget it ships must name the run's current artifact (its sha256), so a BPB
    never travels beside the size of an artifact that did not make it. An artifact over the byte
    limit, or a headline scored on fewer val tokens than another stage, is refused unless allowed.
    """
    from golf.quant import artifact_sha256

    run = RunDir(run_dir)
    artifact = run.artifact
    if not artifact.is_file():
        raise GolfError(f"run folder {str(run_dir)!r} has no {ARTIFACT}: run golf quantize first")
    if out_dir.exists() and not out_dir.is_dir():
        raise GolfError(f"output folder {str(out_dir)!r} is a file; expected a folder (or a path that does not exist)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise GolfError(f"output folder {str(out_dir)!r} is not empty; a record folder is never overwritten")
    sha = artifact_sha256(artifact)
    results = {}
    for mode in EVAL_MODES:
        path = run.eval_result(mode)
        if path.is_file():
            results[mode] = _read_json(path)
            missing = [k for k in ("val_bpb", "val_loss", "seconds")
                       if not isinstance(results[mode].get(k), (int, float)) or isinstance(results[mode].get(k), bool)]
            if missing:
                raise GolfError(f"{str(path)!r} has no number for {', '.join(map(repr, missing))}: it is not a "
                                f"result golf evaluate wrote; run golf evaluate --run-dir {run_dir} --mode {mode} "
                                "--force")
            _made_from_artifact(path, results[mode], sha,
                                f"run golf evaluate --run-dir {run_dir} --mode {mode} --force")
    budget = {}
    if run.quant_budget.is_file():
        budget = _read_json(run.quant_budget)
        _made_from_artifact(run.quant_budget, budget, sha,
                            f"run golf quantize --run-dir {run_dir} --force")
    model_bytes = artifact.stat().st_size
    limit = int(budget.get("limit", 16_000_000))
    total = model_bytes + code_bytes()
    if (total > limit or budget.get("fits") is False) and not allow_over_budget:
        raise GolfError(f"{str(artifact)!r} does not fit: artifact {model_bytes:,} + code {code_bytes():,} = "
                        f"{total:,} bytes against the limit of {limit:,}"
                        + (f" ({QUANT_BUDGET} says fits: false)" if budget.get("fits") is False else "")
                        + "; quantize smaller, or pass --allow-over-budget to export it anyway")
    _check_headline(results, run_dir, allow_mixed_tokens)
    final = out_dir  # written in a folder beside it, renamed in at the end: never half a record
    final.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.export-"))
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(out_dir, 0o777 & ~mask)
        atomic_write_text(out_dir / "train_gpt.py", train_gpt_source())
        headline = next((results[m] for m in reversed(EVAL_MODES) if m in results), {})  # the last stage reached
        submission = {
            "val_bpb": headline.get("val_bpb"),
            "val_loss": headline.get("val_loss"),
            "bytes_model": model_bytes,
            "bytes_code": code_bytes(),
            "bytes_total": model_bytes + code_bytes(),
            "fits": total <= limit and budget.get("fits") is not False,
            "val_tokens": headline.get("n_tokens"),
            "results_by_stage": {m: {"val_bpb": r["val_bpb"], "seconds": r["seconds"], "val_tokens": r.get("n_tokens"),
                                     **({"tokenizer_differs_from_training": True}
                                        if r.get("tokenizer_differs_from_training") else {})}
                                 for m, r in results.items()},
            "quant_budget": budget,
        }
        atomic_write_text(out_dir / "submission.json", json.dumps(submission, indent=2) + "\n")
        lines = [f"# golf record from run `{run_dir.name}`", "",
                 "Generated by `golf export-submission`. `train_gpt.py` is the golf package, zipped, xz-compressed",
                 "and base85-encoded; run it as `python train_gpt.py train --params …` (any golf command works).", "",
                 "| stage | val_bpb | seconds | val tokens |", "|---|---|---|---|"]
        lines += [f"| {m} | {r['val_bpb']:.6f} | {r['seconds']:.1f} | {_count(r.get('n_tokens'))}"
                  + (" (tokenizer other than training's)" if r.get("tokenizer_differs_from_training") else "") + " |"
                  for m, r in results.items()]
        lines += ["", f"Artifact {model_bytes:,} bytes + code {code_bytes():,} bytes = {total:,} bytes"
                  + ("." if total <= limit else f", OVER the limit of {limit:,} bytes.")]
        atomic_write_text(out_dir / "README.md", "\n".join(lines) + "\n")
        for name in (TRAIN_LOG, METRICS, CONFIG, ENVIRONMENT, QUANTIZE_LOG, QUANTIZE_CONFIG):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, out_dir / name)
        os.replace(out_dir, final)  # replaces only an empty folder (checked above)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return final
