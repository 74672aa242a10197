"""`GLOWRL_NO_SKIP=1` (what `.ci/run` sets): a test that skips fails instead, so a missing install cannot pass unseen.

Two kinds of test may still skip: `gpu` tests (they need a CUDA device, which CI's machine may lack), and tests marked
`may_skip`, whose skip is by design on some installs (one checks the error a missing vLLM gives, so it skips where
vLLM is installed). tests/conftest.py imports these hooks.
"""

import os

import pytest


NO_SKIP_ENV = "GLOWRL_NO_SKIP"
ALLOWED_MARKERS = ("gpu", "may_skip")


def pytest_configure(config):
    config.addinivalue_line("markers", "may_skip: a test whose skip is by design on some installs (GLOWRL_NO_SKIP)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(NO_SKIP_ENV) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    if any(item.get_closest_marker(name) for name in ALLOWED_MARKERS):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped under {NO_SKIP_ENV}=1, where every test must run: {reason}"
