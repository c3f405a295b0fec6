"""Which files a client sends, in the seed's order."""

from __future__ import annotations

from pathlib import Path


def natural_key(path: Path) -> tuple[int, int, str]:
    """Files whose stem is an integer first, in numeric order; then the rest by stem."""
    stem = path.stem
    if stem.isdigit():
        return (0, int(stem), stem)
    return (1, 0, stem)


def list_pictures(directory: Path, limit: int | None = None) -> list[Path]:
    """Regular files of the folder (not recursive, any extension), naturally sorted."""
    files = sorted(
        (p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=natural_key,
    )
    files = [p for p in files if p.suffix.lower() != ".json"]
    return files[:limit] if limit is not None else files
