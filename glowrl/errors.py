"""The errors glowrl raises for bad input: one family, so the CLI can turn every one into a single line.

Every message names what is wrong (a recipe key, a file and row, a flag) and how to fix it. Library code raises these
and never prints or exits; only `glowrl.cli` prints them (one `glowrl: error: ...` line, exit status 2).

This module holds no logic and imports nothing from glowrl.
"""


class GlowrlError(ValueError):
    """Bad input to glowrl: the message names the key, file, row or flag at fault and the fix.

    A subclass of `ValueError`, so code that catches `ValueError` (as TRL's configs raise it) catches these too.
    """


class RecipeError(GlowrlError):
    """A recipe file, a recipe key or value, or a command-line override that cannot be used."""


class DataError(GlowrlError):
    """A data file (trajectories, problems, a benchmark) that is missing, malformed or lacks a needed column."""


class EvaluationError(GlowrlError):
    """Bad input to the evaluation: a benchmark name, a model without a tokenizer, a sampling value out of range."""


class LearningCheckFailed(Exception):
    """A run finished but did not learn what it had to (the demo's checks); the CLI exits with status 1."""
