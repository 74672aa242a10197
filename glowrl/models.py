"""Model directories and Hub names: the checks every stage runs before it loads a model, and tokenizer loading.

A model is given as a local directory (normally an earlier stage's output) or a Hub name. A local directory is
checked here, before anything is written, so that a typo fails in one line instead of deep inside transformers.
Imports transformers only inside [`load_tokenizer`].
"""

from pathlib import Path

from .checkpoints import weights_problem
from .errors import GlowrlError
from .io import looks_local


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_path(name: str | None, field: str = "model_name_or_path") -> None:
    """Fail early and clearly on a local model path that does not exist, holds no config or tokenizer, or whose
    `*.safetensors` weights are truncated (their headers are read, not the weights).

    A Hub name is left for the loader to resolve (it says whether the repository exists).
    """
    if not name:
        raise GlowrlError(f"{field} is required: a local model directory or a Hub model name")
    if not looks_local(name):
        return
    path = Path(name).expanduser()
    if not path.is_dir():
        raise GlowrlError(f"{field}: {name} does not exist; give a model directory or a Hub name")
    if not any((path / file).is_file() for file in TOKENIZER_FILES):
        raise GlowrlError(
            f"{field}: {name} holds no tokenizer (no tokenizer.json or tokenizer_config.json); save the tokenizer "
            "with the model (tokenizer.save_pretrained)"
        )
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise GlowrlError(
                f"{field}: {name} is a LoRA adapter with no model; give the merged model directory (glowrl's stages "
                "save one beside their adapter), or merge the adapter into its base model with PEFT's merge_and_unload"
            )
        raise GlowrlError(f"{field}: {name} holds no config.json; give a directory written by save_pretrained")
    problem = weights_problem(path)
    if problem:
        raise GlowrlError(
            f"{field}: {name}: {problem}; save or copy the model again (a save or a download was cut short)"
        )


def load_tokenizer(
    name: str,
    revision: str | None = None,
    chat_template_path: str | None = None,
    field: str = "model_name_or_path",
    require_chat_template: bool = False,
):
    """The model's own tokenizer, with the recipe's chat template on it when one is given.

    Args:
        name (`str`): Model directory or Hub name.
        revision (`str`, *optional*): Hub revision.
        chat_template_path (`str`, *optional*): Jinja file that replaces the tokenizer's chat template.
        field (`str`, *optional*): The recipe key or flag `name` came from, for error messages.
        require_chat_template (`bool`, *optional*): Fail when the tokenizer ends up with no chat template.
    """
    from transformers import AutoTokenizer

    check_model_path(name, field)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as error:
        if not looks_local(name):  # read as a Hub id: say so, since a mistyped local path reads the same
            raise GlowrlError(
                f"{field}: {name} is no local directory (relative to {Path.cwd()}) and cannot be loaded from the Hub "
                f"({type(error).__name__}: {' '.join(str(error).split())[:160]}); fix the path (./{name} for a local "
                "one) or the Hub name"
            ) from None
        raise GlowrlError(
            f"{field}: the tokenizer of {name} cannot be loaded ({type(error).__name__}: {str(error)[:200]}); check "
            "the path or the Hub name"
        ) from error
    if chat_template_path:
        template = Path(chat_template_path)
        if not template.is_file():
            raise GlowrlError(f"chat_template_path: {chat_template_path} does not exist; give a Jinja file")
        tokenizer.chat_template = template.read_text()
    if require_chat_template and tokenizer.chat_template is None:
        raise GlowrlError(
            f"{field}: the tokenizer of {name} has no chat_template; save one with the tokenizer (training uses it "
            "too) or give chat_template_path"
        )
    return tokenizer
