"""The exported train_gpt.py's code bytes per params file (issue 32): what golf export-submission would
write for a run of that config scoring those stages, and its size at each step of the way.

    python bench/submission_bytes.py                       # record.yaml and frontier.yaml
    python bench/submission_bytes.py params/demo.yaml:plain,sliding,ttt

Columns: the specialized module's source (golf.specialize: golf's code as one module, specialized to the
config and stages), minified (python-minifier), brotli-compressed, and the file (a coding line, a
two-line decoder and the compressed code's bytes in a latin-1 string literal). Seconds: the whole, a
cold disk cache (golf.submission's code cache is bypassed here).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from golf.config import load_config  # noqa: E402
from golf.submission import code_stages  # noqa: E402

# each run's scored stages as its record scores them: #1533 plain, sliding, TTT; #1855 plain and phased TTT
DEFAULT = ["params/record.yaml:plain,sliding,ttt", "params/frontier.yaml:plain,phased_ttt"]


def main(specs: list[str]) -> None:
    print("| params | stages | specialized | minified | compressed | code bytes | seconds |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        path, _, modes = spec.partition(":")
        modes = tuple(modes.split(",")) if modes else ("plain", "sliding", "ttt")
        cfg = load_config(path)
        t0 = time.perf_counter()
        s = code_stages(cfg, modes)
        print(f"| {path} | {' '.join(modes)} | {s['specialized']:,} | {s['minified']:,} | {s['compressed']:,} "
              f"| {s['file']:,} | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
