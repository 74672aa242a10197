r"""Reading the final answer out of a text: the last complete `\boxed{...}`, and the normal form of an answer.

Pure string functions, no dependencies: used by the verifier, the rewards and the evaluation's scorers alike.
"""

import re


# One token of a left-to-right scan: a box opener (`\boxed{`, `\fbox {`) or a brace-less box (`\boxed 5`), an escaped
# character (`\{`, `\\`), or a grouping brace.
_BOX_TOKEN = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*(?:(\{)|([^\s{}\\$]+))?|\\.|[{}]", re.DOTALL)


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last complete `\boxed{...}` (or `\fbox{...}`, or brace-less `\boxed 5`) in `text`.

    Braces are balanced (escaped `\{` and `\}` do not count), text after the box, including stray `}`, is ignored, and
    a box that is never closed is skipped. "Last" means the box that opens last, so `\boxed{\boxed{1}}` gives `1`.
    One linear scan, so safe on long nested-brace strings. Returns `None` when there is no complete box.

    Example:
    ```python
    >>> extract_boxed(r"so \boxed{\frac{1}{2}} and {more}}")
    '\\frac{1}{2}'
    >>> extract_boxed(r"\boxed{1} then \boxed{2")
    '1'
    ```
    """
    if not isinstance(text, str) or ("\\boxed" not in text and "\\fbox" not in text):
        return None
    open_braces = []  # per open brace: where its box content starts, or -1 for a plain group
    best = None  # (start, end) of the content of the box that opened last
    for match in _BOX_TOKEN.finditer(text):
        token = match.group(0)
        if token == "}":
            start = open_braces.pop() if open_braces else -1
            if start >= 0 and (best is None or start > best[0]):
                best = (start, match.start())
        elif token == "{":
            open_braces.append(-1)
        elif match.group(1):
            open_braces.append(match.end())
        elif match.group(2) and (best is None or match.start(2) > best[0]):
            best = (match.start(2), match.end(2))
    return None if best is None else text[best[0] : best[1]]


_FONT_WRAPPER = re.compile(r"^\\(?:textbf|mathbf|text|mathrm)\{(.*)\}$", re.DOTALL)
_PARENTHESISED_INTEGER = re.compile(r"^\(\s*(\d+)\s*\)$")


def as_answer(text) -> str | None:
    """Normalise a gold or predicted answer: numbers to str, a boxed text to its box, no blanks or trailing period,
    no font wrapper around the whole answer, and no parentheses around a lone integer (`\textbf{(073)}` is `073`)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        return None
    if "\\boxed" in text or "\\fbox" in text:
        text = extract_boxed(text) or ""
    text = text.strip().rstrip(".").strip()
    wrapped = _FONT_WRAPPER.match(text)
    text = wrapped.group(1).strip() if wrapped else text
    integer = _PARENTHESISED_INTEGER.match(text)
    text = integer.group(1) if integer else text
    return text or None
