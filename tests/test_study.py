"""bench/study.py refuses a study whose arms do not load before any job starts (issue 16: a typo in the
last arm must not cost the GPU time of the others)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def study(tmp_path, *arms, extra=()):
    env = {"GOLF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    (tmp_path / "params").mkdir(exist_ok=True)
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "bench/study.py"), "--gpus", "cpu", "--seeds", "1",
                           "--prefix", "t", *extra, "--arms", *arms], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_bad_arm_is_refused_before_any_job(tmp_path):
    demo = str(ROOT / "params/demo.yaml")
    out = study(tmp_path, f"a={demo}", f"b={demo} smear_gat=true")
    assert out.returncode == 1
    assert "arm 'b'" in out.stderr and "smear_gat" in out.stderr
    assert not list((tmp_path / "outputs").glob("t-*")), "no study folder before the arms check"
    out = study(tmp_path, f"a={demo}", extra=("--modes", "tt"))
    assert out.returncode == 1 and "unknown --modes ['tt']" in out.stderr


def test_set_given_twice_keeps_both(tmp_path):
    demo = str(ROOT / "params/demo.yaml")
    # both --set values reach the arms check: the second one's bad value is named, so it was not dropped
    out = study(tmp_path, f"a={demo}", extra=("--set", "iterations=3", "--set", "ema_decay=2"))
    assert out.returncode == 1 and "'ema_decay'" in out.stderr
    out = study(tmp_path, f"a={demo}", extra=("--set", "ema_decay=2", "--set", "iterations=3"))
    assert out.returncode == 1 and "'ema_decay'" in out.stderr
