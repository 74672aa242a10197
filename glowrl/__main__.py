"""`python -m glowrl <command>`, which is also what `accelerate launch -m glowrl <stage>` runs."""

import sys

from .cli import main


if __name__ == "__main__":
    sys.exit(main())
