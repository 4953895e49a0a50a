"""The submission's train_gpt.py (golf.submission): only the code its params reach, minified, and the
whole pipeline as the challenge runs it (torchrun, no arguments, settings inside the file)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_params

from golf.config import load_config
from golf.submission import FLAT_WRAPPER, _literal, budget_code_bytes, code_bound, code_bytes, left_out, train_gpt_bytes

REPO = Path(__file__).resolve().parent.parent
# Upper bounds that keep the exported code from growing back (bench/submission_bytes.py measures it), each
# config scoring the stages its record scores: the target is 20,000 (the record's own script 19,760,
# #1855's 31,999). record.yaml 16,650 bytes, frontier.yaml 19,889 on 2026-12-08.
CODE_BYTES_BOUND = {"record.yaml": (("plain", "sliding", "ttt"), 17_500),
                    "frontier.yaml": (("plain", "phased_ttt"), 20_000)}


def test_code_bytes_of_the_record_and_the_frontier():
    for name, (modes, bound) in CODE_BYTES_BOUND.items():
        cfg = load_config(REPO / "params" / name)
        assert code_bytes(cfg, modes) <= bound, name
        assert code_bytes(cfg, modes) < code_bound() / 10


def test_every_fast_switch_exports_with_the_frontier():
    """The fast switches together on the frontier (both Triton kernels, one qkv GEMM) still make a file
    whose config is folded away (a config read the specializer cannot fold left the whole config in it)."""
    cfg = load_config(REPO / "params/frontier.yaml", ["fused_mlp=true", "fused_qkv=true"])
    assert code_bytes(cfg, ("plain", "sliding", "phased_ttt")) < 40_000


def test_the_modules_left_out_follow_the_switches():
    cfg = load_config(REPO / "params/record.yaml")
    assert {"lora_ttt", "kernels", "notebooks", "study", "submission"} <= left_out(cfg)
    assert "lora_ttt" not in left_out(cfg, ("plain", "phased_ttt"))
    assert "kernels" not in left_out(cfg.replace(fused_mlp=True))


def test_the_embedded_kernels_carry_only_what_the_switches_reach():
    """golf.kernels travels as source (Triton reads it), less the definitions the code cannot reach:
    frontier's fused_ce alone carries the fused cross-entropy, not the fused MLP; fused_mlp brings it."""
    import ast

    from golf.specialize import specialize
    from golf.submission import _json_values

    cfg = load_config(REPO / "params/frontier.yaml")
    modes = CODE_BYTES_BOUND["frontier.yaml"][0]

    def kernels_source(cfg) -> str:
        tree = ast.parse(specialize(cfg, modes, _json_values(cfg), left_out(cfg, modes)))
        return next(n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and "import triton" in n.value)

    mlp = ("fused_mlp", "mlp_supported", "_mlp_train", "_mlp_infer", "_up_act_kernel", "_act_grad_kernel")
    ce_alone = kernels_source(cfg)
    assert "def fused_softcap_nll(" in ce_alone and "def _softcap_ce_kernel(" in ce_alone
    assert "_softcap_ce.register_autograd(" in ce_alone  # what acts on a kept definition stays with it
    assert not [name for name in mlp if name in ce_alone]
    both = kernels_source(cfg.replace(fused_mlp=True))
    assert all(f"def {name}(" in both for name in mlp) and "def fused_softcap_nll(" in both


