"""The eval stage, the SFT -> RL hand-off report, and evaluation coverage (domains, MMLU / MMLU-Pro schemas, suites).

python -m pytest tests/test_eval_stage.py
"""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from utils import REPO

from glowrl.cli import main as glowrl_main
from glowrl.evaluation.eval_sets import BENCHMARKS, SUITES, load_problems, select_benchmarks, split_choices
from glowrl.evaluation.readiness import advice, group_has_signal, handoff_figures, readiness, total_rewards
from glowrl.rewards import get_reward_funcs
from glowrl.stages.rl import handoff_text


def test_handoff_figures_against_hand_computed_values():
    correct = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
    entropy = [[0.1] * 4, [1.0] * 4, [0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4]]
    tokens = [[10] * 4, [10] * 4, [10, 10, 10, 10], [5, 5, 15, 15]]
    truncated = [[0] * 4, [1, 0, 0, 0], [0] * 4, [0, 0, 0, 1]]
    f = handoff_figures(correct, entropy, tokens, truncated)
    assert f["mean_reward"] == pytest.approx(7 / 16)
    assert f["share_all_correct"] == 0.25 and f["share_all_wrong"] == 0.25 and f["share_no_signal"] == 0.5
    # pass@1 = mean of c/4: (1 + 0 + .25 + .5) / 4; pass@2 = mean of 1 - C(4-c,2)/C(4,2): (1 + 0 + .5 + 5/6) / 4
    assert f["pass@1"] == pytest.approx(1.75 / 4) and f["pass@2"] == pytest.approx((1 + 0 + 0.5 + 5 / 6) / 4)
    assert f["pass@4"] == pytest.approx(3 / 4)
    # token-weighted: (4 + 40 + 20 + (1 + 1 + 6 + 6)) / (40 + 40 + 40 + 40) = 78 / 160
    assert f["entropy"] == pytest.approx(78 / 160)
    # per prompt: .1, 1.0, .5, 14/40 = .35 -> sorted .1 .35 .5 1.0: p50 = (.35 + .5) / 2, p10 = .1 + .3 * .25
    assert f["entropy_p50"] == pytest.approx(0.425) and f["entropy_p10"] == pytest.approx(0.175)
    assert f["truncation_rate"] == pytest.approx(2 / 16)
    unscorable = handoff_figures([[None, None], [1, 0]], [[0.1, 0.1]] * 2, [[1, 1]] * 2, [[0, 0]] * 2)
    assert unscorable["unscorable_prompts"] == 1 and unscorable["mean_reward"] == 0.5


def test_handoff_reward_figures_are_grpos_total_reward():
    # The shipped recipes' rewards: math_accuracy (1/0, None for a gold that does not parse) and boxed_format, weights
    # [1.0, 0.1]. TRL sums w_i r_i over the functions that scored (nansum), so:
    correct = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [None] * 4]
    rewards = [
        [[0, 1], [0, 1], [0, 0], [0, 0]],  # all wrong, boxed twice: totals .1 .1 0 0 -> variance, a gradient
        [[1, 1]] * 4,  # all right and boxed: 1.1 x 4 -> no signal
        [[1, 1], [0, 1], [0, 1], [0, 1]],  # 1.1 .1 .1 .1
        [[None, 1], [None, 1], [None, 0], [None, 1]],  # gold unparseable: TRL still sees boxed_format vary
    ]
    f = handoff_figures(
        correct, [[0.1] * 4] * 4, [[3] * 4] * 4, [[0] * 4] * 4, rewards, [1.0, 0.1], ["math_accuracy", "boxed_format"]
    )
    assert f["mean_reward"] == pytest.approx((0.2 + 4.4 + 1.4 + 0.3) / 16)  # TRL's logged `reward`
    assert f["reward_means"] == pytest.approx({"math_accuracy": 5 / 12, "boxed_format": 13 / 16})
    assert f["share_no_signal"] == 0.25  # only the all-correct group; correctness alone would say 2 of 3
    # correctness beside it, over the 3 prompts whose gold parses; the fourth is counted apart, not as wrong
    assert f["unscorable_prompts"] == 1 and f["scorable_prompts"] == 3
    assert f["accuracy"] == pytest.approx(5 / 12)
    assert f["share_all_wrong"] == pytest.approx(1 / 3) and f["share_all_correct"] == pytest.approx(1 / 3)
    assert f["pass@4"] == pytest.approx(2 / 3)


