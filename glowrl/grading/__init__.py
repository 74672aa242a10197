r"""The one grader: the last `\boxed{}` of a text, checked against a gold answer with math-verify, bounded in time.

A trajectory labelled "correct" for SFT, a rollout rewarded 1 in RL and a benchmark answer scored correct in
evaluation all go through [`verify_batch`] (or its one-pair forms [`verify_answer`] and [`answers_match`]), so the
three can never disagree. `boxed` reads answers out of text; `verifier` runs math-verify in worker processes.
"""

from .boxed import as_answer, extract_boxed
from .verifier import (
    GRADING_TIMEOUT,
    answers_match,
    grading_workers,
    set_grading_workers,
    verify_answer,
    verify_batch,
)


__all__ = [
    "GRADING_TIMEOUT",
    "answers_match",
    "as_answer",
    "extract_boxed",
    "grading_workers",
    "set_grading_workers",
    "verify_answer",
    "verify_batch",
]
