"""One typed settings object, read once: defaults → edgesched.toml → environment → flags.

Every key lives in a section (``[master]``, ``[agent]``, ``[scheduling]``, ``[client]``) and can be
set by the environment as ``EDGESCHED_<SECTION>_<KEY>`` (``EDGESCHED_MASTER_PORT=9999``).
Task types are tables under ``[tasktypes.<name>]``. ``EDGESCHED_TOKEN`` is the agent's join token.

``settings`` holds the types, ``loading`` reads them (``load_settings``), ``validation`` checks
them, ``rendering`` writes them back as TOML; everything is importable from here.
"""

from __future__ import annotations

from edgesched.config.loading import CONFIG_FILE, ENV_ALIASES, SECTIONS, load_settings
from edgesched.config.rendering import render_toml
from edgesched.config.settings import (
    BUNDLED_LAYOUT,
    MODEL_FORMATS,
    NATIVE_FORMATS,
    AgentSettings,
    ArtefactSettings,
    ClientSettings,
    MasterSettings,
    SchedulingSettings,
    Settings,
    TaskTypeSettings,
)
from edgesched.config.validation import AUTH_READ_VALUES, is_loopback, reads_need_token, validate

__all__ = [
    "AUTH_READ_VALUES",
    "BUNDLED_LAYOUT",
    "CONFIG_FILE",
    "ENV_ALIASES",
    "MODEL_FORMATS",
    "NATIVE_FORMATS",
    "SECTIONS",
    "AgentSettings",
    "ArtefactSettings",
    "ClientSettings",
    "MasterSettings",
    "SchedulingSettings",
    "Settings",
    "TaskTypeSettings",
    "is_loopback",
    "load_settings",
    "reads_need_token",
    "render_toml",
    "validate",
]
