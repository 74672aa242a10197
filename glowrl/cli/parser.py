"""The argument parser of every `glowrl` tool command: its errors are one line, never a usage dump."""

import argparse

from ..errors import GlowrlError


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one `GlowrlError` line, not a usage dump and `SystemExit(2)`."""

    def error(self, message: str):
        raise GlowrlError(f"{self.prog}: {message} (see {self.prog} --help)")
