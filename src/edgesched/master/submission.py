"""A submission as the intakes hand it to the master, and the cheap checks every intake makes
before a task is journaled (task type, size, picture header)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgesched.config import Settings
from edgesched.errors import BadInputError, LimitExceededError, UnknownTaskTypeError


@dataclass
class Submission:
    client_id: str
    idem_key: str
    task_type: str
    filename: str
    payload: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    deadline_ms: int = 0
    origin: str = "native"
    client_addr: str = ""
    strategy: str = ""
    payload_path: str = ""  #: where the payload already lies (seed uploads); else the master's
    checked: bool = False  #: the picture already passed check_picture


def check_task_type(settings: Settings, task_type: str) -> None:
    """A task type must name a configured model that at least one artefact can serve."""
    tt = settings.tasktypes.get(task_type)
    if tt is None:
        raise UnknownTaskTypeError(task_type, settings.tasktypes)
    if not tt.raw and not tt.all_artefacts():
        raise BadInputError(
            f"task type {task_type!r} has no model: set tasktypes.{task_type}.model or "
            f"[[tasktypes.{task_type}.artefacts]] in edgesched.toml"
        )


def check_picture(data: bytes, max_bytes: int, max_pixels: int) -> None:
    """The master's cheap checks: size, a recognisable image header, the pixel count."""
    from edgesched.inference.images import sniff_image_header

    check_size(data, max_bytes, "picture")
    sniff_image_header(data, max_pixels=max_pixels)


def check_size(data: bytes, max_bytes: int, what: str = "payload") -> None:
    if not data:
        raise BadInputError(f"empty {what}")
    if len(data) > max_bytes:
        raise LimitExceededError(
            f"{what} of {len(data)} bytes is over the upload limit of {max_bytes} bytes "
            "(master.max_upload_bytes)"
        )
