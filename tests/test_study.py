"""`glowrl study`: the aggregation against hand-computed values, and a tiny study end to end (2 arms x 2 seeds).

python -m pytest tests/test_study.py
"""

import json
import math

import pytest
import yaml
from utils import REPO

from glowrl.cli import main as glowrl_main
from glowrl.io import write_jsonl
from glowrl.study.aggregate import aggregate, differences, run_metrics, study_markdown
from glowrl.toy.arithmetic import generate_problems, generate_trajectories


T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}  # Student's t quantile 0.975 by degrees of freedom


def runs(table: dict) -> list[dict]:
    return [
        {"arm": arm, "seed": seed, "status": "done", "metrics": {"m": value}}
        for arm, values in table.items()
        for seed, value in enumerate(values)
    ]


def test_means_and_intervals_over_seeds_by_hand():
    result = aggregate(runs({"a": [0.2, 0.4, 0.6], "b": [0.5, 0.5]}))
    # a: mean .4, sd .2, se .2/sqrt(3) = .11547, half = 4.30265 * .11547 = .49683
    assert result["a"]["m"]["mean"] == pytest.approx(0.4)
    assert (result["a"]["m"]["low"], result["a"]["m"]["high"]) == pytest.approx(
        (0.4 - 0.49683, 0.4 + 0.49683), abs=1e-5
    )
    assert result["a"]["m"]["n"] == 3
    # b: two equal values: sd 0, so the interval is the point
    assert (result["b"]["m"]["low"], result["b"]["m"]["high"]) == pytest.approx((0.5, 0.5))
    one = aggregate(runs({"c": [0.3]}))["c"]["m"]
    assert one["mean"] == 0.3 and math.isnan(one["low"]) and one["n"] == 1


def test_differences_are_paired_by_seed_by_hand():
    table = {"ref": [0.10, 0.30, 0.20, 0.50], "arm": [0.15, 0.40, 0.20, 0.65]}
    diff = differences(runs(table), "ref")["arm"]["m"]
    # per-seed differences .05 .10 0 .15: mean .075, sd .06455, se .032275, half = 3.18245 * .032275 = .10271
    assert diff["delta"] == pytest.approx(0.075)
    assert (diff["low"], diff["high"]) == pytest.approx((0.075 - 0.10271, 0.075 + 0.10271), abs=1e-5)
    assert diff["n"] == 4
    unpaired = aggregate(runs(table))
    assert unpaired["arm"]["m"]["high"] - unpaired["arm"]["m"]["low"] > 2 * (diff["high"] - diff["low"])
    # a seed only one arm finished is left out of the pairs
    partial = runs(table)[:-1]
    assert differences(partial, "ref")["arm"]["m"]["n"] == 3
    failed = [*runs(table), {"arm": "arm", "seed": 9, "status": "failed", "error": "x"}]
    assert differences(failed, "ref")["arm"]["m"]["n"] == 4 and aggregate(failed)["arm"]["m"]["n"] == 4


def test_run_metrics_read_the_eval_results_and_trainer_states(tmp_path):
    results = {
        "models": [
            {"model": "/r/sft", "name": "sft", "averages": {"in_domain": {"accuracy": 0.5, "pass@2": 0.7,
             "accuracy_ci": [0.1, 0.9], "benchmarks": ["x"], "entropy": 0.3}},
             "benchmarks": {"x": {"domain": "in_domain", "metrics": {"accuracy": 0.5, "pass@2": 0.7}}}},
            {"model": "/r/rl", "name": "rl", "averages": {"out_of_domain": {"accuracy": 0.25}}},
        ]
    }  # fmt: skip
    for stage, history in (
        ("sft", [{"loss": 1.0, "step": 1}, {"eval_loss": 2.0, "step": 1}, {"eval_loss": 1.5, "step": 2}]),
        ("rl", [{"reward": r, "step": i} for i, r in enumerate([0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.5])]),
    ):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": 2}))
    metrics = run_metrics(results, {"/r/sft": "sft", "/r/rl": "rl"}, {s: tmp_path / s for s in ("sft", "rl")})
    assert metrics == {
        "sft/in_domain/accuracy": 0.5,
        "sft/in_domain/pass@2": 0.7,
        "sft/in_domain/entropy": 0.3,
        "sft/in_domain/x/accuracy": 0.5,  # each benchmark's accuracy, next to its domain's average
        "rl/out_of_domain/accuracy": 0.25,
        "sft/heldout_loss": 1.5,  # the last held-out loss
        "rl/train_reward": 0.5 / 3,  # the mean of the last third (3 of 10) of the logged rewards
    }


