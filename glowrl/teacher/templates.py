"""The chat-template round trip: a sampled completion, stored so that training re-renders exactly what was generated.

A teacher samples after its generation prompt, `render(prompt, add_generation_prompt=True)`. SFT later renders the
prompt plus the stored completion as a whole conversation and trains on what follows the prompt. The two agree only
if the stored completion carries whatever the generation prompt already opened inside the assistant turn: a template
that starts the answer with `<think>\\n` (Qwen3-style thinking, DeepSeek-R1) puts it in the generation prompt, so the
model never generates it, and a completion stored without it would be trained on as if the model had skipped it (the
bug TRL fixed for Qwen3 in its issue #6361). [`AssistantTurn`] finds that opening once per prompt and
[`AssistantTurn.completion`] prepends it; [`check_round_trip`] refuses a training template (the student's, which may
not be the teacher's) under which a stored completion would not re-render verbatim as the assistant's content.
"""

from dataclasses import dataclass

from ..errors import GlowrlError


_SENTINEL = "\u2063glowrl-completion\u2063"  # invisible separators: no template or text contains this


def render(tokenizer, messages: list[dict], add_generation_prompt: bool, chat_template_kwargs: dict | None = None):
    """The chat template's text for `messages` (transformers 5 returns token ids unless told not to tokenize)."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **(chat_template_kwargs or {})
    )


@dataclass(frozen=True)
class AssistantTurn:
    """How a template opens the assistant turn for one prompt.

    Attributes:
        generation_prompt: `render(prompt, add_generation_prompt=True)`: what the teacher samples after.
        opening: The part of the generation prompt that a whole conversation renders inside the assistant's content
            (`"<think>\\n"` for a template that opens a thinking block; `""` for most).
    """

    generation_prompt: str
    opening: str

    @classmethod
    def of(cls, tokenizer, prompt: list[dict], chat_template_kwargs: dict | None = None) -> "AssistantTurn":
        generation_prompt = render(tokenizer, prompt, True, chat_template_kwargs)
        full = render(tokenizer, [*prompt, {"role": "assistant", "content": _SENTINEL}], False, chat_template_kwargs)
        if _SENTINEL not in full:
            raise GlowrlError(
                "chat template: it drops the assistant's content when rendering a conversation, so SFT could not "
                "train on the sampled completions; use a template that renders assistant turns (chat_template_path)"
            )
        head = full[: full.index(_SENTINEL)]
        if not generation_prompt.startswith(head):
            raise GlowrlError(
                "chat template: a whole conversation renders the assistant turn as "
                f"{head[len(_common_prefix(head, generation_prompt)) :][:60]!r}, which the generation prompt does not "
                "end with, so the sampled completions would not re-render as generated; fix the template (or give "
                "chat_template_path)"
            )
        return cls(generation_prompt, generation_prompt[len(head) :])

    def completion(self, generated: str) -> str:
        """The completion to store for `generated`: the assistant content as a whole conversation renders it."""
        return self.opening + generated


def check_round_trip(tokenizer, prompt: list[dict], completion: str, chat_template_kwargs: dict | None = None) -> None:
    """Refuse when the training template does not render `completion` verbatim as the assistant's content.

    SFT trains on what a whole conversation renders after the prompt: that must be the stored completion (the
    teacher's opening plus what it generated) followed only by the end of the turn, and the conversation must start
    with the prompt as rendered for generation, or the split between prompt and completion is not clean.
    """
    conversation = [*prompt, {"role": "assistant", "content": completion}]
    full = render(tokenizer, conversation, False, chat_template_kwargs)
    marked = render(tokenizer, [*prompt, {"role": "assistant", "content": _SENTINEL}], False, chat_template_kwargs)
    head = marked[: marked.index(_SENTINEL)] if _SENTINEL in marked else ""
    generation_prompt = render(tokenizer, prompt, True, chat_template_kwargs)
    if not (full.startswith(head + completion) and full.startswith(generation_prompt)):
        expected = generation_prompt if full.startswith(head + completion) else head + completion
        at = len(_common_prefix(full, expected))
        raise GlowrlError(
            f"chat template: a stored completion re-renders differently from what was generated (at character "
            f"{at}: {full[at : at + 40]!r}); the training template rewrites assistant content (e.g. strips or adds a "
            "thinking block), so SFT would train on text the teacher never produced; give a training template that "
            "keeps the content as is (chat_template_path, or model_name_or_path: the student)"
        )


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
