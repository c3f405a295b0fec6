"""Progress of a chaos run, on stderr (stdout carries only the JSON verdict)."""

from __future__ import annotations

import sys


def note(message: str) -> None:
    """Progress goes to stderr: stdout carries only the JSON verdict."""
    sys.stderr.write(f"chaos: {message}\n")
    sys.stderr.flush()
