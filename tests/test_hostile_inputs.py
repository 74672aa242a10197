"""Hostile and mistaken input, as a user gives it, through the `glowrl` command.

Every case checks the exit status, that stderr is one `glowrl: error:` line naming the field, file or row and the fix
(no traceback, no usage dump), and that what the user already had is byte-for-byte unchanged (hashed before and
after). A few cases check the behaviour that replaced a silent mistake (a `correct: "no"` label, a null gold answer).

python -m pytest tests/test_hostile_inputs.py
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from utils import REPO

from glowrl.cli import main as glowrl_main
from glowrl.data import ProblemArguments, TrajectoryArguments, build_problem_dataset, build_trajectory_dataset
from glowrl.io import MAX_ROW_BYTES
from glowrl.outputs import RunLock, output_lock
from glowrl.pipeline import run
from glowrl.rewards import math_accuracy


def tree_hash(path: Path) -> str:
    """A hash of every file name and byte under `path` (or of the file itself)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode() + file.read_bytes())
    return digest.hexdigest()


def assert_refused(capsys, argv, message, *protected, status=2):
    """`glowrl ARGV` exits `status` with exactly one error line containing `message`, leaving `protected` intact."""
    before = {p: tree_hash(Path(p)) for p in protected if Path(p).exists()}
    capsys.readouterr()
    assert glowrl_main([str(a) for a in argv]) == status
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("glowrl: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and message in errors[0], lines
    assert "Traceback" not in stderr and "usage:" not in stderr
    assert all("examples" in line or "it/s" in line for line in lines[:-1]), lines  # only progress bars before it
    for path, digest in before.items():
        assert tree_hash(Path(path)) == digest, f"{path} changed"


@pytest.fixture
def sft_argv(tmp_path, tiny_model_dir, trajectory_file):
    """The tiny SFT recipe on local files, one epoch, into tmp_path/out; takes extra flags."""

    def argv(*extra, **changes):
        recipe = yaml.safe_load((REPO / "recipes/tiny/sft.yaml").read_text())
        recipe.update(
            model_name_or_path=tiny_model_dir, dataset_paths=[trajectory_file], output_dir=str(tmp_path / "out")
        )
        recipe.update({"num_train_epochs": 1, "save_strategy": "no", **changes})
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return ["sft", "--config", path, *extra]

    return argv


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- the SFT stage: outputs


def test_a_finished_output_dir_is_never_replaced_without_overwrite(sft_argv, tmp_path, capsys):
    assert glowrl_main(sft_argv()) == 0
    assert_refused(capsys, sft_argv(), "output_dir: ", tmp_path / "out")
    assert glowrl_main(sft_argv("--overwrite")) == 0  # asked for: replaced
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_overwrite_checks_everything_before_deleting(sft_argv, tmp_path, capsys):
    assert glowrl_main(sft_argv()) == 0
    assert_refused(capsys, sft_argv("--overwrite", glow_beta=".nan"), "glow_beta", tmp_path / "out")
    assert_refused(
        capsys, sft_argv("--overwrite", dataset_paths=[str(tmp_path / "x.jsonl")]), "x.jsonl", tmp_path / "out"
    )


def test_output_dir_equal_to_the_model_or_holding_the_data_is_refused(sft_argv, tiny_model_dir, tmp_path, capsys):
    assert_refused(capsys, sft_argv(output_dir=tiny_model_dir), "model_name_or_path", tiny_model_dir)
    data = (
        write_jsonl(tmp_path / "here" / "t.jsonl", [{"prompt": "q", "completion": "c"}])
        if (tmp_path / "here").mkdir() is None
        else None
    )
    assert_refused(
        capsys, sft_argv(output_dir=str(tmp_path / "here"), dataset_paths=[str(data)]), "dataset_paths", data
    )


def test_output_dir_that_is_a_file_is_refused(sft_argv, tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    assert_refused(capsys, sft_argv(), "is a file, not a directory", tmp_path / "out")


# -- the SFT stage: values


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"glow_beta": ".nan"}, "glow_beta: nan is not a finite number"),
        ({"glow_alpha": ".inf"}, "glow_alpha: inf is not a finite number"),
        ({"num_train_epochs": -1}, "num_train_epochs must not be negative"),
        ({"num_train_epochs": 0}, "num_train_epochs: 0 trains nothing"),
        ({"learning_rate": "abc"}, "learning_rate: invalid float value: 'abc'"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be positive"),
        ({"trajectories": "both"}, "trajectories must be one of all, positive, negative, got 'both'"),
        ({"bf16": True, "use_cpu": False}, "bf16: true (TRL's default) needs a GPU"),
        ({"save_strategy": False}, "save_strategy: false is not a valid value (YAML reads an unquoted yes/no"),
        (
            {"eval_dataset_paths": [str(REPO / "glowrl/assets/arithmetic_trajectories.jsonl")], "eval_strategy": "no"},
            "eval_dataset_paths: the held-out loss is computed at eval_strategy points, and eval_strategy is no",
        ),
        ({"eval_dataset_paths": ["missing.jsonl"], "eval_strategy": "epoch"}, "eval_dataset_paths: missing.jsonl"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(sft_argv, tmp_path, capsys, changes, message):
    # YAML reads `.nan`/`.inf` as floats: write them unquoted
    argv = sft_argv(**{k: v for k, v in changes.items() if not str(v).startswith(".")})
    recipe = Path(argv[2])
    dots = {k: v for k, v in changes.items() if str(v).startswith(".")}  # replacing the recipe's own (no key twice)
    kept = [line for line in recipe.read_text().splitlines(keepends=True) if line.split(":")[0] not in dots]
    text = "".join(kept) + "".join(f"{k}: {v}\n" for k, v in dots.items())
    recipe.write_text(text)
    assert_refused(capsys, argv, message)
    assert not (tmp_path / "out").exists()


def test_an_empty_recipe_or_no_arguments_say_what_to_give(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    assert_refused(capsys, ["sft", "--config", tmp_path / "empty.yaml"], "is empty")
    assert_refused(capsys, ["sft"], "give --config RECIPE.yaml")
    assert_refused(capsys, ["sft", "--config"], "--config needs a recipe path")


# -- data files


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "is empty"),
        ([{"prompt": "q", "completion": "c"}, "{not json"], "line 2 is not valid JSON"),
        (['["a list"]'], "line 1 is not a JSON object"),
        ([{"prompt": "q", "completion": 7}], "row 0: the completion is int"),
        ([{"prompt": "q", "completion": "c", "correct": "maybe"}], "row 0: correct is 'maybe'"),
    ],
)
def test_bad_data_files_are_one_line_naming_the_file_and_row(sft_argv, tmp_path, capsys, rows, message):
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    assert_refused(capsys, sft_argv(dataset_paths=[str(data)]), message, data)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"problem": "1+1?", "answer": "2"}, {"problem": None, "answer": "3"}], "row 1: problem is empty or null"),
        (
            [
                {"problem_id": "a", "problem": "1+1?", "answer": "2"},
                {"problem_id": "a", "problem": "1+1?", "answer": "3"},
            ],
            "row 1: problem id 'a' has two gold answers ('2' and '3')",
        ),
    ],
)
def test_null_or_conflicting_problems_are_refused(tmp_path, tiny_model_dir, capsys, rows, message):
    data = write_jsonl(tmp_path / "problems.jsonl", rows)
    argv = ["generate", "--teacher", tiny_model_dir, "--dataset_paths", data, "--output_dir", tmp_path / "gen"]
    assert_refused(capsys, [*argv, "--max_new_tokens", "4", "--num_samples", "1"], message, data)
    assert not (tmp_path / "gen" / "trajectories.jsonl").exists()
    if "two gold" in message:  # the RL prompts too
        with pytest.raises(ValueError, match="has two gold answers"):
            build_problem_dataset(ProblemArguments(dataset_paths=[str(data)]))
    else:
        with pytest.raises(ValueError, match="row 1: problem is empty or null"):
            build_problem_dataset(ProblemArguments(dataset_paths=[str(data)]))