def test_the_markdown_marks_differences_whose_interval_excludes_zero():
    table = runs({"ref": [0.10, 0.30, 0.20, 0.50], "arm": [0.15, 0.40, 0.25, 0.65]})
    for run in table:
        run["metrics"] = {"sft/in_domain/accuracy": run["metrics"]["m"]}
    study = {"name": "s", "base": "b.yaml", "arms": ["ref", "arm"], "seeds": [0, 1, 2, 3], "sft_steps": 10,
             "reference": "ref", "runs": table}  # fmt: skip
    study |= {"aggregate": aggregate(table), "differences": differences(table, "ref")}
    text = study_markdown(study)
    assert "| metric | ref (4 seeds) | arm (4 seeds) |" in text
    assert "| sft/in_domain/accuracy | 27.5 [" in text
    # .05 .10 .05 .15: all positive, so the paired interval excludes 0
    assert "| sft/in_domain/accuracy | +8.8 [" in text and text.count("]* |") == 1
    assert "The base model" not in text and "Wall time" not in text


def test_no_star_without_spread_and_digits_that_show_the_value():
    # Two seeds whose difference is the same -7.4e-05: a zero-width interval (no measured spread) is no evidence, and
    # the figure shows as -0.0074 points, not as "-0.0 [-0.0, -0.0]*".
    table = runs({"ref": [0.5, 0.25], "arm": [0.5 - 7.4e-5, 0.25 - 7.4e-5]})
    for run in table:
        run["metrics"] = {"sft/in_domain/accuracy": run["metrics"]["m"], "rl/train_reward": run["metrics"]["m"]}
    study = {"name": "s", "base": "b.yaml", "arms": ["ref", "arm"], "seeds": [0, 1], "sft_steps": 10,
             "reference": "ref", "runs": table}  # fmt: skip
    study |= {"aggregate": aggregate(table), "differences": differences(table, "ref")}
    text = study_markdown(study)
    assert "| sft/in_domain/accuracy | -0.0074 [-0.0074, -0.0074] |" in text
    assert "| rl/train_reward | -0.000074 [-0.000074, -0.000074] |" in text
    assert "]*" not in text
    # the usual digits where they show the value: 1 decimal for %, 3 otherwise
    assert "| sft/in_domain/accuracy | 37.5 [-121.3, 196.3] |" in text


def test_the_markdown_of_one_arm_has_no_differences_and_shows_the_base_model():
    table = runs({"only": [0.10, 0.30]})
    for run in table:
        run["metrics"] = {"sft/in_domain/accuracy": run["metrics"]["m"], "rl/in_domain/accuracy": 0.5,
                          "sft/out_of_domain/b1/accuracy": 0.25, "sft/out_of_domain/b2/accuracy": 0.75}  # fmt: skip
    study = {"name": "s", "base": "b.yaml", "arms": ["only"], "seeds": [0, 1], "sft_steps": 10, "reference": "only",
             "runs": table, "base_model": {"in_domain": {"accuracy": 0.125}}, "elapsed_s": 90,
             "base_benchmarks": {"b1": 0.5}}  # fmt: skip
    study |= {"aggregate": aggregate(table), "differences": differences(table, "only")}
    text = study_markdown(study)
    assert "## Differences" not in text
    # the base model's figures sit under the SFT metric they start from, once (not again under rl/)
    assert "| in_domain/accuracy | 12.5 |" in text and text.count("| in_domain/accuracy |") == 1
    assert "Wall time of the whole study: 1.5 min." in text
    # per benchmark, with the base model's accuracy where it was measured
    assert "| model / domain / benchmark | base | only |" in text
    assert "| sft / out_of_domain / b1 | 50.0 | 25.0 [25.0, 25.0] |" in text
    assert "| sft / out_of_domain / b2 | – | 75.0 [75.0, 75.0] |" in text
    # one benchmark per domain: the table would repeat the domain averages
    for run in table:
        del run["metrics"]["sft/out_of_domain/b2/accuracy"]
        run["metrics"]["sft/in_domain/b0/accuracy"] = 0.5
    assert "## Accuracy per benchmark" not in study_markdown(study | {"aggregate": aggregate(table)})


