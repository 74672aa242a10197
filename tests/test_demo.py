"""`glowrl demo` at CI size (same code path, a few steps) writes a report with every section, with and without the
teacher (stage 0).

python -m pytest tests/test_demo.py
"""

import json

import pytest

from glowrl.cli import main as glowrl_main


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("teacher", [False, True], ids=["synthetic", "teacher"])
def test_demo_report_has_every_section(tmp_path, teacher):
    root = tmp_path / "demo"
    assert glowrl_main(["demo", "--size", "ci", "--output_dir", str(root), *([] if teacher else ["--synthetic"])]) == 0
    report = (root / "report.md").read_text()
    for section in (
        "## Results",
        "## SFT -> RL hand-off",
        "## Learning checks",
        "## GLOW weights per epoch",
        "## Training curves",
    ):
        assert section in report, section
    data = json.loads((root / "report.json").read_text())
    assert data["teacher"] is teacher
    assert set(data["figures"]) == {"base", "sft", "rl"}
    for row in data["figures"].values():
        for split in ("in_domain", "out_of_domain"):
            low, high = row[f"{split}_ci"]
            assert 0 <= low <= row[f"{split}_accuracy"] <= high <= 1
        assert row["in_domain_entropy"] > 0
    assert {"before", "after"} <= set(data["handoff"])
    assert data["handoff"]["before"]["prompts"] == 4
    assert [c["check"] for c in data["checks"]] == ["SFT learned the task", "RL improved the reward"]
    assert data["positives"] + data["negatives"] == data["train_trajectories"] > 0
    assert [row["epoch"] for row in data["glow_weights"]] == [0, 1]
    for png in ("glow_weights.png", "sft_loss.png", "rl.png", "readiness.png"):
        assert (root / png).stat().st_size > 10_000, png
    # the demo ran the real pipeline: its manifest and recipe are there, every stage done
    manifest = json.loads((root / "pipeline.json").read_text())
    stages = ["generate", "sft", "rl", "eval"] if teacher else ["sft", "rl", "eval"]
    assert {s: manifest["stages"][s]["status"] for s in stages} == dict.fromkeys(stages, "done")
    assert (root / "recipe.yaml").is_file()
    if teacher:  # the SFT data are the teacher's samples, labelled by the grader
        samples = [json.loads(line) for line in (root / "generate" / "trajectories.jsonl").open()]
        assert len(samples) == 24 * 4 == data["train_trajectories"]
        assert all(isinstance(s["correct"], bool) for s in samples)


def test_demo_refuses_a_non_empty_output_dir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert glowrl_main(["demo", "--size", "ci", "--output_dir", str(tmp_path)]) == 2
    assert "--output_dir" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()