def test_a_key_given_twice_anywhere_in_a_recipe_is_refused(sft_argv, pipeline_recipe, tmp_path, capsys):
    argv = sft_argv()
    Path(argv[2]).write_text(Path(argv[2]).read_text() + "learning_rate: 1.0\nlearning_rate: 2.0\n")
    assert_refused(capsys, argv, "key 'learning_rate' is given twice")
    recipe = pipeline_recipe()
    recipe.write_text(recipe.read_text().replace("sft:\n", "sft:\n  glow: true\n  glow: false\n", 1))
    assert_refused(capsys, ["pipeline", "--config", recipe], "key 'glow' is given twice", tmp_path / "run")
    study = tmp_path / "study.yaml"
    study.write_text(
        f"base: {recipe}\noutput_root: {tmp_path / 'study'}\nseeds: 1\narms:\n"
        "  glow: {sft: {glow: true}}\n  plain: {sft: {glow: false}}\n  glow: {sft: {glow: false}}\n"
    )
    assert_refused(capsys, ["study", "--config", study], f"{study} line 7: key 'glow' is given twice (lines 5 and 7)")
    assert not (tmp_path / "study").exists()


def huge_row(path: Path, key: str) -> Path:
    """A JSON Lines file whose second row is just over `MAX_ROW_BYTES` (the issue's was 50 MB)."""
    rows = [{"prompt": "q", "problem": "1+1?", "completion": "c", "answer": "2"}]
    rows.append({**rows[0], key: "x" * (MAX_ROW_BYTES + 1)})
    return write_jsonl(path, rows)


