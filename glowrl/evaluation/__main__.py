"""`python -m glowrl.evaluation ...`: the same command as `glowrl eval ...`."""

from glowrl.evaluation.cli import main


if __name__ == "__main__":
    raise SystemExit(main())
