r"""The grading worker: a child process that parses and verifies (answer, gold) pairs with math-verify.

Run by [`~glowrl.grading.verifier`] as a standalone file (`runpy.run_path`), so it imports only the standard library
and math-verify. It reads JSON lines `{"timeout": s, "pairs": [[answer, gold], ...]}` on stdin and writes, per pair,
`[gold parses]` and then, when it does, `[score]`. The parent enforces the time bound by killing it.

[`parse_answer`] reads an answer (gold or predicted, the same way for both) as math-verify reads a `\boxed{}` answer,
and, only when that yields nothing mathematical, tries fallbacks for the raw forms public benchmark golds come in:
- prose around the answer (`$f(x)=ax+b$, where $b$ is ...`): the first `$...$` segment;
- LaTeX outside `$...$`, subscripts holding commands (`m_{\max}`, `L_{\odot}`), and `E_{1}` (the parser reads `E` as
  an exponent marker; it becomes a symbol);
- Python-style expressions (`np.sqrt(2)/3`, `np.arcsin(10/13)`, `-2./5`);
- a variable before an interval whose "in" was lost (`t(0,4]`).
A wrong answer cannot match through a fallback that a right one would not: the fallbacks only turn text that parsed
to nothing into the expression a reader sees. Recall and false positives are measured in `benchmarks/grader_recall.py`.
"""

import functools
import json
import logging
import os
import re
import sys


_MATH_SEGMENT = re.compile(r"\$([^$]+)\$")
_FUNCTIONS = re.compile(r"\b(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|log|ln|exp)\(")  # not sqrt: read as is


def _fallbacks(text: str):
    """(config kind, text) pairs to try, in order, when the plain `\boxed{}` reading of `text` parsed to nothing."""
    t = text.strip()
    segments = _MATH_SEGMENT.findall(t)
    if len(segments) > 1 or (segments and not (t.startswith("$") and t.endswith("$"))):
        t = segments[0]
    t = t.strip("$").strip()
    t = re.sub(r"_\{\\([A-Za-z]+)\s*\}", r"_{\1}", t)  # m_{\max} -> m_{max}
    t = re.sub(r"(?<![A-Za-z\\])E_", r"\\mathcal{E}_", t)  # E_{1} -> \mathcal{E}_{1}
    yield "latex", f"${t}$"
    py = re.sub(r"\b(?:np|numpy|math|sympy|sp)\.", "", text.strip().strip("$")).replace("**", "^")
    py = re.sub(r"(?<![\d.])(\d+)\.(?!\d)", r"\1", py)  # 1./3 -> 1/3
    yield "latex", "$" + _FUNCTIONS.sub(r"\\\1(", py) + "$"
    yield "expr", py
    interval = re.fullmatch(r"[A-Za-z]\s*([\(\[][^\(\[\)\]]*[\)\]])", t)
    if interval:
        yield "latex", f"${interval.group(1)}$"


def _is_math(result: list) -> bool:
    return any(not isinstance(x, str) for x in result)  # a bare string is math-verify's "could not parse"


@functools.lru_cache(maxsize=4096)
def parse_answer(answer: str) -> list:
    """math-verify's reading of an answer, with the fallbacks above when the plain reading finds no math."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    boxed = [LatexExtractionConfig(boxed_match_priority=0)]  # default normalisation reads `\frac43` and units
    primary = parse(f"\\boxed{{{answer}}}", boxed, extraction_mode="first_match", parsing_timeout=None)
    if _is_math(primary):
        return primary
    configs = {"latex": [LatexExtractionConfig()], "expr": [ExprExtractionConfig()]}
    for kind, text in _fallbacks(answer):
        try:
            result = parse(text, configs[kind], extraction_mode="first_match", parsing_timeout=None)
        except Exception:  # noqa: BLE001, S112 - a fallback that does not parse is just skipped
            continue
        if _is_math(result):
            return result
    return primary


def _serve() -> None:
    """Worker main loop: for each pair write `[gold parses]`, then `[score]` when it does; math-verify timeouts off."""
    import math
    import signal
    import warnings

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints from libraries must not corrupt the protocol
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # math-verify warns that its timeouts are off: the parent enforces them
    from math_verify import verify

    out.write('["ready"]\n')
    for line in sys.stdin:
        request = json.loads(line)
        for answer, gold in request["pairs"]:
            # Backstop if the parent died without killing us: SIGALRM's default action ends the process even inside C
            # code. The parent kills us at `timeout`, so this fires only for orphans.
            signal.alarm(math.ceil(request["timeout"]) + 5)
            try:
                gold_parsed = parse_answer(gold)
                gold_ok = _is_math(gold_parsed)
            except Exception:  # noqa: BLE001 - whatever sympy raises, the gold does not parse
                gold_ok = False
            out.write(f"[{json.dumps(gold_ok)}]\n")
            if gold_ok:
                try:
                    score = answer is not None and verify(gold_parsed, parse_answer(answer), timeout_seconds=None)
                except Exception:  # noqa: BLE001 - whatever sympy raises, the answer is not verified
                    score = False
                out.write(f"[{float(score)}]\n")
        signal.alarm(0)


if __name__ == "__glowrl_grading_worker__":
    _serve()
