"""Reading the settings: defaults → edgesched.toml → environment → flags, then validated."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgesched.config.settings import (
    ArtefactSettings,
    Settings,
    TaskTypeSettings,
)
from edgesched.config.validation import validate
from edgesched.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - boards run Python 3.9/3.10
    import tomli as tomllib

CONFIG_FILE = "edgesched.toml"

SECTIONS = ("master", "scheduling", "agent", "client")
ENV_ALIASES = {
    "EDGESCHED_TOKEN": ("agent", "token"),
    "EDGESCHED_API_TOKEN": ("client", "api_token"),
}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    """Turns a TOML, environment or flag value into the type of the field's default."""
    where = f"{section}.{key}"
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r} as {type(default).__name__}") from exc


def _apply(section: str, target: Any, values: Mapping[str, Any], origin: str) -> None:
    known = {f.name for f in fields(target)}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(
                f"{origin}: unknown key {section}.{key}; known: {', '.join(sorted(known))}"
            )
        setattr(target, name, _coerce(section, name, value, getattr(target, name)))


def load_settings(
    config_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Builds the settings: defaults, then ``<config_dir>/edgesched.toml``, the environment, flags.

    ``overrides`` holds only the flags the user gave, as ``{"master": {"port": 0}}``.
    """
    settings = Settings()
    if config_dir is not None:
        path = Path(config_dir) / CONFIG_FILE
        if path.exists():
            _load_file(settings, path)
        elif not Path(config_dir).is_dir():
            raise ConfigError(f"config directory {config_dir} does not exist")
    environ = os.environ if env is None else env
    for name, value in environ.items():
        if not name.startswith("EDGESCHED_"):
            continue
        if name in ENV_ALIASES:
            section, key = ENV_ALIASES[name]
            _apply(section, getattr(settings, section), {key: value}, f"environment {name}")
            continue
        rest = name[len("EDGESCHED_") :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                _apply(section, getattr(settings, section), {key: value}, f"environment {name}")
                break
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"flag: unknown section {section!r}; known: {', '.join(SECTIONS)}")
        clean = {k: v for k, v in values.items() if v is not None}
        _apply(section, getattr(settings, section), clean, "flag")
    validate(settings)
    return settings


def _load_file(settings: Settings, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for section, values in data.items():
        if section == "tasktypes":
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [tasktypes] must be a table of tables")
            for name, table in values.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"{path}: tasktypes.{name} must be a table")
                tt = settings.tasktypes.get(name) or TaskTypeSettings()
                table = dict(table)
                artefacts = table.pop("artefacts", None)
                _apply(f"tasktypes.{name}", tt, table, str(path))
                if artefacts is not None:
                    tt.artefacts = _artefacts(f"tasktypes.{name}.artefacts", artefacts, path)
                settings.tasktypes[name] = tt
        elif section in SECTIONS:
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            _apply(section, getattr(settings, section), values, str(path))
        else:
            raise ConfigError(
                f"{path}: unknown section [{section}]; known: {', '.join(SECTIONS)}, tasktypes"
            )


def _artefacts(where: str, items: Any, path: Path) -> list[ArtefactSettings]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path}: {where} must be an array of tables ([[{where}]])")
    out = []
    for index, item in enumerate(items):
        artefact = ArtefactSettings()
        _apply(f"{where}[{index}]", artefact, item, str(path))
        out.append(artefact)
    return out


#: spellings of master.auth_read (a flag or an environment variable gives true/false)
