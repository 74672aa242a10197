"""The prompt every stage uses: SFT trajectories, GRPO rollouts and evaluation see the same user turn.

The default is the paper's evaluation prompt for base models (GLOW's `qwen-base-template`): the question followed by
an instruction to reason step by step and box the final answer. Recipes may change the instruction and add a system
prompt; whatever they choose is applied identically in every stage.
"""

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def user_prompt(problem: str, instruction: str | None = DEFAULT_INSTRUCTION) -> str:
    """Return the user turn for `problem`: the problem, a newline, then `instruction` (omitted when empty)."""
    return f"{problem}\n{instruction}" if instruction else problem


def prompt_messages(problem: str, instruction: str | None = DEFAULT_INSTRUCTION, system_prompt: str | None = None):
    """Return the conversational prompt for `problem`: an optional system turn, then the user turn."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user_prompt(problem, instruction)}]
