"""The layer plan (§2.7): the physical layer each virtual layer runs, with and without depth recurrence
(#1493), the encoder and decoder halves, and the U-net skips that join them."""
from __future__ import annotations

from golf.config_sections import ModelConfig


def virtual_layers(cfg: ModelConfig, looping: bool) -> list[int]:
    """Physical layer index of each virtual layer, in order (spec §2.7)."""
    n = cfg.num_layers
    if not looping or cfg.num_loops == 0:
        return list(range(n))
    loop = list(range(cfg.loop_start, cfg.loop_end + 1))
    return list(range(cfg.loop_start)) + loop * (cfg.num_loops + 1) + list(range(cfg.loop_end + 1, n))


def encoder_decoder(cfg: ModelConfig, looping: bool) -> tuple[list[int], list[int]]:
    layers = virtual_layers(cfg, looping)
    half = len(layers) // 2
    return layers[:half], layers[half:]


def num_skip_weights(cfg: ModelConfig) -> int:
    # Sized for the deeper (looped) plan; the shallow phase uses the first few (spec §2.7).
    enc, dec = encoder_decoder(cfg, looping=cfg.num_loops > 0)
    return min(len(enc), len(dec))


def skip_pairings(cfg: ModelConfig, looping: bool) -> list[dict]:
    """For each decoder position: its physical layer and the encoder slot whose output it merges."""
    enc, dec = encoder_decoder(cfg, looping)
    n_skip, stack, rows = num_skip_weights(cfg), list(range(len(enc))), []
    for pos, layer in enumerate(dec):
        src = stack.pop() if (pos < n_skip and stack) else None
        rows.append({"decoder_pos": pos, "layer": layer, "skip_from_encoder_slot": src})
    return rows
