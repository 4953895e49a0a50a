"""Process plumbing (golf.runtime): the code record a run keeps."""
import subprocess

import pytest

from golf.runs import CODE_DIFF, RunDir
from golf.runtime import write_code_diff


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    return repo


def test_a_dirty_checkout_writes_the_patch_that_rebuilds_it(checkout, tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert run.code_diff.name == CODE_DIFF
    assert not write_code_diff(run.code_diff, checkout) and not run.code_diff.exists()  # clean: nothing

    (checkout / "a.py").write_text("x = 2\n")
    assert write_code_diff(run.code_diff, checkout)
    patch = run.code_diff.read_text()
    assert patch == subprocess.run(["git", "diff", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout
    _git(checkout, "checkout", "-q", "--", "a.py")  # back to the commit, then the patch rebuilds the code
    _git(checkout, "apply", str(run.code_diff))
    assert (checkout / "a.py").read_text() == "x = 2\n"
