"""The task journal: every acknowledged task, its state and its result, on disk."""

from edgesched.journal.base import Journal, TaskRow
from edgesched.journal.memory import MemoryJournal
from edgesched.journal.sqlite import SQLiteJournal

__all__ = ["Journal", "MemoryJournal", "SQLiteJournal", "TaskRow"]
