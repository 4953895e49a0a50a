"""The exported train_gpt.py's code bytes per params file (issue 32): what golf export-submission would
write for a run of that config scoring those stages, and the golf modules it carries.

    python bench/submission_bytes.py                       # record.yaml and frontier.yaml
    python bench/submission_bytes.py params/demo.yaml:plain,sliding,ttt
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from golf.config import load_config  # noqa: E402
from golf.submission import code_bytes, reached_sources  # noqa: E402

DEFAULT = ["params/record.yaml:plain,sliding,ttt", "params/frontier.yaml:plain,sliding,phased_ttt"]


def main(specs: list[str]) -> None:
    print("| params | stages | code bytes | modules | seconds |")
    print("|---|---|---|---|---|")
    for spec in specs:
        path, _, modes = spec.partition(":")
        modes = tuple(modes.split(",")) if modes else ("plain", "sliding", "ttt")
        cfg = load_config(path)
        t0 = time.perf_counter()
        n = code_bytes(cfg, modes)
        modules = sorted(m for m in reached_sources(cfg, modes) if m != "__init__")
        print(f"| {path} | {' '.join(modes)} | {n:,} | {' '.join(modules)} | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
