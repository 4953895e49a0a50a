"""The config tree (golf.config, golf.config_rules, golf.config_stages): sections, flat and nested
params files, removed keys, ranges, the stage policy, and ``golf config``."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from golf.config import REMOVED_KEYS, SECTION_OF, SECTIONS, ConfigError, Config, _TYPES, describe_keys, load_config
from golf.config_rules import RANGES, validate_for_world
from golf.config_stages import check_stage_overrides, stage_keys

REPO = Path(__file__).resolve().parent.parent


def test_every_key_lives_in_one_section_and_reads_flat_too():
    cfg = load_config(None, {"num_layers": 5, "loop_end": 3, "iterations": 7, "lqer_rank": 4})
    assert cfg.model.num_layers == cfg.num_layers == 5 and cfg.train.iterations == cfg.iterations == 7
    assert cfg.quant.lqer_rank == 4 and cfg.head_dim == cfg.model.head_dim == 64
    assert sorted(SECTION_OF) == sorted(_TYPES) and len(SECTION_OF) == sum(len(c.__dataclass_fields__)
                                                                          for c in SECTIONS.values())
    assert Config.from_flat(cfg.to_dict()) == cfg and list(cfg.tree()) == list(SECTIONS)
    with pytest.raises(AttributeError):
        cfg.no_such_key


def test_a_params_file_names_keys_flat_or_by_section(tmp_path):
    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text("num_layers: 5\nloop_end: 3\niterations: 9\n")
    nested.write_text("model:\n  num_layers: 5\n  loop_end: 3\ntrain: {iterations: 9}\n")
    assert load_config(flat) == load_config(nested)
    assert load_config(nested, ["model_dim=256"]).model_dim == 256


@pytest.mark.parametrize("text, words", [
    ("model:\n  iterations: 3\n", ["'iterations'", "section 'train'", "not 'model'"]),
    ("ttt_enabled: true\n", ["'ttt_enabled'", "removed", "golf evaluate --mode"]),
    ("num_layers: 3\nmodel: {num_layers: 4}\n", ["'num_layers'", "twice"]),
    ("model: {num_layrs: 3}\n", ["'num_layrs'", "did you mean 'num_layers'"]),
])
def test_a_params_file_with_a_misplaced_removed_doubled_or_unknown_key_is_named(tmp_path, text, words):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert str(path) in str(err.value)


def test_removed_keys_are_gone_and_every_params_file_loads():
    assert not set(REMOVED_KEYS) & set(_TYPES)
    for path in sorted((REPO / "params").glob("*.yaml")):
        load_config(path)


def test_golf_config_prints_the_tree_as_a_params_file_that_loads_back(tmp_path):
    out = subprocess.run([sys.executable, "-m", "golf", "config", "--params", "params/frontier.yaml"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    tree = yaml.safe_load(out)
    assert list(tree) == list(SECTIONS) and tree["model"]["parallel_mode"] == "lanes_mix"
    assert "# [str] lanes (#1477/#1533)" in out and "(record: 'lanes')" in out
    (tmp_path / "tree.yaml").write_text(out)
    assert load_config(tmp_path / "tree.yaml") == load_config(REPO / "params/frontier.yaml")


def test_the_stage_policy_is_the_sections():
    quant = set(stage_keys("quantize", own_only=True))
    assert quant == {k for k, s in SECTION_OF.items() if s == "quant"} and "lqer_rank" in quant
    assert "ttt_lr" in stage_keys("evaluate") and "ttt_lr" not in stage_keys("quantize")
    assert "device" in stage_keys("quantize") and "data_dir" in stage_keys("evaluate")
    check_stage_overrides("evaluate", ["eval_stride", "fused_ce", "max_val_tokens"])
    with pytest.raises(ConfigError, match="'num_layers' shapes the trained model"):
        check_stage_overrides("evaluate", ["num_layers"])
    with pytest.raises(ConfigError, match=r"'matrix_lr' belongs to training \(section optim\)"):
        check_stage_overrides("quantize", ["matrix_lr"])


def test_every_key_has_help_and_every_numeric_key_a_range():
    assert all(d["help"] for d in describe_keys())
    numeric = {k for k, t in _TYPES.items() if t in (int, float)}
    assert numeric == set(RANGES)


def test_a_bad_bool_names_the_spellings_it_takes():
    with pytest.raises(ConfigError) as err:
        load_config(None, {"fused_qkv": "maybe"})
    assert "'fused_qkv'" in str(err.value) and "true/false" in str(err.value) and "'maybe'" in str(err.value)
    assert load_config(None, {"fused_qkv": "on"}).fused_qkv and not load_config(None, {"fused_qkv": "0"}).fused_qkv


def test_validate_for_world():
    cfg = load_config(None, {})  # the record: grad_accum_total 8
    for world in (1, 2, 4, 8):
        validate_for_world(cfg, world)
    for world in (3, 16, 0):
        with pytest.raises(ConfigError):
            validate_for_world(cfg, world)
