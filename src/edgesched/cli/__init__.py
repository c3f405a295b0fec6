"""The ``edgesched`` command line: :mod:`edgesched.cli.main` holds the group and its table."""

from edgesched.cli.main import main

__all__ = ["main"]
