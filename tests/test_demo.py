"""`glowrl demo` at CI size (same code path, a few steps) writes a report with every section.

python -m pytest tests/test_demo.py
"""

import json

import pytest

from glowrl.cli import main as glowrl_main


pytestmark = pytest.mark.slow


def test_demo_report_has_every_section(tmp_path):
    root = tmp_path / "demo"
    assert glowrl_main(["demo", "--size", "ci", "--output_dir", str(root)]) == 0
    report = (root / "report.md").read_text()
    for section in ("## Results", "## Learning checks", "## GLOW weights per epoch", "## Training curves"):
        assert section in report, section
    data = json.loads((root / "report.json").read_text())
    assert set(data["figures"]) == {"base", "sft", "rl"}
    for row in data["figures"].values():
        assert {"in_domain_accuracy", "out_of_domain_accuracy", "in_domain_entropy", "out_of_domain_entropy"} <= set(
            row
        )
        assert row["in_domain_entropy"] > 0
    assert [c["check"] for c in data["checks"]] == ["SFT learned the task", "RL improved the reward"]
    assert data["positives"] > 0 and data["negatives"] > 0
    assert [row["epoch"] for row in data["glow_weights"]] == [0, 1]
    for png in ("glow_weights.png", "sft_loss.png", "rl.png"):
        assert (root / png).stat().st_size > 10_000, png
    # the demo ran the real pipeline: its manifest and recipe are there, both stages done
    manifest = json.loads((root / "pipeline.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("sft", "rl")] == ["done", "done"]
    assert (root / "recipe.yaml").is_file()


def test_demo_refuses_a_non_empty_output_dir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert glowrl_main(["demo", "--size", "ci", "--output_dir", str(tmp_path)]) == 2
    assert "--output_dir" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()
