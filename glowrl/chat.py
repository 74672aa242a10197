"""The prompt every stage uses, and the text of a completion: one definition for data, RL, generation and evaluation.

The default user turn is the paper's evaluation prompt for base models (GLOW's `qwen-base-template`): the question
followed by an instruction to reason step by step and box the final answer. Recipes may change the instruction and
add a system prompt; whatever they choose is applied identically in every stage. Imports nothing.
"""

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def user_prompt(problem: str, instruction: str | None = DEFAULT_INSTRUCTION) -> str:
    """Return the user turn for `problem`: the problem, a newline, then `instruction` (omitted when empty)."""
    return f"{problem}\n{instruction}" if instruction else problem


def prompt_messages(problem: str, instruction: str | None = DEFAULT_INSTRUCTION, system_prompt: str | None = None):
    """Return the conversational prompt for `problem`: an optional system turn, then the user turn."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user_prompt(problem, instruction)}]


def completion_text(completion) -> str:
    """The text of a completion: a string as is, or the content of the last message of a conversational one.

    Multimodal content (a list of parts) gives the concatenation of its text parts; anything else gives `""`.

    Example:
    ```python
    >>> completion_text([{"role": "assistant", "content": "42"}])
    '42'
    ```
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
        return content if isinstance(content, str) else ""
    return ""
