"""Answer extraction and math verification shared by data labelling, RL rewards and evaluation.

One grader everywhere: a trajectory labelled "correct" for SFT, a rollout rewarded 1 in RL and a benchmark answer
scored correct in evaluation all go through [`verify_answer`], so the three can never disagree.
"""

from math_verify import LatexExtractionConfig, parse, verify


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, with balanced braces.

    Text after the box, including further `}` characters, is ignored. Returns `None` when there is no complete box.

    Example:
    ```python
    >>> extract_boxed(r"so \boxed{\frac{1}{2}} and {more}")
    '\\frac{1}{2}'
    ```
    """
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def verify_answer(completion: str, gold: str) -> float | None:
    r"""Score the final `\boxed{}` answer of `completion` against the gold answer with math-verify.

    Returns `1.0` when equivalent, `0.0` when not (or when the completion has no box), `None` when the gold answer
    does not parse.
    """
    gold_parsed = parse(f"${gold}$" if "$" not in gold and "\\boxed" not in gold else gold)
    if not gold_parsed:
        return None
    answer = extract_boxed(completion)
    if answer is None:
        return 0.0
    pred = parse(f"\\boxed{{{answer}}}", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)])
    return float(bool(pred) and verify(gold_parsed, pred))
