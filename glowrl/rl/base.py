"""The record an RL algorithm exports, and the registry that finds one by name.

An algorithm is one module that exports `ALGORITHM = Algorithm(...)`: its name, the dataclasses its recipe section
parses into, how its dataset is built, and its trainer class. `rl.algorithm: NAME` in a recipe finds it:

1. an algorithm registered in this process with [`register_algorithm`] (e.g. one defined in a notebook or a test);
2. a module `glowrl/rl/NAME.py` (the shipped ones: grpo, rloo, dpo, kto): adding a file adds an algorithm;
3. a dotted module path, `NAME = "my_package.my_algorithm"`, whose module exports `ALGORITHM`: an algorithm in your own
   package, which every launched process finds by itself.

The stage that runs algorithms is `glowrl.stages.rl`; nothing else names an algorithm.
"""

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

from ..errors import RecipeError


@dataclass(frozen=True)
class Algorithm:
    """One RL algorithm that trains from a model directory (normally the GLOW SFT output).

    Args:
        name (`str`):
            What `rl.algorithm` says.
        script_types (`tuple[type, ...]`):
            glowrl's own argument dataclasses (data, rewards), parsed from the recipe before the TRL config.
        config_class (`type`):
            The TRL config class (a subclass of it); `trl.ModelConfig` is always added after it.
        trainer_class (`type`):
            The trainer, called as `trainer_class(model=path, args=config, train_dataset=..., processing_class=...,
            peft_config=..., **trainer_kwargs(*script_args))`.
        build_dataset (`callable`):
            `build_dataset(*script_args, training_args) -> datasets.Dataset`.
        trainer_kwargs (`callable`, *optional*):
            `trainer_kwargs(*script_args) -> dict` of extra trainer arguments (GRPO's reward functions).
        check (`callable`, *optional*):
            `check(*script_args, training_args)`, run before any data is loaded; raises on values the algorithm
            cannot use.
        describe (`callable`, *optional*):
            `describe(dataset) -> str`: what the run trains on, for its start banner.
        chat_template_path (`callable`, *optional*):
            `chat_template_path(*script_args) -> str | None`: a Jinja template to put on the tokenizer.
    """

    name: str
    script_types: tuple
    config_class: type
    trainer_class: type
    build_dataset: Callable
    trainer_kwargs: Callable = field(default=lambda *script_args: {})
    check: Callable | None = None
    describe: Callable = field(default=lambda dataset: f"{len(dataset)} rows")
    chat_template_path: Callable = field(default=lambda *script_args: None)

    @property
    def dataclass_types(self) -> tuple:
        from trl import ModelConfig

        return (*self.script_types, self.config_class, ModelConfig)


_registered: dict[str, Algorithm] = {}
_NOT_ALGORITHMS = {"base"}


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    """Make `algorithm` available by its name in this process (it replaces one of the same name)."""
    _registered[algorithm.name] = algorithm
    return algorithm


def available_algorithms() -> list[str]:
    """The names `rl.algorithm` accepts without a dotted path: the shipped modules, then the registered ones."""
    shipped = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in _NOT_ALGORITHMS]
    return [*sorted(shipped), *(name for name in _registered if name not in shipped)]


def get_algorithm(name) -> Algorithm:
    """The algorithm `name` names (see the module docstring for where it is looked up).

    Raises:
        RecipeError: naming the valid algorithms, when nothing is found.
    """
    if isinstance(name, str) and name in _registered:
        return _registered[name]
    valid = available_algorithms()
    if isinstance(name, str) and name in valid:
        module = import_module(f"{__package__}.{name}")
    elif isinstance(name, str) and "." in name:
        try:
            module = import_module(name)
        except ImportError as error:
            raise RecipeError(
                f"rl.algorithm: cannot import {name!r} ({error}); give a module that exports ALGORITHM"
            ) from None
    else:
        raise RecipeError(
            f"rl.algorithm: unknown algorithm {name!r}; choose one of {', '.join(valid)}, or a dotted module path "
            "that exports ALGORITHM"
        )
    algorithm = getattr(module, "ALGORITHM", None)
    if not isinstance(algorithm, Algorithm):
        raise RecipeError(f"rl.algorithm: module {module.__name__} exports no ALGORITHM = glowrl.rl.Algorithm(...)")
    return algorithm
