"""Which keys golf quantize and golf evaluate may change on a trained run: those of their own section
(quant, eval), the run section (how it executes) and the data paths, and a few named below. Every other
key was fixed by training (docs/config.md)."""
from __future__ import annotations

from typing import Iterable

from golf.config import PATH_KEYS, SECTION_OF, ConfigError

STAGE_SECTION = {"quantize": "quant", "evaluate": "eval"}
# Read by the stage though they live elsewhere: how much val text is scored, which fix it applies.
STAGE_EXTRA = {
    "quantize": ("max_val_tokens", "eval_seq_len", "fix_allreduce_hessians", "fix_prune_to_fit"),
    "evaluate": ("max_val_tokens", "fix_ttt_reset_momentum"),
}
RUNTIME_KEYS = (*(k for k, s in SECTION_OF.items() if s == "run"), *PATH_KEYS)


def stage_keys(stage: str, own_only: bool = False) -> tuple[str, ...]:
    """The params keys ``golf quantize`` (stage 'quantize') or ``golf evaluate`` ('evaluate') reads;
    ``own_only``: its section's alone."""
    own = tuple(k for k, s in SECTION_OF.items() if s == STAGE_SECTION[stage])
    return own if own_only else (*own, *STAGE_EXTRA[stage], *RUNTIME_KEYS)


def check_stage_overrides(stage: str, keys: Iterable[str]) -> None:
    """Refuse, by name, an override that ``golf quantize`` / ``golf evaluate`` would silently ignore
    or that contradicts what the run already made."""
    allowed = stage_keys(stage)
    for key in keys:
        if key in allowed or key not in SECTION_OF:
            continue
        section = SECTION_OF[key]
        if section == "model":
            what, redo = "shapes the trained model", "train a new run"
        elif section == "quant":
            what, redo = "was fixed when the artifact was made", "golf quantize --force --set it"
        elif section == "eval":
            what, redo = "is an evaluation key", "golf evaluate --set it"
        else:
            what, redo = f"belongs to training (section {section})", "train a new run"
        raise ConfigError(f"params key {key!r} {what}: golf {stage} can't change it ({redo}); golf {stage} "
                          f"takes the {STAGE_SECTION[stage]} section's keys and "
                          f"{', '.join(STAGE_EXTRA[stage] + RUNTIME_KEYS)}", key)

