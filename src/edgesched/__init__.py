"""edgesched: spread AI-inference tasks over heterogeneous edge boards and deliver every result."""

__version__ = "0.1.0"

__all__ = ["__version__"]
