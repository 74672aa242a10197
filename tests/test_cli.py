"""The `glowrl` command line: help, recipes, overrides, and every bad input of the SFT stage.

Each bad input must give one `glowrl: error:` line naming the field, exit status 2, and write nothing.

    python -m pytest tests/test_cli.py
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glowrl.cli import main as glowrl_main


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, trajectory_file):
    """Write the tiny SFT recipe with local paths and extra keys; return its path."""

    def write(**changes):
        values = yaml.safe_load((REPO / "recipes/tiny/sft.yaml").read_text())
        values.update(
            model_name_or_path=tiny_model_dir,
            dataset_paths=[trajectory_file],
            output_dir=str(tmp_path / "out"),
            num_train_epochs=1,
            save_strategy="no",
        )
        values.update(changes)
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    return write


def test_help_exits_zero(capsys):
    assert glowrl_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("sft", "rl", "pipeline", "eval", "demo"))
    assert glowrl_main(["sft", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--glow_alpha" in out and "--dataset_paths" in out and "--help-all" in out
    assert glowrl_main(["sft", "--help-all"]) == 0
    assert "--learning_rate" in capsys.readouterr().out  # every trl.SFTConfig field
    assert glowrl_main(["rl", "--algorithm", "rloo", "--help-all"]) == 0
    assert "--reward_funcs" in capsys.readouterr().out


HELP_COMMANDS = [[], ["sft"], ["rl"], ["pipeline"], ["eval"], ["demo"], ["label"], ["tiny-model"], ["convert-gguf"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "glowrl")
def test_help_imports_neither_torch_nor_trl(command):
    probe = (
        "import sys, contextlib, io\n"
        "from glowrl.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({[*command, '--help']!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'trl', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stdout


def test_unknown_command(capsys):
    assert glowrl_main(["sftt"]) == 2
    assert "unknown command 'sftt'" in capsys.readouterr().err


def test_recipe_runs_and_command_line_overrides_it(recipe, tmp_path):
    out = tmp_path / "override"
    assert glowrl_main(["sft", "--config", recipe(), "--output_dir", str(out), "--glow_beta", "10"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "glow_samples.jsonl").is_file()


@pytest.mark.parametrize(
    ("changes", "argv", "message"),
    [
        ({"glow_alhpa": 1.0}, [], "unknown recipe key 'glow_alhpa' in the recipe; did you mean 'glow_alpha'"),
        ({}, ["--glow_bta", "3"], "unknown recipe key 'glow_bta' in the command line; did you mean 'glow_beta'"),
        ({"glow_alpha": -1}, [], "glow_alpha must be ≥ 0"),
        ({"glow_beta": -2}, [], "glow_beta must be ≥ 0"),
        ({"glow_min_weight": 3.0, "glow_max_weight": 2.0}, [], "glow_min_weight (3.0) must not exceed"),
        ({"packing": True}, [], "packing cannot be used with GLOW"),
        ({"model_name_or_path": "/nonexistent/model"}, [], "model_name_or_path: /nonexistent/model does not exist"),
        ({"dataset_paths": ["/nonexistent/t.jsonl"]}, [], "dataset_paths: /nonexistent/t.jsonl does not exist"),
        ({"completion_column": "response"}, [], "no completion column 'response'"),
        ({"max_length": 8}, [], "no trainable tokens"),
        (
            {"trajectories": "negative", "correct_column": "missing", "answer_column": "missing"},
            [],
            "needs correctness labels",
        ),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(recipe, tmp_path, capsys, changes, argv, message):
    assert glowrl_main(["sft", "--config", recipe(**changes), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("glowrl: error: ") and message in err[-1], err
    assert not (tmp_path / "out").exists()


def test_negative_arm_without_negatives(recipe, tmp_path, capsys):
    positives = tmp_path / "pos.jsonl"
    positives.write_text('{"prompt": "q", "completion": "\\\\boxed{1}", "correct": true}\n')
    assert glowrl_main(["sft", "--config", recipe(dataset_paths=[str(positives)], trajectories="negative")]) == 2
    assert "trajectories: negative selects no rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_model_path_without_tokenizer(recipe, tmp_path, capsys):
    (tmp_path / "weights_only").mkdir()
    (tmp_path / "weights_only" / "config.json").write_text("{}")
    assert glowrl_main(["sft", "--config", recipe(model_name_or_path=str(tmp_path / "weights_only"))]) == 2
    assert "holds no tokenizer" in capsys.readouterr().err


def test_process_exit_status_and_single_error_line(recipe, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "glowrl", "sft", "--config", recipe(glow_alpha=-1)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("glowrl: error:")] == [
        "glowrl: error: glow_alpha must be ≥ 0, got -1"
    ]
    assert not (tmp_path / "out").exists()


def test_a_command_prints_no_library_warning_a_user_cannot_act_on(tmp_path):
    # DeepSpeed (where installed) warned "Setting accelerator to CPU" on import in every command that loads it.
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    result = subprocess.run(
        [sys.executable, "-m", "glowrl", "tiny-model", "--output_dir", str(tmp_path / "m")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warn" not in (result.stdout + result.stderr).lower(), result.stderr


@pytest.mark.parametrize(("flags", "default"), [([], "outputs/demo"), (["--synthetic"], "outputs/demo-synthetic")])
def test_the_demo_and_the_synthetic_demo_have_their_own_default_outputs(tmp_path, monkeypatch, capsys, flags, default):
    monkeypatch.chdir(tmp_path)
    (tmp_path / default).mkdir(parents=True)
    (tmp_path / default / "keep.txt").write_text("a finished run")
    assert glowrl_main(["demo", "--size", "ci", *flags]) == 2  # refused: only the default it would write to is taken
    assert f"--output_dir: {default} is not empty" in capsys.readouterr().err