def test_quantize_counts_the_code_exactly_only_where_it_could_change_what_fits(tmp_path, monkeypatch):
    """The exact count (golf.specialize) is slow: below the limit by more than the bound it is not made,
    the bound stands in; near the limit it is made, kept on disk, and read from there after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = load_config(REPO / "params/demo.yaml")
    count, limit = budget_code_bytes(cfg), 16_000_000
    assert count(1_000, limit) == (code_bound(), False)
    assert not (tmp_path / "cache").exists()
    exact = count(limit - code_bound() + 1, limit)
    assert exact == (code_bytes(cfg), True) and exact[0] < code_bound()
    assert len(list((tmp_path / "cache" / "golf" / "submission").iterdir())) == 1
    assert count(1_000, limit) == exact  # kept: exact at no cost


def test_exported_train_gpt_refuses_a_world_its_batch_does_not_split_over(tmp_path, demo_data):
    """grad_accum_total 1 on 2 ranks: one line naming the key, before any work (it was a ZeroDivisionError
    in the training loader)."""
    cfg = load_config(tiny_params(tmp_path, demo_data, grad_accum_total=1))
    folder = tmp_path / "record"
    folder.mkdir()
    (folder / "train_gpt.py").write_bytes(train_gpt_bytes(cfg))
    env = {k: v for k, v in os.environ.items() if k != "GOLF_HOME"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train_gpt.py"], capture_output=True, text=True, cwd=folder, env=env, timeout=300)
    assert out.returncode != 0
    assert "golf: error: params key 'grad_accum_total' (1) must be a multiple of the world size (2" in out.stderr
    assert "ZeroDivisionError" not in out.stderr and not (folder / "outputs").exists()


def test_exported_train_gpt_runs_the_pipeline_under_torchrun(tmp_path, demo_data):
    """From an empty folder, as the challenge runs a record: 2 gloo ranks train, quantize and score
    plain, sliding and TTT; the data path is the embedded one; the unpacked code leaves TMPDIR."""
    params = tiny_params(tmp_path, demo_data, iterations=4, val_loss_every=0, max_val_tokens=2048,
                         gptq_calibration_batches=1, grad_accum_total=2)
    cfg = load_config(params)
    folder, tmp = tmp_path / "record", tmp_path / "tmp"
    folder.mkdir()
    tmp.mkdir()
    script = folder / "train_gpt.py"
    script.write_bytes(train_gpt_bytes(cfg))
    assert script.stat().st_size == code_bytes(cfg)
    env = {k: v for k, v in os.environ.items() if k != "GOLF_HOME"}
    env.update(TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train_gpt.py"], capture_output=True, text=True, cwd=folder, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    final = [line for line in out.stdout.splitlines() if line.startswith("final val_bpb ")]
    assert len(final) == 1, out.stdout
    run = folder / "outputs" / "submission" / "run-001"
    results = {m: json.loads((run / f"eval_{m}.json").read_text()) for m in ("plain", "sliding", "ttt")}
    assert float(final[0].split()[-1]) == round(results["ttt"]["val_bpb"], 8)
    assert all(math.isfinite(r["val_bpb"]) and 0 < r["val_bpb"] < 20 for r in results.values())
    budget = json.loads((run / "quant_budget.json").read_text())
    assert budget["code_bytes"] == script.stat().st_size
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert not list(tmp.rglob("golf.zip"))  # each rank's unpacked code went at exit (torchrun keeps its own)


def test_exported_frontier_runs_its_pipeline_under_torchrun(tmp_path, demo_data):
    """frontier.yaml's switches at the tiny size (packed documents, two mixed lanes, gates, LQER, phased TTT),
    exported and run as the challenge runs it: 2 gloo ranks to a final val_bpb that is phased TTT's."""
    import yaml

    front = yaml.safe_load((REPO / "params/frontier.yaml").read_text())
    for key in ("seed", "data_dir", "tokenizer_path"):
        front.pop(key)
    front.update(iterations=4, val_loss_every=0, max_val_tokens=4096, gptq_calibration_batches=1,
                 grad_accum_total=2, parallel_start_layer=2, ttt_lora_rank=8, ttt_lora_alpha=16,
                 ttt_lora_batch_docs=4, ttt_phase_docs=8, ttt_phases=2)
    modes = ("plain", "sliding", "phased_ttt")
    folder = tmp_path / "record"
    folder.mkdir()
    (folder / "train_gpt.py").write_bytes(train_gpt_bytes(load_config(tiny_params(tmp_path, demo_data, **front)), modes))
    env = {k: v for k, v in os.environ.items() if k != "GOLF_HOME"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train_gpt.py"], capture_output=True, text=True, cwd=folder, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = folder / "outputs" / "submission" / "run-001"
    result = json.loads((run / "eval_phased_ttt.json").read_text())
    assert out.stdout.splitlines()[-1] == f"final val_bpb {result['val_bpb']:.8f}"
    assert {m for m in modes if (run / f"eval_{m}.json").is_file()} == set(modes)


@pytest.mark.parametrize("data", [bytes(range(256)) * 3, b'\x001\x007\x008"', b'""""""', b'\\', b'x\\"', b"\r\n\r",
                                  bytes(reversed(range(256)))])
def test_the_payload_literal_reads_back_as_its_bytes(data, tmp_path):
    """Every byte value, NUL before an octal digit, runs of quotes, a backslash or quote last, CR: the
    file's literal, read by python from a file declared latin-1, is the payload again."""
    source = FLAT_WRAPPER.format(payload=_literal(data)).encode("latin1")
    compile(source, "train_gpt.py", "exec")  # the wrapper as a whole parses
    echo = tmp_path / "echo.py"  # the same literal in a file that writes its value out
    echo.write_bytes(FLAT_WRAPPER.split("\n")[0].encode() + b"\nimport sys\nsys.stdout.buffer.write("
                     + f'"""{_literal(data)}""".encode("latin1"))\n'.encode("latin1"))
    out = subprocess.run([sys.executable, str(echo)], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == data, out.stderr
    assert len(source) - len(FLAT_WRAPPER.format(payload="")) < len(data) * 1.1 + 8


def test_a_functions_import_of_what_the_module_imports_alike_goes():
    """golf's modules import lazily; in the one specialized module a function's repeat of a top-level
    import goes, and only that: another alias, a name the function binds again, a class body's import and
    a name bound twice at the top stay."""
    import ast
    import textwrap

    from golf.specialize.prune import drop_repeated_imports

    module = ast.parse(textwrap.dedent("""
        import torch
        import numpy as np
        import json
        json = None
        def a():
            import torch
            import numpy
            return torch, numpy
        def b():
            try:
                import torch, numpy as np
            except ImportError:
                pass
            return torch, np
        def c():
            import torch
            torch = 1
            return torch
        def d():
            import json
            return json
        class E:
            import torch
    """))
    assert drop_repeated_imports(module)
    code = ast.unparse(module)
    assert "def a():\n    import numpy\n    return" in code
    assert "try:\n        pass\n    except ImportError" in code
    assert "def c():\n    import torch\n    torch = 1" in code and "def d():\n    import json" in code
    assert "class E:\n    import torch" in code
    assert not drop_repeated_imports(module)  # nothing left to drop


def test_a_function_whose_every_call_is_known_takes_its_parameters_by_position():
    """python-minifier renames only what no caller can name: every parameter becomes positional-only and
    each call passes by position (a skipped default as its constant). A call that names what is not a
    parameter, keywords out of order with an effect, a default that is not a constant, a use that is not a
    call, a keyword passed to a method a library's object has too, a method called through its class, an
    __init__ its class calls through type(self), or a decorator that may read the signature leave the
    function as it is; the code computes the same."""
    import ast
    import textwrap

    from golf.specialize.analyses import tree_changed
    from golf.specialize.parameters import positional_only

    source = textwrap.dedent("""
        import functools
        BIG = 7
        def f(a, b=2, *, c, d=None):
            return (a, b, c, d)
        class K:
            def __init__(self, x, y=1):
                self.v = (x, y)
            def m(self, p, q=3):
                return (self.v, p, q)
            def update(self, n=0):
                return n
        def g(a, b=BIG, c=0):
            return (a, b, c)
        def h(a, b):
            return (a, b)
        def used(a, b=0):
            return (a, b)
        class Again:
            def __init__(self, a, b=1):
                self.v = (a, b)
            def copy(self, p=0, q=3):
                return type(self)(b=q, a=p).v
        class Through:
            def n(self, p=0, q=3):
                return (p, q)
        @functools.lru_cache
        def cached(a, b=0):
            return (a, b)
        def side(n):
            out.append(n)
            return n
        out = []
        result = [f(1, c=3), f(1, d=4, c=3), K(5).m(q=6, p=7), K(y=8, x=9).m(1), K(1).update(n=2), g(1), g(1, c=2),
                  h(b=side(1), a=side(2)), used(1, b=2), list(map(used, [3])),
                  Again(1).copy(q=5), Through.n(Through(), q=1), Through().n(q=2), cached(1, b=2)]
    """)
    module = ast.parse(source)
    tree_changed()
    assert positional_only(module)
    code = ast.unparse(module)
    assert "def f(a, b=2, c, d=None, /)" not in code and "def f(a, b, c, d=None, /):" in code
    assert "f(1, 2, 3)" in code and "f(1, 2, 3, 4)" in code
    assert "def __init__(self, x, y=1, /)" in code and "K(9, 8)" in code
    assert "def m(self, p, q=3, /)" in code and ".m(7, 6)" in code
    assert "def update(self, n=0):" in code  # d.update(n=2) may be a dict's
    assert "def g(a, b=BIG, c=0):" in code  # g(1, BIG, 2) would read BIG at the call, not once
    assert "def h(a, b):" in code and "h(b=side(1), a=side(2))" in code
    assert "def used(a, b=0):" in code
    assert "def __init__(self, a, b=1):" in code  # type(self)(...) calls it unseen
    assert "def n(self, p=0, q=3):" in code  # Through.n(obj, ...) passes self first
    assert "def cached(a, b=0):" in code  # only decorators that call the function as called
    before, after = {}, {}
    exec(compile(source, "<before>", "exec"), before)
    exec(compile(code, "<after>", "exec"), after)
    assert after["result"] == before["result"] and after["out"] == before["out"] == [1, 2]
