"""`glowrl demo` at CI size (same code path, a few steps) writes a report with every section, with and without the
teacher (stage 0).

python -m pytest tests/test_demo.py
"""

import json
from pathlib import Path

import pytest

from glowrl.cli import main as glowrl_main


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("teacher", [False, True], ids=["synthetic", "teacher"])
def test_demo_report_has_every_section(tmp_path, capfd, teacher):
    root = tmp_path / "demo"
    assert glowrl_main(["demo", "--size", "ci", "--output_dir", str(root), *([] if teacher else ["--synthetic"])]) == 0
    out = capfd.readouterr().out  # the demo's and its stage processes' output: each report printed once
    assert out.count("hand-off report, before RL") == out.count("hand-off report, after RL") == 1
    assert out.count("| in_domain | base |") == 1
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
    assert set(data["rl_minus_sft"]) == {"in_domain", "out_of_domain"}  # the README's RL - SFT deltas, paired
    assert "RL - SFT (accuracy points, paired 95% interval over the same problems): in-domain " in report
    assert {"before", "after"} <= set(data["handoff"])
    assert "| share_no_signal |" in report and "| mean_reward |" in report
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


@pytest.mark.parametrize("study", [[], ["--study"]], ids=["demo", "study"])
def test_demo_refuses_a_non_empty_output_dir(tmp_path, capsys, study):
    (tmp_path / "keep.txt").write_text("x")
    assert glowrl_main(["demo", *study, "--size", "ci", "--output_dir", str(tmp_path)]) == 2
    assert "--output_dir" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()


def test_demo_study_pretrains_a_base_and_runs_every_arm_and_seed(tmp_path):
    """`glowrl demo --study` at CI size: the pretrained base, its evaluation, 4 arms x 2 seeds, study.json/md."""
    root = tmp_path / "study"
    assert glowrl_main(["demo", "--study", "--size", "ci", "--output_dir", str(root)]) == 0
    study = json.loads((root / "study.json").read_text())
    assert study["arms"] == ["positive", "negative", "all", "glow"] and study["reference"] == "positive"
    assert sorted((r["arm"], r["seed"]) for r in study["runs"]) == sorted(
        (arm, seed) for arm in study["arms"] for seed in (0, 1)
    )
    assert all(r["status"] == "done" for r in study["runs"])
    # out-of-domain is the base's other tasks, evaluated on the base once with the study's sampling
    ood = json.loads((root / "base_eval" / "results.json").read_text())["models"][0]["averages"]["out_of_domain"]
    assert set(ood["benchmarks"]) == {"max_of_list", "next_term", "digit_count", "digit_sum"}
    assert study["base_model"]["out_of_domain"]["accuracy"] == ood["accuracy"]
    for arm in study["arms"]:
        figures = study["aggregate"][arm]
        assert figures["sft/in_domain/accuracy"]["n"] == 2
        assert {"sft/out_of_domain/pass@2", "rl/out_of_domain/accuracy", "sft/heldout_loss"} <= set(figures)
    # every arm trained for the same number of SFT optimizer steps
    steps = {
        json.loads((Path(r["output_root"]) / "sft" / "trainer_state.json").read_text())["global_step"]
        for r in study["runs"]
    }
    assert steps == {study["sft_steps"]}
    text = (root / "study.md").read_text()
    assert "## Differences from `positive`, paired by seed" in text
    assert "## The base model every arm starts from" in text
    assert "| model / domain / benchmark | base | positive | negative | all | glow |" in text
    assert set(study["base_benchmarks"]) == {"in_domain", *ood["benchmarks"]}
    for png in study["plots"]:
        assert Path(png).stat().st_size > 10_000, png


def test_demo_study_refuses_synthetic(tmp_path, capsys):
    """--synthetic is the demo's choice of data; the toy study has no other, so the flag is refused, not ignored."""
    assert glowrl_main(["demo", "--study", "--synthetic", "--output_dir", str(tmp_path / "s")]) == 2
    assert "--synthetic" in capsys.readouterr().err and not (tmp_path / "s").exists()
