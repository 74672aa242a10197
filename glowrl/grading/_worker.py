r"""The grading worker: a child process that parses and verifies (answer, gold) pairs with math-verify.

Run by [`~glowrl.grading.verifier`] as a standalone file (`runpy.run_path`), so it imports only the standard library
and math-verify (with sympy, its dependency). It reads JSON lines `{"timeout": s, "pairs": [[answer, gold], ...]}` on
stdin and writes, per pair, `[gold parses]` and then, when it does, `[score]`. The parent enforces the time bound by
killing it.

[`parse_answer`] reads an answer (gold or predicted, the same way for both) as math-verify reads a `\boxed{}` answer,
after the rewrites a reader makes without thinking ([`normalise`]): a whole answer that says "no solution" or "the
empty set" in words, symbols or both (`No solution : $\oslash$`, `\varnothing`, `no real solutions`) is `\emptyset`;
one that says "all real numbers" (`$\{$ All real numbers. $\}: \mathbb{R}$`) is `\mathbb{R}`; digits grouped in
threes by thin spaces (`11\,111\,111\,100`) are one number. Only when that yields nothing mathematical, it tries
fallbacks for the raw forms benchmark golds come in:
- a relation or words, a colon, then the set they describe (`$x<-7:(-\infty,-7)$`): the set;
- prose around the answer (`$f(x)=ax+b$, where $b$ is ...`): the first `$...$` segment;
- LaTeX outside `$...$`, subscripts holding commands (`m_{\max}`, `L_{\odot}`), and `E_{1}` (the parser reads `E` as
  an exponent marker; it becomes a symbol);
- Python-style expressions (`np.sqrt(2)/3`, `np.arcsin(10/13)`, `-2./5`);
- a variable before an interval whose "in" was lost (`t(0,4]`);
- variables in upright type (`x=\frac{\mathrm{gb}}{a}`, which math-verify drops as units) and relation chains written
  with spaces (`b > a > c`).
A wrong answer cannot match through a fallback that a right one would not: the fallbacks only turn text that parsed
to nothing into the expression a reader sees.

[`patch_math_verify`] replaces three of math-verify 0.9's comparisons, each a bug measured on real answers: two
equations that both have no solution were equal (`|A|=-32` and `|A|=-6`: it zipped two empty solution lists);
relations and expressions in different variables went through `simplify` and `solve` for all their unknowns at once
(26 s for two of Minerva-Math's differential equations, which the parent cut at its 5 s deadline), and are now
unequal at once; and an equation in three or more unknowns equals another when one is the other times a nonzero
monomial (`LC v'' + v = v_i` and `v'' + v/(LC) = v_i/(LC)`), not by solving for all of them. Recall and false
positives on the shipped benchmarks are measured by `benchmarks/grader.py`.
"""

import functools
import json
import logging
import os
import re
import sys


_MATH_SEGMENT = re.compile(r"\$([^$]+)\$")
_FUNCTIONS = re.compile(r"\b(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|log|ln|exp)\(")  # not sqrt: read as is

# Whole answers that name a set in words, symbols or both ("No solution : ∅"), read as that set's symbol.
_EMPTY = r"(?:\\emptyset|\\varnothing|\\oslash|∅|\\\{\s*\\\}|\{\s*\})"
_NONE = r"(?i:(?:there\s+(?:is|are)\s+)?no\s+(?:real\s+)?(?:solutions?|roots?)(?:\s+exists?)?|(?:the\s+)?empty\s+set)"
_REALS = r"(?:\\mathbb\s*\{?R\}?|ℝ|\\R(?![A-Za-z])|\(\s*-\s*\\infty\s*,\s*\+?\s*\\infty\s*\))"
_ALL_REALS = r"(?i:(?:the\s+set\s+of\s+)?all\s+real\s+numbers|all\s+reals|every\s+real\s+number)"
_SEP = r"\s*[:,;=]?\s*"
_SETS = [
    (re.compile(rf"{_NONE}|(?:{_NONE}{_SEP})?(?:{_EMPTY}|\(\s*{_EMPTY}\s*\))"), r"\emptyset"),
    (re.compile(rf"(?:\\\{{\s*)?{_ALL_REALS}(?:\s*\\\}})?(?:{_SEP}{_REALS})?"), r"\mathbb{R}"),
]
_WORD_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
# Digits grouped in threes by a thin space or similar (`11\,111`, `11{,}111`, `11\ 111`): one number.
_GROUPED_DIGITS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:\\[,;: !]|\\thinspace\s*|\{,\}|~)\d{3})+(?!\d)")
_GROUP_SEPARATOR = re.compile(r"\\[,;: !]|\\thinspace\s*|\{,\}|~")
# `<relation or words> : <set>`: the set, when what follows the colon opens an interval or names a set.
_SET_AFTER_COLON = re.compile(r"(?P<before>[^:]*[^:\s])\s*:\s*(?P<set>(?:\\left)?[(\[]|\\mathbb|\\\{|\\emptyset)")


def normalise(answer: str) -> str:
    r"""The answer with the rewrites every reader makes: a whole answer naming the empty set or the real numbers in
    words or symbols becomes `\emptyset` or `\mathbb{R}`; digits grouped in threes by thin spaces become one number."""
    plain = _WORD_WRAPPER.sub(r"\1", answer.replace("$", " "))
    plain = re.sub(r"\.(?!\d)", " ", plain)  # full stops of prose, not decimal points
    plain = " ".join(plain.split())
    for pattern, symbol in _SETS:
        if pattern.fullmatch(plain):
            return symbol
    return _GROUPED_DIGITS.sub(lambda m: _GROUP_SEPARATOR.sub("", m.group(0)), answer)


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
    upright = re.sub(r"\\(?:mathrm|mathit|text)\s*\{\s*([A-Za-z]+)\s*\}", r"{\1}", t)  # \mathrm{gb} -> {gb}
    yield "latex", "$" + re.sub(r"\s*([<>=])\s*", r"\1", upright) + "$"  # b > a > c -> b>a>c


