"""Stage 2 with any of glowrl's RL algorithms on the GLOW SFT checkpoint: GRPO, RLOO, DPO or KTO.

Launch:

    glowrl rl --config recipes/tiny/rloo.yaml --model_name_or_path outputs/tiny/sft
    glowrl rl --config recipes/tiny/pipeline.yaml --algorithm dpo
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl.rl --config my_recipe.yaml

The algorithm is `--algorithm`, else the recipe's (`rl: {algorithm: ...}` in a pipeline recipe, a top-level
`algorithm:` key in a flat one), else `grpo`. The rest of the command line goes to that algorithm's stage module
(`glowrl.recipe.RL_ALGORITHMS`), which reads the recipe's shared keys and `rl:` section, or the flat recipe without
its `algorithm` key:

| algorithm | module | data (`dataset_paths`) | trainer |
|---|---|---|---|
| `grpo` | `glowrl.grpo` | problems with gold answers (a trajectory file works) | [`~glowrl.grpo.MathGRPOTrainer`] |
| `rloo` | `glowrl.rloo` | the same | [`~glowrl.rloo.MathRLOOTrainer`] |
| `dpo` | `glowrl.preference` | trajectories, correct and incorrect (the SFT file) | [`~trl.DPOTrainer`] |
| `kto` | `glowrl.preference` | the same | [`~trl.KTOTrainer`] |
"""

import sys
import tempfile
from functools import partial
from importlib import import_module
from pathlib import Path

import yaml

from .recipe import RL_ALGORITHMS, STAGES, RecipeError, load_recipe, rl_algorithm


def dataclass_types(algorithm: str) -> tuple:
    """The dataclasses the RL stage parses its recipe into when it runs `algorithm`."""
    if not isinstance(algorithm, str) or algorithm not in RL_ALGORITHMS:
        raise RecipeError(f"rl.algorithm: unknown algorithm {algorithm!r}; choose one of {', '.join(RL_ALGORITHMS)}")
    types = import_module(RL_ALGORITHMS[algorithm]).DATACLASS_TYPES
    return types[algorithm] if isinstance(types, dict) else types  # glowrl.preference serves dpo and kto


def _stage_cli(algorithm: str):
    stage = import_module(RL_ALGORITHMS[algorithm])
    if isinstance(stage.DATACLASS_TYPES, dict):
        return partial(stage.cli, algorithm=algorithm)
    return stage.cli


def _pop_algorithm_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take `--algorithm X` / `--algorithm=X` out of the command line (the stages do not know the flag)."""
    value, rest, i = None, [], 0
    while i < len(argv):
        if argv[i] == "--algorithm":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise RecipeError(f"--algorithm needs a value: one of {', '.join(RL_ALGORITHMS)}")
            value, i = argv[i + 1], i + 2
        elif argv[i].startswith("--algorithm="):
            value, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    return value, rest


def _check_algorithm(algorithm: str | None, where: str, algorithms: tuple[str, ...]) -> str:
    if algorithm is None:
        raise RecipeError(f"--algorithm is required: one of {', '.join(algorithms)}")
    if not isinstance(algorithm, str) or algorithm not in RL_ALGORITHMS:
        raise RecipeError(f"{where}: unknown algorithm {algorithm!r}; choose one of {', '.join(algorithms)}")
    if algorithm not in algorithms:
        raise RecipeError(
            f"{where}: this entry point runs {' or '.join(algorithms)}, not {algorithm}; run `glowrl rl` "
            f"(python -m glowrl.rl), which runs every algorithm, or set {where}: {algorithms[0]}"
        )
    return algorithm


def cli(
    argv: list[str] | None = None, algorithms: tuple[str, ...] = tuple(RL_ALGORITHMS), default: str | None = "grpo"
) -> int:
    """Pick the RL algorithm from `--algorithm` or the recipe (`default` if neither names one) and run its stage.

    Args:
        argv (`list[str]`, *optional*):
            Command line without the program name; `sys.argv[1:]` when `None`.
        algorithms (`tuple[str, ...]`, *optional*, defaults to every key of `RL_ALGORITHMS`):
            The algorithms this entry point accepts (a stage module's own `__main__` narrows them).
        default (`str`, *optional*, defaults to `"grpo"`):
            The algorithm when neither `--algorithm` nor the recipe names one; `None` makes `--algorithm` required.

    Returns:
        `int`: the stage's exit status.
    """
    flag, argv = _pop_algorithm_flag(list(sys.argv[1:] if argv is None else argv))
    recipe_path = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    recipe = load_recipe(recipe_path) if recipe_path else {}
    sectioned = any(stage in recipe for stage in STAGES)
    if flag is not None:
        algorithm = _check_algorithm(flag, "--algorithm", algorithms)
    elif sectioned:
        named = isinstance(recipe.get("rl"), dict) and "algorithm" in recipe["rl"]
        algorithm = _check_algorithm(rl_algorithm(recipe) if named else default, "rl.algorithm", algorithms)
    else:
        algorithm = _check_algorithm(recipe.get("algorithm", default), "algorithm", algorithms)
    with tempfile.TemporaryDirectory(prefix="glowrl-rl-") as tmp:
        if "algorithm" in recipe and not sectioned:
            # A flat recipe's `algorithm` key is read here, not a field of the stage: hand on a copy without it.
            stripped = Path(tmp) / Path(recipe_path).name
            stripped.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != "algorithm"}, sort_keys=False))
            argv[argv.index("--config") + 1] = str(stripped)
        return _stage_cli(algorithm)(argv)


if __name__ == "__main__":
    from .cli import run_guarded

    sys.exit(run_guarded(cli))