def test_a_huge_row_is_refused_before_tokenizing(sft_argv, tmp_path, tiny_model_dir, capsys):
    data = huge_row(tmp_path / "huge.jsonl", "completion")
    message = f"{data} line 2 is 4.0 MiB, over the 4 MiB limit of one row"
    assert_refused(capsys, sft_argv(dataset_paths=[str(data)]), "dataset_paths: " + message, data)
    assert not (tmp_path / "out").exists()
    bench = huge_row(tmp_path / "bench.jsonl", "problem")
    argv = ["eval", "--model", tiny_model_dir, "--benchmark_file", bench, "--output", tmp_path / "r.json"]
    assert_refused(capsys, argv, f"{bench} line 2 is 4.0 MiB", bench)
    assert not (tmp_path / "r.json").exists()


def test_invalid_utf8_names_the_file_and_line(sft_argv, tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(b'{"prompt": "q", "completion": "c", "answer": "1"}\n{"prompt": "caf\xe9", "completion": "c"}\n')
    assert_refused(capsys, sft_argv(dataset_paths=[str(data)]), f"{data} line 2 is not valid UTF-8", data)
    argv = ["eval", "--model", tiny_model_dir, "--benchmark_file", data, "--output", tmp_path / "r.json"]
    argv += ["--problem_field", "prompt"]
    assert_refused(capsys, argv, f"{data} line 2 is not valid UTF-8", data)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hidden_size", "-8"], "--hidden_size must be a positive integer, got -8"),
        (["--hidden_size", "0"], "--hidden_size must be a positive integer"),
        (["--num_hidden_layers", "-1"], "--num_hidden_layers must be a positive integer"),
        (["--hidden_size", "12"], "--hidden_size must be a multiple of 8"),
    ],
)
def test_tiny_model_refuses_sizes_it_cannot_build(tmp_path, capsys, flags, message):
    assert_refused(capsys, ["tiny-model", "--output_dir", tmp_path / "m", *flags], message)
    assert not (tmp_path / "m").exists()


def test_a_directory_named_like_a_data_file_is_refused(sft_argv, tmp_path, capsys):
    (tmp_path / "dir.jsonl").mkdir()
    assert_refused(capsys, sft_argv(dataset_paths=[str(tmp_path / "dir.jsonl")]), "is a directory")


def test_correct_labels_are_read_strictly(tmp_path):
    rows = [
        {"prompt": "q", "completion": "a", "correct": "no"},
        {"prompt": "q", "completion": "b", "correct": "YES"},
        {"prompt": "q", "completion": "c", "correct": 0},
        {"prompt": "q", "completion": "d", "correct": "True"},
    ]
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    dataset = build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(data)]))
    assert dataset["correct"] == [False, True, False, True]  # bool("no") would be True
    positives = build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(data)], trajectories="positive"))
    assert [c[0]["content"] for c in positives["completion"]] == ["b", "d"]