# A tiny study, end to end ------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_study(tmp_path, tiny_model_dir):
    """A study recipe of 2 arms x 2 seeds on the tiny model, seconds per run; returns a writer of variants."""
    data = tmp_path / "data"
    write_jsonl(generate_trajectories(8, seed=0), data / "train.jsonl")
    write_jsonl(generate_trajectories(4, seed=7, samples_per_problem=1, negative_fraction=0), data / "heldout.jsonl")
    write_jsonl(generate_problems(4, seed=0, split="in_domain"), data / "in.jsonl")
    write_jsonl(generate_problems(4, seed=0, split="out_of_domain"), data / "out.jsonl")
    base = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
    base.update(model_name_or_path=tiny_model_dir, dataset_paths=[str(data / "train.jsonl")], logging_steps=1)
    base["sft"].update(
        num_train_epochs=2, per_device_train_batch_size=8, save_strategy="no", eval_strategy="epoch",
        eval_dataset_paths=[str(data / "heldout.jsonl")],
    )  # fmt: skip
    base["rl"].update(
        dataset_paths=[str(data / "train.jsonl")], max_steps=1, num_generations=4, per_device_train_batch_size=8,
        max_completion_length=16, save_strategy="no", readiness_prompts=0,
    )  # fmt: skip
    base["eval"] = {
        "benchmark_files": [str(data / "in.jsonl")], "ood_benchmark_files": [str(data / "out.jsonl")],
        "num_samples": 2, "max_new_tokens": 24, "batch_size": 16,
    }  # fmt: skip

    def write(base_changes=None, **study_changes):
        recipe = yaml.safe_load(yaml.safe_dump(base, sort_keys=False))
        for key, value in (base_changes or {}).items():
            if value is None:
                recipe.pop(key, None)
            else:
                recipe[key] = value
        (tmp_path / "base.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        study = {
            "base": str(tmp_path / "base.yaml"),
            "output_root": str(tmp_path / "study"),
            "seeds": 2,
            "reference": "positive",
            "arms": {
                "positive": {"sft": {"trajectories": "positive", "glow": False}},
                "glow": {"sft": {"trajectories": "all", "glow": True}},
            },
            **study_changes,
        }
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return str(path)

    return write


