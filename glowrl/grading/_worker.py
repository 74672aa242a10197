"""The grading worker: a child process that parses and verifies (answer, gold) pairs with math-verify.

Run by [`~glowrl.grading.verifier`] as a standalone file (`runpy.run_path`), so it imports only the standard library
and math-verify. It reads JSON lines `{"timeout": s, "pairs": [[answer, gold], ...]}` on stdin and writes, per pair,
`[gold parses]` and then, when it does, `[score]`. The parent enforces the time bound by killing it.
"""

import json
import logging
import os
import sys


def _serve() -> None:
    """Worker main loop: for each pair write `[gold parses]`, then `[score]` when it does; math-verify timeouts off."""
    import functools
    import math
    import signal
    import warnings

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints from libraries must not corrupt the protocol
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # math-verify warns that its timeouts are off: the parent enforces them
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]  # default normalisation reads `\frac43` and units

    @functools.lru_cache(maxsize=4096)
    def parse_answer(answer: str) -> list:
        return parse(f"\\boxed{{{answer}}}", config, extraction_mode="first_match", parsing_timeout=None)

    out.write('["ready"]\n')
    for line in sys.stdin:
        request = json.loads(line)
        for answer, gold in request["pairs"]:
            # Backstop if the parent died without killing us: SIGALRM's default action ends the process even inside C
            # code. The parent kills us at `timeout`, so this fires only for orphans.
            signal.alarm(math.ceil(request["timeout"]) + 5)
            try:
                gold_parsed = parse_answer(gold)
                gold_ok = any(not isinstance(x, str) for x in gold_parsed)  # a bare string is math-verify's fallback
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