def test_a_null_gold_is_unscorable_not_the_string_none(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?", "answer": None}, {"problem": "2+2?", "answer": "4"}])
    problems = build_problem_dataset(ProblemArguments(dataset_paths=[str(data)]))
    assert problems["answer"] == [None, "4"]
    assert math_accuracy([r"\boxed{None}", r"\boxed{4}"], answer=problems["answer"]) == [None, 1.0]


def test_a_null_gold_in_evaluation_is_unscorable(tmp_path, tiny_model_dir):
    data = write_jsonl(
        tmp_path / "bench.jsonl", [{"problem": "1+1?", "answer": None}, {"problem": "2+2?", "answer": 4}]
    )
    output = tmp_path / "r.json"
    argv = ["eval", "--model", tiny_model_dir, "--benchmark_file", data, "--max_new_tokens", "4", "--output", output]
    assert glowrl_main([str(a) for a in argv]) == 0
    benchmark = json.loads(output.read_text())["models"][0]["benchmarks"]["bench"]
    assert [p["gold"] for p in benchmark["problems"]] == [None, "4"]
    assert benchmark["problems"][0]["samples"][0]["correct"] is None and benchmark["metrics"]["num_unscorable"] == 1


# -- eval, label, tiny-model, demo: outputs


def test_eval_never_replaces_a_file_it_did_not_write(tmp_path, tiny_model_dir, trajectory_file, capsys):
    base = ["eval", "--model", tiny_model_dir, "--benchmarks", "amc23", "--max_problems", "1", "--max_new_tokens", "4"]
    assert_refused(capsys, [*base, "--output", trajectory_file], "must end in .json", trajectory_file)
    taken = tmp_path / "taken.json"
    taken.write_text('{"mine": true}')
    assert_refused(capsys, [*base, "--output", taken], "taken.json exists; pass --overwrite", taken)
    (tmp_path / "dir.json").mkdir()
    assert_refused(capsys, [*base, "--output", tmp_path / "dir.json"], "is a directory")
    assert_refused(capsys, [*base, "--output", tmp_path / "r.md"], "must end in .json")
    assert glowrl_main([str(a) for a in [*base, "--output", taken, "--overwrite"]]) == 0
    assert json.loads(taken.read_text())["complete"] is True


def test_every_command_that_writes_holds_its_output_naming_the_holder(
    sft_argv, tmp_path, tiny_model_dir, trajectory_file, addition_file, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "half.txt").write_text("the first run's half-written output")
    gen = ["generate", "--teacher", tiny_model_dir, "--dataset_paths", addition_file, "--output_dir", out]
    result = tmp_path / "r.json"
    evaluate = ["eval", "--model", tiny_model_dir, "--benchmark_file", addition_file, "--output", result]
    cases = [
        (out, "output_dir", "glowrl sft", sft_argv("--overwrite")),
        (out, "output_dir", "glowrl generate", [*gen, "--overwrite"]),
        (result, "--output", "glowrl eval", [*evaluate, "--overwrite"]),
        (
            tmp_path / "l.jsonl",
            "--output",
            "glowrl label",
            ["label", "--input", trajectory_file, "--output", tmp_path / "l.jsonl"],
        ),
    ]
    for output, field, what, argv in cases:
        with output_lock(output, what, field):
            message = f"{field}: {output.resolve()} is in use by another run ({what}, pid {os.getpid()} on"
            assert_refused(capsys, argv, message, out)
    assert not result.exists() and not (tmp_path / "l.jsonl").exists()
    with output_lock(out, "glowrl generate", "output_dir", ".shard0of2"):  # shards share an output by design
        assert_refused(capsys, [*gen, "--shard", "0/2"], "(glowrl generate, pid", out)
        assert_refused(capsys, [*gen, "--shard", "1/2"], "output_dir: ", out)  # not the lock: its own check
    assert (out / "half.txt").read_text() == "the first run's half-written output"
    assert not list(tmp_path.glob(".*.glowrl.lock"))  # each lock file went with its holder


def test_an_output_inside_the_model_is_refused_even_with_overwrite(tmp_path, tiny_model_dir, capsys):
    model = Path(tiny_model_dir)
    base = ["eval", "--model", model, "--benchmarks", "amc23", "--max_problems", "1", "--max_new_tokens", "4"]
    for output in (model / "config.json", model / "results.json"):
        assert_refused(capsys, [*base, "--output", output, "--overwrite"], "lies inside it", model)
    recipe = REPO / "recipes/tiny/pipeline.yaml"
    for output in (model / "config.json", model / "readiness.json"):
        argv = ["readiness", "--model", model, "--config", recipe, "--output", output, "--overwrite"]
        assert_refused(capsys, argv, "--output: ", model, recipe)
    assert not (model / "readiness.json").exists() and not (model / "results.json").exists()
    stage = tmp_path / "eval.yaml"  # the eval stage: its output_dir inside a model it evaluates
    stage.write_text(yaml.safe_dump({"models": [str(model)], "benchmarks": ["amc23"], "output_dir": str(model / "e")}))
    assert_refused(capsys, ["eval", "--config", stage, "--overwrite", "true"], "output_dir: ", model)


def test_an_empty_benchmark_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    empty = tmp_path / "bench.jsonl"
    empty.write_text("")
    output = tmp_path / "r.json"
    argv = ["eval", "--model", tiny_model_dir, "--benchmark_file", empty, "--max_new_tokens", "4", "--output", output]
    assert_refused(capsys, argv, f"--benchmark_file: {empty} holds no problems", empty)
    assert not output.exists() and not output.with_suffix(".md").exists()
    write_jsonl(empty, [{"problem": "1+1?", "answer": "2"}])
    assert_refused(capsys, [*argv, "--max_problems", "0"], "--max_problems must be at least 1")
    assert glowrl_main([str(a) for a in argv]) == 0  # the corrected run is not blocked by anything left behind


@pytest.fixture
def truncated_model(tmp_path, tiny_model_dir):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "truncated"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def test_a_truncated_model_is_one_line_naming_the_file(sft_argv, truncated_model, tmp_path, addition_file, capsys):
    message = f"{truncated_model}: model.safetensors is truncated ("
    assert_refused(capsys, sft_argv(model_name_or_path=str(truncated_model)), message, truncated_model)
    rl = ["rl", "--config", REPO / "recipes/tiny/grpo.yaml", "--model_name_or_path", truncated_model]
    rl += ["--dataset_paths", addition_file, "--output_dir", tmp_path / "rl"]
    assert_refused(capsys, rl, message, truncated_model)
    evaluate = ["eval", "--model", truncated_model, "--benchmark_file", addition_file, "--output", tmp_path / "r.json"]
    assert_refused(capsys, evaluate, message, truncated_model)
    assert not (tmp_path / "out").exists() and not (tmp_path / "rl").exists() and not (tmp_path / "r.json").exists()
    assert not list(tmp_path.glob(".*.glowrl.lock"))  # a refused run leaves no lock file beside its output


def test_label_refuses_its_own_input_another_format_and_an_existing_file(tmp_path, trajectory_file, capsys):
    assert_refused(
        capsys, ["label", "--input", trajectory_file, "--output", trajectory_file], "--input", trajectory_file
    )
    csv = tmp_path / "t.csv"
    csv.write_text("prompt,completion,answer\nq,\\boxed{1},1\n")
    assert_refused(capsys, ["label", "--input", csv, "--output", csv], "must end in .jsonl", csv)
    existing = write_jsonl(tmp_path / "l.jsonl", [{"keep": 1}])
    assert_refused(capsys, ["label", "--input", trajectory_file, "--output", existing], "exists", existing)


def test_tiny_model_and_demo_refuse_what_they_did_not_write(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert_refused(
        capsys, ["tiny-model", "--output_dir", tmp_path / "taken"], "already holds files", tmp_path / "taken"
    )
    (tmp_path / "file").write_text("mine")
    assert_refused(capsys, ["demo", "--size", "ci", "--output_dir", tmp_path / "file"], "is a file", tmp_path / "file")
    assert_refused(
        capsys, ["demo", "--size", "ci", "--output_dir", tmp_path / "taken"], "not empty", tmp_path / "taken"
    )


# -- the pipeline


@pytest.fixture
def pipeline_recipe(tmp_path, tiny_model_dir, addition_file):
    def write(sft=None, rl=None, **shared):
        recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
        del recipe["eval"]  # SFT and RL only: the eval stage has its own tests
        recipe.update(
            model_name_or_path=tiny_model_dir, dataset_paths=[addition_file], output_root=str(tmp_path / "run")
        )
        recipe.update(shared)
        recipe["sft"].update(num_train_epochs=1, save_strategy="no", **(sft or {}))
        recipe["rl"].update(
            max_steps=1, num_generations=4, per_device_train_batch_size=4, save_strategy="no", **(rl or {})
        )
        path = tmp_path / "pipeline.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return write


EMPTY_SAFETENSORS = (2).to_bytes(8, "little") + b"{}"  # a whole safetensors file holding no tensors


def stand_in(command):
    """A stage that succeeds and leaves an output, without training."""
    config = yaml.safe_load(Path(command[command.index("--config") + 1]).read_text())
    Path(config["output_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(config["output_dir"]) / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    return 0


def never_launched(command):
    pytest.fail(f"launched despite bad input: {command}")


def test_pipeline_checks_every_stage_value_before_running_or_deleting(pipeline_recipe, tmp_path, capsys):
    assert run(pipeline_recipe(), [], runner=stand_in) == 0
    root = tmp_path / "run"
    before = tree_hash(root)
    for overrides, message in (
        (["--rl.learning_rate", ".nan"], "learning_rate: nan is not a finite number"),
        (["--rl.num_generations", "3"], "make it a multiple of num_generations"),
        (["--sft.glow_alpha", "-1"], "glow_alpha must be ≥ 0"),
        (["--rl.dataset_paths", "[missing.jsonl]"], "missing.jsonl does not exist"),
        (["--rl.reward_funcs", "[accuracy]"], "unknown reward function"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            run(pipeline_recipe(), overrides, overwrite=True, runner=never_launched)
        assert tree_hash(root) == before, overrides


def test_pipeline_output_dir_equal_to_its_model_is_refused(pipeline_recipe, tiny_model_dir, capsys):
    assert_refused(
        capsys,
        ["pipeline", "--config", pipeline_recipe(sft={"output_dir": tiny_model_dir})],
        "is model_name_or_path",
        tiny_model_dir,
    )


def test_a_second_pipeline_on_the_same_root_is_refused_naming_the_first(pipeline_recipe, tmp_path, capsys):
    recipe = pipeline_recipe()
    with RunLock(tmp_path / "run"):
        assert_refused(capsys, ["pipeline", "--config", recipe], "is in use by another run (glowrl pipeline, pid")
    assert run(recipe, [], runner=stand_in) == 0  # released with the holder


def test_an_output_root_that_is_a_file_is_refused(pipeline_recipe, tmp_path, capsys):
    (tmp_path / "run").write_text("mine")
    assert_refused(capsys, ["pipeline", "--config", pipeline_recipe()], "run is a file", tmp_path / "run")


def test_a_pipeline_never_replaces_a_stage_recipe_it_did_not_write(pipeline_recipe, tmp_path, capsys):
    mine = tmp_path / "run" / "recipes" / "sft.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# my own notes\n")
    assert_refused(capsys, ["pipeline", "--config", pipeline_recipe()], "recipes/sft.yaml is a file this", mine)
    (tmp_path / "run" / "recipes" / "sft.yaml").unlink()
    (tmp_path / "run" / "pipeline.json").write_text("my own notes")
    assert_refused(capsys, ["pipeline", "--config", pipeline_recipe()], "is not a glowrl pipeline manifest")


def test_a_second_recipe_on_a_finished_root_keeps_the_first_runs_records(
    pipeline_recipe, tmp_path, tiny_model_dir, addition_file, capsys
):
    first = pipeline_recipe()
    assert run(first, [], runner=stand_in) == 0
    root = tmp_path / "run"
    second = yaml.safe_load(first.read_text())
    second["sft"]["output_dir"] = str(root / "sft-again")
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    assert_refused(capsys, ["pipeline", "--config", tmp_path / "second.yaml"], "records a sft stage in", root)
    eval_only = {"output_root": second["output_root"]}
    eval_only["eval"] = {"models": [tiny_model_dir], "benchmark_files": [addition_file], "max_new_tokens": 4}
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(eval_only, sort_keys=False))
    assert run(tmp_path / "second.yaml", [], runner=stand_in) == 0
    stages = json.loads((root / "pipeline.json").read_text())["stages"]
    assert stages["rl"]["status"] == "done" and stages["rl"]["recipe"] == str(first) and "eval" in stages
    before = tree_hash(root / "rl")
    assert run(first, [], runner=never_launched) == 0  # rl, still recorded, is skipped: no --overwrite needed
    assert tree_hash(root / "rl") == before


def test_a_deleted_finished_stage_is_not_done(pipeline_recipe, tmp_path, capsys):
    recipe = pipeline_recipe()
    assert run(recipe, [], runner=stand_in) == 0
    shutil.rmtree(tmp_path / "run" / "rl")
    launched = []
    capsys.readouterr()
    assert run(recipe, [], runner=lambda command: launched.append(command) or stand_in(command)) == 0
    out = capsys.readouterr().out
    assert "rl: recorded as done, but its product" in out and "rl (grpo) — done" not in out and len(launched) == 1
    (tmp_path / "run" / "rl" / "model.safetensors").write_bytes(EMPTY_SAFETENSORS[:5])  # truncated
    assert_refused(capsys, ["pipeline", "--config", recipe], "model.safetensors is truncated header", tmp_path / "run")
    (tmp_path / "run" / "rl" / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    shutil.rmtree(tmp_path / "run" / "sft")  # SFT runs again, so the RL model built on the old one would be replaced
    argv = ["pipeline", "--config", recipe]
    assert_refused(capsys, argv, "rl: ", tmp_path / "run" / "rl", tmp_path / "run" / "pipeline.json")


def test_a_study_never_replaces_a_file_it_did_not_write(pipeline_recipe, tmp_path, addition_file, capsys):
    root = tmp_path / "study"
    root.mkdir()
    (root / "study.md").write_text("my own notes")
    base = pipeline_recipe()
    recipe = yaml.safe_load(base.read_text())
    ood = shutil.copy(addition_file, tmp_path / "ood.jsonl")
    recipe["eval"] = {"benchmark_files": [addition_file], "ood_benchmark_files": [str(ood)]}
    base.write_text(yaml.safe_dump(recipe, sort_keys=False))
    study = {"base": str(base), "output_root": str(root), "seeds": 1, "arms": {"glow": None}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    assert_refused(capsys, ["study", "--config", tmp_path / "study.yaml"], "study.md is a file this study never", root)


# -- what was noisy: each now one line naming the field, file or row and the fix


def test_resume_from_checkpoint_true_unquoted_is_read_as_asked(sft_argv, tmp_path, capsys):
    argv = sft_argv()
    Path(argv[2]).write_text(Path(argv[2]).read_text() + "resume_from_checkpoint: true\n")
    assert_refused(capsys, argv, "resume_from_checkpoint: no complete checkpoint in")  # not "not a valid value"


def test_pipeline_preflight_of_rewards_and_section_order(pipeline_recipe, tmp_path, capsys):
    argv = ["pipeline", "--config", pipeline_recipe(rl={"reward_funcs": []})]  # refused before SFT trains
    assert_refused(capsys, argv, "reward_funcs: an empty list gives RL nothing to learn from")
    recipe = yaml.safe_load(pipeline_recipe().read_text())
    recipe = {k: v for k, v in recipe.items() if k != "sft"} | {"sft": recipe["sft"]}  # rl: written before sft:
    (tmp_path / "swapped.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    argv = ["pipeline", "--config", tmp_path / "swapped.yaml"]
    assert_refused(capsys, argv, "section rl: comes before sft: (stages run in the order written")
    assert not (tmp_path / "run").exists()
    positives = write_jsonl(tmp_path / "pos.jsonl", [{"problem": "1+1?", "completion": r"\boxed{2}", "answer": "2"}])
    recipe = yaml.safe_load(pipeline_recipe().read_text())
    recipe["rl"] = {"algorithm": "dpo", "dataset_paths": [str(positives)], "max_steps": 1}
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    argv = ["pipeline", "--config", tmp_path / "dpo.yaml"]
    assert_refused(capsys, argv, "rl.algorithm: dpo needs problems with both a correct and an incorrect trajectory")
    assert not (tmp_path / "run").exists()


def test_eval_refuses_a_benchmark_without_golds_and_an_unwritable_place(tmp_path, tiny_model_dir, capsys):
    bench = write_jsonl(tmp_path / "b.jsonl", [{"problem": "1+1?", "answer": None}, {"problem": "2+2?", "answer": ""}])
    argv = ["eval", "--model", tiny_model_dir, "--benchmark_file", bench, "--output", tmp_path / "r.json"]
    assert_refused(capsys, argv, "--answer_field: every 'answer' of", bench)
    assert not (tmp_path / "r.json").exists()
    argv = ["eval", "--model", tiny_model_dir, "--benchmarks", "amc23", "--output", "/proc/glowrl/r.json"]
    assert_refused(capsys, argv, "--output: /proc/glowrl/r.json cannot be created in /proc (not writable)")


def test_generate_and_readiness_values_are_one_line(tmp_path, tiny_model_dir, addition_file, capsys):
    gen = ["generate", "--teacher", tiny_model_dir, "--dataset_paths", addition_file, "--output_dir", tmp_path / "g"]
    assert_refused(capsys, [*gen, "--shard", "-1/2"], "shard: -1/2 needs 0 <= i < n")
    gen[2] = "no-such-org/teacher"  # a mistyped local path reads as a Hub id
    assert_refused(capsys, gen, "teacher: no-such-org/teacher is no local directory (relative to")
    base = ["readiness", "--model", tiny_model_dir]
    grpo = REPO / "recipes/tiny/grpo.yaml"
    assert_refused(capsys, [*base, "--config", grpo, "--prompts", "-3"], "--prompts must be at least 1, got -3")
    sft = REPO / "recipes/tiny/sft.yaml"
    assert_refused(capsys, [*base, "--config", sft], f"--config: {sft} is not an RL recipe")


def test_a_damaged_middle_line_of_a_generation_is_refused_not_regenerated(tmp_path, tiny_model_dir, capsys):
    problems = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"{i}+1?", "answer": str(i + 1)} for i in range(3)])
    out = tmp_path / "gen"
    argv = ["generate", "--teacher", tiny_model_dir, "--dataset_paths", problems, "--output_dir", out]
    argv += ["--max_new_tokens", "4", "--num_samples", "1"]
    assert glowrl_main([str(a) for a in argv]) == 0
    trajectories = out / "trajectories.jsonl"
    lines = trajectories.read_text().splitlines(keepends=True)
    trajectories.write_text(lines[0] + "{damaged\n" + "".join(lines[2:]))
    assert_refused(capsys, argv, f"{trajectories} line 2 is not valid JSON, but whole lines follow it", out)


def test_the_eval_stage_never_replaces_another_evaluations_results(tmp_path, tiny_model_dir, capsys):
    other = Path(shutil.copytree(tiny_model_dir, tmp_path / "other"))
    recipe = {"benchmarks": ["amc23"], "max_problems": 1, "max_new_tokens": 4, "output_dir": str(tmp_path / "eval")}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump({**recipe, "models": [tiny_model_dir]}))
    assert glowrl_main(["eval", "--config", str(tmp_path / "first.yaml")]) == 0
    (tmp_path / "second.yaml").write_text(yaml.safe_dump({**recipe, "models": [str(other)]}))
    argv = ["eval", "--config", tmp_path / "second.yaml"]
    assert_refused(
        capsys, argv, f"holds the results of {tiny_model_dir}, which this evaluation would replace", tmp_path / "eval"
    )
