"""Build a small Qwen2 model and a tokenizer from local text, with no download.

Tests, the demo and the benchmarks need a real causal LM that TRL treats exactly like a Hub checkpoint, on machines
that cannot reach the Hub. [`build_tiny_model`] trains a byte-level BPE tokenizer on the given text with Qwen2's own
normaliser and pre-tokenizer (so that `AutoTokenizer`, which rebuilds both for `model_type: qwen2`, reloads it
unchanged), attaches the ChatML template shipped in `glowrl/assets/chatml.jinja` (with `{% generation %}` markers,
so `assistant_only_loss` works), and saves a randomly initialised `Qwen2ForCausalLM` next to it with
`save_pretrained`. Every stage then loads the directory by path, as it would a real model.
"""

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


# Qwen2's split regex (transformers/models/qwen2/tokenization_qwen2.py): digits are single tokens.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"


def chatml_template() -> str:
    """The ChatML chat template used by the tiny model and the tiny recipes (Qwen's turn format)."""
    return resources.files("glowrl").joinpath("assets/chatml.jinja").read_text()


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `corpus` with Qwen2's normaliser and pre-tokenizer.

    Args:
        corpus (`Iterable[str]`):
            Text the merges are learned from.
        vocab_size (`int`, *optional*, defaults to `512`):
            Target vocabulary size, including the 256 byte symbols and the special tokens.

    Returns:
        [`~transformers.PreTrainedTokenizerFast`]: EOS `<|im_end|>`, pad `<|endoftext|>`, ChatML chat template.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=PAD_TOKEN,
        chat_template=chatml_template(),
        model_max_length=4096,
    )


def build_tiny_model(
    output_dir: str | Path,
    corpus: Iterable[str],
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `corpus`, build a randomly initialised `Qwen2ForCausalLM`, and save both to `output_dir`.

    The defaults give a ~100k-parameter model that trains in seconds on a CPU. Pass a larger `vocab_size` and
    `hidden_size` for benchmarks (`vocab_size` is then padded with unused rows, like Qwen's 151,936).

    Returns:
        `Path`: `output_dir`, loadable with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`.
    """
    output_dir = Path(output_dir)
    tokenizer = train_tokenizer(corpus, vocab_size=min(vocab_size, 4096))
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=max(vocab_size, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
