"""The effective settings written back as TOML (``edgesched config show``)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

from edgesched.config.loading import SECTIONS
from edgesched.config.settings import Settings

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def render_toml(settings: Settings) -> str:
    """The effective settings as a TOML document (what ``edgesched config show`` prints)."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for f in fields(getattr(settings, section)):
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(settings, section), f.name))}")
        lines.append("")
    for name, tt in settings.tasktypes.items():
        lines.append(f"[tasktypes.{_toml_key(name)}]")
        for f in fields(tt):
            if f.name != "artefacts" or not tt.artefacts:
                lines.append(f"{f.name} = {_toml_value(getattr(tt, f.name))}")
        lines.append("")
        for artefact in tt.artefacts:
            lines.append(f"[[tasktypes.{_toml_key(name)}.artefacts]]")
            for f in fields(artefact):
                lines.append(f"{f.name} = {_toml_value(getattr(artefact, f.name))}")
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes (\n, \", \\, \u00XX) are all valid in a TOML basic string
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    # JSON escapes are valid TOML; DEL is the one control character JSON leaves raw
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)