def _is_math(result: list) -> bool:
    return any(not isinstance(x, str) for x in result)  # a bare string is math-verify's "could not parse"


@functools.lru_cache(maxsize=4096)
def parse_answer(answer: str) -> list:
    """math-verify's reading of an answer, with the fallbacks above when the plain reading finds no math."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    answer = normalise(answer)
    boxed = [LatexExtractionConfig(boxed_match_priority=0)]  # default normalisation reads `\frac43` and units
    primary = parse(f"\\boxed{{{answer}}}", boxed, extraction_mode="first_match", parsing_timeout=None)
    if _is_math(primary):
        return primary
    colon = _SET_AFTER_COLON.match(answer.replace("$", " ").strip())
    if colon:  # `x<-7:(-\infty,-7)`: both readings, so that either form of the answer matches
        readings = [parse_answer(colon.group("before")), parse_answer(colon.string[colon.start("set") :])]
        if any(_is_math(r) for r in readings):
            return [x for r in readings for x in r if not isinstance(x, str)] + [answer]
    configs = {"latex": [LatexExtractionConfig()], "expr": [ExprExtractionConfig()]}
    for kind, text in _fallbacks(answer):
        try:
            result = parse(text, configs[kind], extraction_mode="first_match", parsing_timeout=None)
        except Exception:  # noqa: BLE001, S112 - a fallback that does not parse is just skipped
            continue
        if _is_math(result):
            return result
    return primary


def _free_symbols(expr):
    try:
        return expr.free_symbols
    except Exception:  # noqa: BLE001 - not a sympy object: no opinion
        return None


def _monomial_multiple(gold, pred) -> bool:
    """Whether one equation is the other times a nonzero number and powers of its unknowns (`LC v'' + v = v_i` and
    `v'' + v/(LC) = v_i/(LC)`). Used for equations in three or more unknowns only, where such a factor's unknowns are
    a formula's parameters (`x = 1` times x is `x^2 - x = 0`, which has another solution)."""
    from sympy import Mul, cancel, nan, oo, together, zoo

    ratio = cancel(together((gold.lhs - gold.rhs) / (pred.lhs - pred.rhs)))
    if ratio == 0 or ratio.has(nan, oo, -oo, zoo):
        return False
    return all(
        (f.is_number and f != 0) or f.is_Symbol or (f.is_Pow and f.base.is_Symbol and f.exp.is_Integer)
        for f in Mul.make_args(ratio)
    )


def patch_math_verify() -> None:
    """Replace three comparisons of math-verify 0.9 (see the module docstring): in this worker process only."""
    from math_verify import grader
    from sympy import And, Eq, ordered, solve

    if getattr(grader, "_glowrl_patched", False):
        return
    compare_relational, symbolic_eq, solve_and_compare = (
        grader.sympy_compare_relational,
        grader.sympy_symbolic_eq,
        grader.sympy_solve_and_compare,
    )

    def relational(gold, pred, float_rounding, numeric_precision):
        gold_symbols, pred_symbols = _free_symbols(gold), _free_symbols(pred)
        if gold_symbols is not None and pred_symbols is not None and gold_symbols != pred_symbols:
            return False  # relations in different variables (x = 1, y = 1): not the same relation
        if compare_relational(gold, pred, float_rounding, numeric_precision):
            return True
        if not (isinstance(gold, And) and isinstance(pred, And) and len(gold.args) == len(pred.args)):
            return False
        # A chain in another order or direction (b > a > c and c < a < b): each link matches a link of the other.
        unmatched = list(pred.args)
        for link in gold.args:
            match = next((p for p in unmatched if relational(link, p, float_rounding, numeric_precision)), None)
            if match is None:
                return False
            unmatched.remove(match)
        return True

    def symbolic(a, b):
        a_symbols, b_symbols = _free_symbols(a), _free_symbols(b)
        if a_symbols is not None and b_symbols is not None and a_symbols != b_symbols:
            return False  # expressions in different variables: no `simplify` of their difference
        return symbolic_eq(a, b)

    def solve_then_compare(gold, pred, float_rounding, numeric_precision):
        if not (isinstance(gold, Eq) and isinstance(pred, Eq)):
            return len(gold.free_symbols) <= 2 and solve_and_compare(gold, pred, float_rounding, numeric_precision)
        if len(gold.free_symbols) > 2:  # solving for three or more unknowns at once takes tens of seconds
            return _monomial_multiple(gold, pred)
        solved_gold = list(ordered(solve(gold, gold.free_symbols)))
        solved_pred = list(ordered(solve(pred, pred.free_symbols)))
        if not solved_gold or len(solved_gold) != len(solved_pred):
            return False  # no solution on either side says nothing about which equation it was
        key = grader.sort_key
        return all(
            all(
                g_key == p_key and grader.sympy_expr_eq(g_value, p_value, float_rounding, numeric_precision)
                for (g_key, g_value), (p_key, p_value) in zip(sorted(g.items()), sorted(p.items()), strict=True)
            )
            for g, p in zip(
                ordered(solved_gold, keys=key, default=False),
                ordered(solved_pred, keys=key, default=False),
                strict=True,
            )
        )

    grader.sympy_compare_relational = relational
    grader.sympy_symbolic_eq = symbolic
    grader.sympy_solve_and_compare = solve_then_compare
    grader._glowrl_patched = True


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

    patch_math_verify()
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
