"""Sampling a teacher's completions with a seed per sample, so a resumed or sharded run draws what one run draws.

Each sample has its own seed, derived from the run's seed, its problem id and its sample index ([`sample_seed`]):
- transformers: the next token is `argmax(log p / T + Gumbel noise)` after top-k and top-p filtering, which is an
  exact draw from the filtered, tempered distribution (the Gumbel-max trick), with the noise of each row drawn from a
  `torch.Generator` seeded by that sample's seed. What a sample gets does not depend on which other samples share its
  batch, so a resumed run (which skips what is written) and a shard (which sees some problems) draw the same tokens.
  The samples of a problem are generated together, in chunks of at most `batch_size` (one prompt, no padding).
- vLLM: every sample is its own request with `SamplingParams(seed=sample_seed)`, vLLM's per-request seed.

A [`Sample`] is the generated text (up to, not including, the end-of-turn token), its token count and whether it
stopped at an end-of-turn token (`finish_reason` `"stop"`) or ran out of `max_new_tokens` (`"length"`).
"""

import hashlib
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList


@dataclass(frozen=True)
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" or "length"


def sample_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """A 63-bit seed for one sample, the same in every process and run."""
    digest = hashlib.sha256(f"{seed}\0{problem_id}\0{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class GumbelSampling(LogitsProcessor):
    """Adds Gumbel noise drawn from one generator per row; greedy decoding of the result is sampling."""

    def __init__(self, seeds: list[int], device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1 - 1e-7)))
        return scores.float() + gumbel


class TransformersSampler:
    """Samples with `model.generate` (CPU, or the GPU of this process), one problem's samples at a time."""

    def __init__(self, model: str, tokenizer, *, temperature, top_p, top_k, max_new_tokens, batch_size, dtype, device):
        from transformers import AutoModelForCausalLM, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
        self.tokenizer, self.batch_size, self.device = tokenizer, batch_size, device
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = sorted({*(i for i in eos if i is not None), tokenizer.eos_token_id} - {None})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        # Only our processors: the checkpoint's own defaults (Qwen's top_k=20, repetition_penalty) must not apply.
        self.config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=self.eos_ids, pad_token_id=pad
        )
        self.model.generation_config = self.config
        self.warpers = [TemperatureLogitsWarper(temperature)]
        self.warpers += [TopKLogitsWarper(top_k)] if top_k > 0 else []
        self.warpers += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []

    @torch.inference_mode()
    def sample(self, prompt_text: str, seeds: list[int]) -> list[Sample]:
        """One sample per seed for one prompt (the rendered generation prompt)."""
        samples = []
        ids = self.tokenizer(prompt_text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)
        for start in range(0, len(seeds), self.batch_size):
            chunk = seeds[start : start + self.batch_size]
            processors = LogitsProcessorList([*self.warpers, GumbelSampling(chunk, self.device)])
            out = self.model.generate(
                ids.expand(len(chunk), -1), generation_config=self.config, logits_processor=processors
            )
            for row in out[:, ids.shape[1] :].tolist():
                stop = next((i for i, token in enumerate(row) if token in self.eos_ids), None)
                tokens = row if stop is None else row[:stop]
                text = self.tokenizer.decode(tokens, skip_special_tokens=False)
                samples.append(Sample(text, len(tokens) + (stop is not None), "length" if stop is None else "stop"))
        return samples


class VLLMSampler:
    """Samples with vLLM (GPU): every sample a request with its own seed."""

    def __init__(self, model: str, tokenizer, *, temperature, top_p, top_k, max_new_tokens, **engine):
        from vllm import LLM

        self.tokenizer = tokenizer
        self.params = {"temperature": temperature, "top_p": top_p, "top_k": top_k if top_k > 0 else -1}
        self.params["max_tokens"] = max_new_tokens
        self.llm = LLM(model=model, **{k: v for k, v in engine.items() if v is not None})

    def sample_many(self, requests: list[tuple[str, int]]) -> list[Sample]:
        """One sample per (generation prompt, seed), in order."""
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p, _ in requests]
        params = [SamplingParams(seed=s, skip_special_tokens=False, **self.params) for _, s in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        eos_text = self.tokenizer.eos_token or ""
        samples = []
        for output in outputs:
            first = output.outputs[0]
            text = first.text[: -len(eos_text)] if eos_text and first.text.endswith(eos_text) else first.text
            samples.append(Sample(text, len(first.token_ids), "length" if first.finish_reason == "length" else "stop"))
        return samples