@pytest.mark.slow
def test_a_tiny_study_runs_every_arm_and_seed_and_a_rerun_skips_them(tiny_study, tmp_path, capsys):
    path = tiny_study(parallel=2)  # two runs at a time, each its own `glowrl pipeline` process
    assert glowrl_main(["study", "--config", path]) == 0
    root = tmp_path / "study"
    study = json.loads((root / "study.json").read_text())
    assert [(r["arm"], r["seed"], r["status"]) for r in study["runs"]] == [
        ("positive", 0, "done"), ("positive", 1, "done"), ("glow", 0, "done"), ("glow", 1, "done"),
    ]  # fmt: skip
    # The same optimizer-step budget for every arm: all (32 trajectories) at 2 epochs of 8 = 8 steps.
    assert study["sft_steps"] == 8
    for run in study["runs"]:
        state = json.loads((tmp_path / "study" / "runs" / run["arm"] / f"seed{run['seed']}" / "sft" /
                            "trainer_state.json").read_text())  # fmt: skip
        assert state["global_step"] == 8
        for key in ("sft/in_domain/accuracy", "rl/out_of_domain/pass@2", "sft/heldout_loss", "rl/train_reward"):
            assert key in run["metrics"], key
    for arm in ("positive", "glow"):
        figure = study["aggregate"][arm]["sft/in_domain/accuracy"]
        assert figure["n"] == 2 and figure["low"] <= figure["mean"] <= figure["high"]
    assert study["differences"]["glow"]["sft/heldout_loss"]["n"] == 2 and "positive" not in study["differences"]
    text = (root / "study.md").read_text()
    assert "| metric | positive (2 seeds) | glow (2 seeds) |" in text
    assert "| sft/out_of_domain/pass@2 |" in text and "## Differences from `positive`, paired by seed" in text
    for png in ("study_metrics.png", "study_pass_at_k.png", "study_entropy.png", "study_heldout_loss.png"):
        assert (root / png).stat().st_size > 10_000, png
    assert "[4/4] glow seed 1: done in" in capsys.readouterr().out

    # Again: every run is skipped, nothing is trained, the figures are the same.
    manifests = {p: p.read_text() for p in root.glob("runs/*/*/pipeline.json")}
    assert glowrl_main(["study", "--config", path]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    assert {p: p.read_text() for p in root.glob("runs/*/*/pipeline.json")} == manifests
    assert json.loads((root / "study.json").read_text())["aggregate"] == study["aggregate"]


@pytest.mark.slow
def test_a_failed_run_is_reported_and_the_rest_still_aggregate(tiny_study, tmp_path, capsys):
    rows = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    corrupt = tmp_path / "data" / "corrupt.jsonl"  # its first row is fine, so only loading it all finds the bad one
    corrupt.write_text("\n".join([*rows[:5], "{not json", *rows[5:]]) + "\n")
    path = tiny_study(seeds=[0], sft_steps=2, arms={
        "positive": {"sft": {"trajectories": "positive", "glow": False}},
        "broken": {"sft": {"dataset_paths": [str(corrupt)]}},
    })  # fmt: skip
    assert glowrl_main(["study", "--config", path]) == 1
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    statuses = {r["arm"]: r["status"] for r in study["runs"]}
    assert statuses == {"positive": "done", "broken": "failed"}
    broken = next(r for r in study["runs"] if r["arm"] == "broken")
    assert "corrupt.jsonl" in broken["error"] and "metrics" not in broken  # the stage's own error line
    assert "sft/in_domain/accuracy" in study["aggregate"]["positive"] and "broken" not in study["aggregate"]
    assert "## Runs without results" in (tmp_path / "study" / "study.md").read_text()
    assert "failed: broken seed 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changes", "base_changes", "message"),
    [
        ({"arms": {"positive": {}, "glow": {"sft": {"glwo": True}}}}, None,
         "arms.glow: unknown recipe key 'glwo' in section sft:"),
        ({"seeds": 0}, None, "seeds: give at least one seed"),
        ({"seeds": [1, 1]}, None, "seeds: [1, 1] repeats a seed"),
        ({}, {"eval": None}, "has no eval: section; a study compares arms by their evaluation"),
        ({"reference": "nope"}, None, "reference: 'nope' is not an arm"),
        ({"arms": {"a": {"seed": 3}}, "reference": "a"}, None, "arms.a: seed is set by the study for every run"),
        ({"sft_steps": 0}, None, "sft_steps: give auto or a positive number"),
        ({"parallel": 0}, None, "parallel: give the number of local runs at a time"),
        ({"seedz": 2}, None, "unknown recipe key 'seedz'"),
    ],
    ids=["unknown-key", "zero-seeds", "repeated-seed", "no-eval", "bad-reference", "arm-sets-seed", "zero-steps",
         "zero-parallel", "typo"],
)  # fmt: skip
def test_bad_studies_are_one_line_and_run_nothing(tiny_study, tmp_path, capsys, changes, base_changes, message):
    assert glowrl_main(["study", "--config", tiny_study(base_changes, **changes)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "study").exists()
