"""Stage 0: a tiny teacher samples labelled trajectories; resume, shards, the chat-template round trip, the pipeline.

The teacher is the `sft_checkpoint` fixture: the tiny model after a few seconds of GLOW SFT on one-step additions
(30% of its training answers were off by one), so its samples contain natural mistakes.

python -m pytest tests/test_generate.py
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from transformers import AutoTokenizer
from utils import REPO, read_jsonl

from glowrl.cli import main as glowrl_main
from glowrl.data import TrajectoryArguments, build_trajectory_dataset
from glowrl.pipeline import run
from glowrl.teacher.run import sample_rows, summarize
from glowrl.teacher.sampler import Sample
from glowrl.teacher.templates import AssistantTurn


ROW_KEYS = {"problem_id", "sample_index", "problem", "prompt", "completion", "answer", "correct", "truncated"}
ROW_KEYS |= {"finish_reason", "num_tokens", "teacher", "empty"}


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    rows = [
        {"problem_id": f"add-{a}-{b}", "problem": f"What is {a} + {b}?", "answer": str(a + b)}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4)]
    ]
    path = tmp_path_factory.mktemp("problems") / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def generate_argv(teacher, problems, out, *extra):
    return [
        *["generate", "--teacher", teacher, "--dataset_paths", problems, "--output_dir", str(out)],
        *["--num_samples", "4", "--max_new_tokens", "24", "--batch_size", "2", "--seed", "7", *extra],
    ]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, sft_checkpoint, problems):
    out = tmp_path_factory.mktemp("generate") / "run"
    assert glowrl_main(generate_argv(sft_checkpoint, problems, out)) == 0
    return out


def test_every_problem_gets_its_samples_labelled_like_an_independent_check(generated, sft_checkpoint):
    rows = read_jsonl(generated / "trajectories.jsonl")
    assert len(rows) == 6 * 4 and all(set(row) == ROW_KEYS for row in rows)
    assert [(r["problem_id"], r["sample_index"]) for r in rows[:4]] == [("add-1-2", i) for i in range(4)]
    for row in rows:
        boxes = re.findall(r"\\boxed\{(-?\d+)\}", row["completion"])
        assert row["correct"] == (bool(boxes) and int(boxes[-1]) == int(row["answer"])), row["completion"]
        assert row["truncated"] == (row["finish_reason"] == "length") and row["teacher"] == sft_checkpoint
    assert 0 < sum(r["correct"] for r in rows) < len(rows)  # natural mistakes, and right answers
    assert len({r["completion"] for r in rows}) > 6  # samples of a problem differ
    summary = json.loads((generated / "generate.json").read_text())
    assert (summary["problems"], summary["samples"]) == (6, 24)
    assert summary["share_correct"] == pytest.approx(sum(r["correct"] for r in rows) / 24)
    assert len(summary["pass_rates"]) == 6 and (generated / "pass_rate.png").stat().st_size > 5_000


def test_sft_reads_the_generated_file_as_it_is(generated):
    dataset = build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(generated / "trajectories.jsonl")]))
    rows = read_jsonl(generated / "trajectories.jsonl")
    kept = [r for r in rows if not r["truncated"]]
    assert len(dataset) == len(kept) and dataset["correct"] == [r["correct"] for r in kept]
    assert (
        dataset[0]["prompt"] == kept[0]["prompt"] and dataset[0]["completion"][0]["content"] == kept[0]["completion"]
    )


def test_an_empty_sample_is_incorrect_marked_counted_and_left_out_of_sft(tmp_path, capsys):
    problem = {"problem_id": "add-1-2", "problem": "What is 1 + 2?", "answer": "3"}
    prompt = [{"role": "user", "content": problem["problem"]}]
    samples = [
        Sample("1 + 2 = 3.\nThe answer is \\boxed{3}.", 12, "stop"),
        Sample("", 1, "stop"),  # the teacher ended its turn at once, as a real teacher did 5 times in 200
        Sample(" \n", 2, "stop"),
        Sample("1 + 2 = 4.\nThe answer is \\boxed{4}.", 12, "stop"),
    ]
    rows = sample_rows(problem, AssistantTurn("<prompt>", "<think>\n"), prompt, samples, range(4), "teacher")
    assert [(r["correct"], r["empty"]) for r in rows] == [(True, False), (False, True), (False, True), (False, False)]
    assert rows[1]["completion"] == "<think>\n"  # the stored turn keeps the template's opening, so it looks non-empty
    path = tmp_path / "trajectories.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = SimpleNamespace(teacher="teacher", output_dir=str(tmp_path), num_samples=4)
    summary = summarize(args, rows, 4, 1.0, path)
    assert summary["empty"] == 2 and summary["share_correct"] == 0.25
    assert "empty=2" in capsys.readouterr().out
    dataset = build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(path)]))
    assert dataset["correct"] == [True, False]
    assert "Left out 2 trajectories whose completion is empty" in capsys.readouterr().out


def test_a_killed_run_resumes_to_the_same_file(tmp_path, generated, sft_checkpoint, problems):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "glowrl", *generate_argv(sft_checkpoint, problems, out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    file = out / "trajectories.jsonl"
    deadline = time.time() + 120
    while not (file.is_file() and len(file.read_text().splitlines()) >= 8) and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with file.open("a") as f:
        f.write('{"problem_id": "add-7-8", "sample_ind')  # and a torn last write, as a crash mid-append leaves
    assert glowrl_main(generate_argv(sft_checkpoint, problems, out)) == 0
    assert file.read_bytes() == (generated / "trajectories.jsonl").read_bytes()


def test_two_shards_merged_equal_one_run(tmp_path, generated, sft_checkpoint, problems):
    out = tmp_path / "sharded"
    for shard in ("1/2", "0/2"):
        assert glowrl_main(generate_argv(sft_checkpoint, problems, out, "--shard", shard)) == 0
    assert len(read_jsonl(out / "trajectories.shard-0-of-2.jsonl")) == 3 * 4
    assert glowrl_main(generate_argv(sft_checkpoint, problems, out, "--merge")) == 0
    assert (out / "trajectories.jsonl").read_bytes() == (generated / "trajectories.jsonl").read_bytes()


THINKING_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def test_a_template_that_opens_a_think_block_round_trips(tmp_path, sft_checkpoint, problems):
    template = tmp_path / "thinking.jinja"
    template.write_text(THINKING_TEMPLATE)
    out = tmp_path / "think"
    argv = generate_argv(sft_checkpoint, problems, out, "--chat_template_path", str(template), "--num_samples", "2")
    assert glowrl_main(argv) == 0
    tokenizer = AutoTokenizer.from_pretrained(sft_checkpoint)
    tokenizer.chat_template = THINKING_TEMPLATE
    for row in read_jsonl(out / "trajectories.jsonl"):
        assert row["completion"].startswith("<think>\n")  # what the generation prompt opened, the model never wrote
        generation_prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        conversation = [*row["prompt"], {"role": "assistant", "content": row["completion"]}]
        rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
        generated = row["completion"].removeprefix("<think>\n")
        assert rendered == generation_prompt + generated + "<|im_end|>\n"  # training sees exactly what was sampled


def test_a_template_that_rewrites_the_answer_is_refused(tmp_path, capsys, sft_checkpoint, problems):
    template = tmp_path / "strips.jinja"
    # a template that drops the thinking opening from assistant turns, as Qwen3's strips reasoning from history
    template.write_text(
        THINKING_TEMPLATE.replace("{{ message['content'] }}", "{{ message['content'] | replace('<think>\\n', '') }}")
    )
    out = tmp_path / "strips"
    assert glowrl_main(generate_argv(sft_checkpoint, problems, out, "--chat_template_path", str(template))) == 2
    assert "re-renders differently from what was generated" in capsys.readouterr().err
    assert not (out / "trajectories.jsonl").exists()


def test_a_rerun_with_other_settings_is_refused(tmp_path, capsys, generated, sft_checkpoint, problems):
    before = (generated / "trajectories.jsonl").read_bytes()
    assert glowrl_main(generate_argv(sft_checkpoint, problems, generated, "--temperature", "0.5")) == 2
    assert "holds samples drawn with other settings (temperature)" in capsys.readouterr().err
    assert (generated / "trajectories.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda argv, tmp: [*argv, "--num_samples", "0"], "num_samples must be at least 1"),
        (lambda argv, tmp: [*argv, "--shard", "3/2"], "shard: 3/2 needs 0 <= i < n"),
        (lambda argv, tmp: [*argv, "--merge"], "merge: shard 1/2 is missing"),
        (lambda argv, tmp: [*argv, "--answer_column", "gold"], "no answer column 'gold'"),
        (lambda argv, tmp: [*argv[:2], str(tmp / "bare"), *argv[3:]], "teacher: "),
    ],
    ids=["num_samples", "shard", "merge", "answer", "teacher"],
)
def test_bad_input_is_one_line(tmp_path, capsys, sft_checkpoint, problems, change, message):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text("{}")
    out = tmp_path / "out"
    if message.startswith("merge"):
        out.mkdir()
        (out / "trajectories.shard-0-of-2.jsonl").write_text("")
    argv = change(generate_argv(sft_checkpoint, problems, out), tmp_path)
    assert glowrl_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("glowrl: error: ") and message in err[-1], err
    assert not (out / "trajectories.jsonl").exists()


def test_generate_then_sft_then_rl_in_one_pipeline(tmp_path, sft_checkpoint, tiny_model_dir, problems):
    recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline_generate.yaml").read_text())
    recipe.update(model_name_or_path=tiny_model_dir, dataset_paths=[problems], output_root=str(tmp_path / "run"))
    recipe["generate"].update(teacher=sft_checkpoint, num_samples=4, max_new_tokens=24)
    recipe["sft"].update(num_train_epochs=1, save_strategy="no")
    recipe["rl"].update(max_steps=1, num_generations=4, per_device_train_batch_size=4, save_strategy="no")
    recipe["eval"].update(max_problems=3, max_new_tokens=16, num_samples=1)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert glowrl_main(["generate", "--config", str(path)]) == 0  # stage 0 alone first, as the recipe's header says
    first = (tmp_path / "run" / "generate" / "trajectories.jsonl").read_bytes()
    assert run(str(path), []) == 0  # then the pipeline takes it up instead of refusing it
    assert (tmp_path / "run" / "generate" / "trajectories.jsonl").read_bytes() == first  # nothing sampled again
    manifest = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("generate", "sft", "rl", "eval")] == ["done"] * 4
    generated = str(tmp_path / "run" / "generate" / "trajectories.jsonl")
    assert manifest["stages"]["sft"]["config"]["dataset_paths"] == [generated]  # linked by what generate produced
    assert manifest["stages"]["rl"]["config"]["dataset_paths"] == [problems]  # RL keeps the shared problems
    assert (tmp_path / "run" / "rl" / "model.safetensors").is_file()
    handoff = json.loads((tmp_path / "run" / "rl" / "readiness.json").read_text())
    assert handoff["before"]["prompts"] == handoff["after"]["prompts"] == 6  # the report before and after RL
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == [Path(tiny_model_dir).name, "sft", "rl"]  # base first
    assert all(set(m["averages"]) == {"in_domain", "out_of_domain"} for m in results["models"])
    assert run(str(path), [], runner=lambda command: pytest.fail(f"re-launched {command}")) == 0  # all done


def test_data_arms_from_generated_samples(tmp_path):
    rows = []
    for problem, labels in (("p1", [1, 1, 1, 0]), ("p2", [0, 0, 0, 1]), ("p3", [1, 1, 1, 1]), ("p4", [0, 0, 0, 0])):
        for i, label in enumerate(labels):
            rows.append(
                {"problem_id": problem, "problem": problem, "completion": f"{problem}-{i}", "correct": bool(label)}
            )
    rows.append({"problem_id": "p1", "problem": "p1", "completion": "cut", "correct": False, "truncated": True})
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def select(**options):
        dataset = build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(path)], **options))
        return [(g, c) for g, c in zip(dataset["group"], dataset["correct"], strict=True)]

    assert len(select()) == 16  # the truncated sample is dropped by default
    assert select(keep_truncated=True).count(("p1", False)) == 2  # ... or kept as a negative
    balanced = select(balance=True)
    assert sorted(balanced) == [("p1", False), ("p1", True), ("p2", False), ("p2", True)]
    capped = select(max_per_problem=2)
    assert capped.count(("p1", True)) == 2 and capped.count(("p4", False)) == 2 and len(capped) == 3 + 3 + 2 + 2
    hard = select(drop_always_correct=True, drop_never_correct=True)
    assert {g for g, _ in hard} == {"p1", "p2"}
    assert select(max_per_problem=2, selection_seed=1) == select(max_per_problem=2, selection_seed=1)