def test_group_signal_as_trl_computes_advantages():
    weights = [1.0, 1.0]
    # math [1, 0] and boxed [0, 1]: totals 1 and 1 -> GRPO's group-normalised advantage is 0 ...
    crossing = [[1, 0], [0, 1]]
    assert not group_has_signal(crossing, weights, "sum_then_normalize")
    # ... but normalise-then-sum normalises each function within the group first: both vary, a signal
    assert group_has_signal(crossing, weights, "normalize_then_sum")
    assert not group_has_signal([[1, 0], [1, 0]], weights, "normalize_then_sum")
    assert not group_has_signal([[0, 1], [0, 1]], [1.0, 0.0], "normalize_then_sum")  # a weight of 0 adds nothing
    # a group with one scored completion has no advantage (TRL turns the NaN into 0)
    assert not group_has_signal([[None, None], [1, None]], weights, "sum_then_normalize")
    assert total_rewards([[None, None], [1, None], [None, 1]], [1.0, 0.1]) == [None, 1.0, 0.1]
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        group_has_signal(crossing, weights, "sum")


def test_handoff_figures_when_no_completion_has_a_token():
    f = handoff_figures([[0, 0], [1, 0]], [[0.0, 0.0]] * 2, [[0, 0]] * 2, [[0, 0]] * 2)  # raised ZeroDivisionError
    assert f["entropy"] is None and f["entropy_p10"] is None and f["entropy_p90"] is None
    assert f["truncation_rate"] == 0.0 and f["share_no_signal"] == 0.5
    text = handoff_text("before RL", f | {"advice": advice(f | {"share_no_signal": 0.9}, 1.0)})
    assert "entropy n/a nats" in text and "(now 1.0; entropy n/a)" in text


def test_readiness_counts_prompts_with_an_unparseable_gold_apart(tiny_model_dir):
    prompts = [[{"role": "user", "content": "What is 1 + 1?"}]] * 2
    golds = ["2", "\\frac{"]  # the second does not parse: math_accuracy returns None
    figures = readiness(
        tiny_model_dir,
        prompts,
        golds,
        num_generations=2,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=3,
        reward_funcs=get_reward_funcs(["math_accuracy", "boxed_format"]),
        reward_weights=[1.0, 0.1],
        columns={"prompt": prompts, "answer": golds},
    )
    assert figures["pass_rates"][1] is None and figures["pass_rates"][0] in (0.0, 0.5, 1.0)  # was 0.0
    assert figures["unscorable_prompts"] == 1 and figures["reward_weights"] == [1.0, 0.1]
    assert set(figures["reward_means"]) == {"math_accuracy", "boxed_format"}


def test_advice_says_which_way_to_move():
    hard = {"share_no_signal": 0.8, "share_all_wrong": 0.7, "share_all_correct": 0.1, "entropy": 0.05}
    assert "too hard" in advice(hard, 1.0) and "easier prompts" in advice(hard, 1.0)
    easy = {"share_no_signal": 0.8, "share_all_wrong": 0.1, "share_all_correct": 0.7, "entropy": 0.05}
    assert "too easy" in advice(easy, 1.0) and "harder prompts" in advice(easy, 1.0)
    assert advice({"share_no_signal": 0.4, "share_all_wrong": 0.4, "share_all_correct": 0.0}, 1.0) is None


def test_advice_tells_a_model_without_the_answer_format_from_prompts_too_hard():
    answered = [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]  # 11 of 12 samples give no boxed answer
    f = handoff_figures([[0] * 4] * 3, [[1.0] * 4] * 3, [[8] * 4] * 3, [[1, 1, 0, 0]] * 3, answered=answered)
    assert f["no_answer_rate"] == pytest.approx(11 / 12) and f["share_all_wrong"] == 1.0
    text = advice(f, 1.0)
    assert "has not learned the answer format" in text and "92% of the samples give no final" in text
    assert "50% run out of tokens" in text and "easier prompts" not in text and "train SFT further" in text
    answering = handoff_figures([[0] * 4] * 3, [[1.0] * 4] * 3, [[8] * 4] * 3, [[0] * 4] * 3, answered=[[1] * 4] * 3)
    assert answering["no_answer_rate"] == 0.0 and "too hard" in advice(answering, 1.0)  # it answers, wrongly


