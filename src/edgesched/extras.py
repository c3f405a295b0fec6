"""The optional extras (pyproject's ``[project.optional-dependencies]``) and what each provides.

The base install is what a board runs (the agent, ``probe``, the client, ``token``); a command
that needs more checks its extra before it starts, so a board without it reads one line naming
the extra instead of a traceback (``edgesched.cli``). Runs on the boards' Python 3.9.
"""

from __future__ import annotations

import importlib.util

#: extra → (distribution, the module it provides): a unit test keeps this equal to pyproject's
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "master": (
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
        ("httpx", "httpx"),
        ("rich", "rich"),
        ("python-multipart", "python_multipart"),
        ("cryptography", "cryptography"),
        ("prometheus-client", "prometheus_client"),
    ),
    "onnx": (("onnxruntime", "onnxruntime"),),
    "postgres": (("asyncpg", "asyncpg"),),
}
EXTRAS["all"] = EXTRAS["master"] + EXTRAS["onnx"] + EXTRAS["postgres"]

#: the modules of every extra: none of them may be imported by what a board runs
EXTRA_MODULES = frozenset(module for _, module in EXTRAS["all"])


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` whose module cannot be found here (none are imported)."""
    return [dist for dist, module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def install_hint(extra: str) -> str:
    return f"pip install 'edgesched[{extra}]'"
