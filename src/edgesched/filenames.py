"""Safe file names for whatever a client calls its picture."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_EXT = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
MAX_NAME = 120


def safe_component(text: str, fallback: str = "unknown") -> str:
    """One path component made of [A-Za-z0-9._-] only: no separators, no '..', no control chars."""
    normalized = unicodedata.normalize("NFKD", text)
    cleaned = _DOTS.sub(".", _UNSAFE.sub("_", normalized)).strip("._")[:MAX_NAME]
    return cleaned or fallback


def display_name(filename: str) -> str:
    """The base name a client gave, kept for display: separators, NUL and controls removed."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if not base.isprintable():  # (a printable name holds no control: most names, no scan)
        base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    return base[:255] or "unnamed"


def safe_extension(filename: str) -> str:
    """The lower-cased extension of the base name if it is short and plain, else ''."""
    base = display_name(filename)
    dot = base.rfind(".")
    if dot <= 0:
        return ""
    ext = base[dot:].lower()
    return ext if _EXT.match(ext) else ""


def stem(filename: str) -> str:
    base = display_name(filename)
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base