MMLU_ROWS = [
    {"question": "What is 2 + 2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
    {"question": "Capital of France?", "subject": "geo", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 0},
]
MMLU_PRO_ROWS = [
    {
        "question_id": 70,
        "question": "Which is prime?",
        "options": ["4", "6", "7", "8", "9", "10", "12", "14", "15", "16"],
        "answer": "C",
        "answer_index": 2,
        "cot_content": "",
        "category": "math",
        "src": "ori_mmlu-x",
    }
]


@pytest.mark.parametrize(
    ("name", "rows", "suffix"), [("mmlu", MMLU_ROWS, ".parquet"), ("mmlu_pro", MMLU_PRO_ROWS, ".jsonl")]
)
def test_mmlu_and_mmlu_pro_load_from_their_schemas_with_shuffled_options(tmp_path, name, rows, suffix):
    from datasets import Dataset

    path = tmp_path / f"local_{name}{suffix}"
    if suffix == ".parquet":
        Dataset.from_list(rows).to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = replace(BENCHMARKS[name], path=path)  # the Hub spec, its source swapped for the local copy
    assert spec.hub is not None and spec.kind == "mc"
    for row, problem in zip(rows, load_problems(spec, choice_seed=0), strict=True):
        options = row["choices"] if name == "mmlu" else row["options"]
        right = options[row["answer"]] if name == "mmlu" else options["ABCDEFGHIJ".index(row["answer"])]
        stem, shuffled, _ = split_choices(problem.question)
        assert stem.startswith(row["question"]) and sorted(shuffled) == sorted(options)
        assert shuffled["ABCDEFGHIJ".index(problem.gold)] == right  # the gold letter follows the right option
    custom = select_benchmarks([], [str(path)], schema=name, domain="out")[0]  # the same file through the CLI's path
    assert custom.in_domain is False and [p.gold for p in load_problems(custom)] == [
        p.gold for p in load_problems(spec)
    ]


def test_the_paper_suite_names_its_in_and_out_of_domain_sets():
    specs = select_benchmarks(["paper"], [])
    assert [s.name for s in specs if s.in_domain] == SUITES["paper_in_domain"]
    assert [s.name for s in specs if not s.in_domain] == ["mmlu", "mmlu_pro", "gpqa_diamond", "bbh"]


def test_a_custom_file_given_as_out_of_domain_is_averaged_there(tmp_path, tiny_model_dir):
    data = tmp_path / "longer.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(2))
    )
    output = tmp_path / "r.json"
    argv = [
        "eval",
        "--model",
        tiny_model_dir,
        "--benchmarks",
        "amc23",
        "--benchmark_file",
        str(data),
        "--domain",
        "out",
    ]
    assert glowrl_main([*argv, "--max_problems", "2", "--max_new_tokens", "4", "--output", str(output)]) == 0
    averages = json.loads(output.read_text())["models"][0]["averages"]
    assert averages["in_domain"]["benchmarks"] == ["amc23"] and averages["out_of_domain"]["benchmarks"] == ["longer"]
    assert len(averages["out_of_domain"]["accuracy_ci"]) == 2


