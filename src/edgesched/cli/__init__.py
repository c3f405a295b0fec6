"""The ``edgesched`` command line: :mod:`edgesched.cli.group` holds the group and its table."""

from edgesched.cli.group import main

__all__ = ["main"]
