"""`GLOWRL_NO_SKIP=1` turns a skip into a failure, except for `gpu` and `may_skip` tests (tests/no_skips.py).

python -m pytest tests/test_no_skips.py
"""

import os
import subprocess
import sys

import pytest
from utils import REPO


SUITE = """
import pytest

def test_runs():
    pass

def test_needs_something_missing():
    pytest.skip("needs X; install it")

@pytest.mark.gpu
def test_on_a_gpu():
    pytest.skip("no CUDA device")

@pytest.mark.may_skip
@pytest.mark.skipif(True, reason="by design here")
def test_by_design():
    pass
"""


@pytest.mark.parametrize("no_skip", ["1", None])
def test_a_skip_fails_under_glowrl_no_skip(tmp_path, no_skip):
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    env = {k: v for k, v in os.environ.items() if k != "GLOWRL_NO_SKIP"}
    env |= {"PYTHONPATH": str(REPO / "tests")} | ({"GLOWRL_NO_SKIP": no_skip} if no_skip else {})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no_skips", "-p", "no:cacheprovider", "-q", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1]
    if no_skip:
        assert result.returncode == 1, result.stdout
        assert "1 failed, 1 passed, 2 skipped in" in summary
        assert "skipped under GLOWRL_NO_SKIP=1, where every test must run: needs X; install it" in result.stdout
    else:
        assert result.returncode == 0, result.stdout
        assert "1 passed, 3 skipped in" in summary