def eval_recipe(tmp_path, models=None, **changes) -> str:
    recipe = {
        "models": models,
        "benchmarks": ["amc23", "aime24"],
        "max_problems": 2,
        "max_new_tokens": 4,
        "output_dir": str(tmp_path / "eval"),
        **changes,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_the_eval_stage_writes_results_and_a_rerun_evaluates_only_what_changed(tmp_path, tiny_model_dir, monkeypatch):
    import glowrl.evaluation.run

    recipe = eval_recipe(tmp_path, [tiny_model_dir])
    assert glowrl_main(["eval", "--config", recipe]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["complete"] and list(results["models"][0]["benchmarks"]) == ["amc23", "aime24"]
    assert "[" in (tmp_path / "eval" / "results.md").read_text()  # accuracies carry their interval

    def refuse(*args, **kwargs):
        raise AssertionError("a cached evaluation was run again")

    monkeypatch.setattr(glowrl.evaluation.run, "evaluate", refuse)
    assert glowrl_main(["eval", "--config", recipe]) == 0  # nothing changed: everything cached
    calls = []
    monkeypatch.setattr(
        glowrl.evaluation.run,
        "evaluate",
        lambda models, specs, *a, **k: (
            calls.append(specs)
            or {"models": [{"benchmarks": {s.name: results["models"][0]["benchmarks"]["amc23"] for s in specs}}]}
        ),
    )
    assert (
        glowrl_main(["eval", "--config", eval_recipe(tmp_path, [tiny_model_dir], benchmarks=["amc23", "math500"])])
        == 0
    )
    assert [[s.name for s in specs] for specs in calls] == [["math500"]]  # only the new benchmark


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"benchmarks": ["math501"]}, "unknown benchmark 'math501'; valid names: math500"),
        ({"models": None}, "the eval stage has no model to evaluate"),
    ],
)
def test_bad_eval_recipes_are_one_line_and_write_nothing(tmp_path, capsys, tiny_model_dir, changes, message):
    assert glowrl_main(["eval", "--config", eval_recipe(tmp_path, **{"models": [tiny_model_dir], **changes})]) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "eval").exists()


def test_readiness_command(tmp_path, capsys, sft_checkpoint, addition_file):
    recipe = yaml.safe_load((REPO / "recipes/tiny/grpo.yaml").read_text()) | {"dataset_paths": [addition_file]}
    recipe.update(num_generations=4, max_completion_length=24)
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    output = tmp_path / "handoff.json"
    argv = ["readiness", "--model", sft_checkpoint, "--config", str(path), "--prompts", "6", "--output", str(output)]
    assert glowrl_main(argv) == 0
    figures = json.loads(output.read_text())
    assert figures["prompts"] == 6 and figures["num_generations"] == 4 and len(figures["pass_rates"]) == 6
    assert 0 <= figures["share_no_signal"] <= 1 and figures["entropy"] > 0
    assert "hand-off report" in capsys.readouterr().out
    no_template = tmp_path / "no_template"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(sft_checkpoint).save_pretrained(no_template)
    tokenizer = AutoTokenizer.from_pretrained(sft_checkpoint)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(no_template)
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    argv[2] = str(no_template)
    assert glowrl_main([*argv[:-2], "--output", str(tmp_path / "none.json")]) == 2
    assert "has no chat_template" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "none.json").exists()


def test_a_failed_report_after_rl_keeps_the_trained_model_and_says_so(
    tmp_path, capsys, sft_checkpoint, addition_file, monkeypatch
):
    import glowrl.stages.rl as rl_stage

    real, calls = rl_stage.handoff_figures_for, []

    def fail_after_training(*args):  # fault injection: the report after RL runs out of memory, as vLLM may
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (injected)")
        return real(*args)

    monkeypatch.setattr(rl_stage, "handoff_figures_for", fail_after_training)
    recipe = yaml.safe_load((REPO / "recipes/tiny/grpo.yaml").read_text()) | {"dataset_paths": [addition_file]}
    recipe.update(
        model_name_or_path=sft_checkpoint,
        output_dir=str(tmp_path / "rl"),
        num_generations=4,
        max_completion_length=16,
        max_steps=1,
        per_device_train_batch_size=8,
        readiness_prompts=4,
        save_strategy="no",
        report_to="none",
    )
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert glowrl_main(["rl", "--config", str(path)]) == 0
    assert (tmp_path / "rl" / "model.safetensors").is_file()
    report = json.loads((tmp_path / "rl" / "readiness.json").read_text())
    assert report["before"]["prompts"] == 4 and "after" not in report
    assert report["after_error"] == "RuntimeError: CUDA out of memory (injected)"
    assert (
        "the hand-off report after RL failed (RuntimeError: CUDA out of memory (injected))" in capsys.readouterr().out
    )


def test_the_eval_cache_is_keyed_on_model_content_not_modification_time(tmp_path, tiny_model_dir):
    from glowrl.stages.eval import fingerprint

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    before = fingerprint(str(model))
    os.utime(model / "config.json")  # touched: the same model
    assert fingerprint(str(model)) == before
    weights = model / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # another model of the same size, its time kept (as cp -p would)
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(str(model)) != before
