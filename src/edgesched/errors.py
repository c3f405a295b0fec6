"""The one exception tree of edgesched.

::

    EdgeschedError
    ├── ConfigError            a setting is missing, malformed or names an unknown plugin
    │   └── UnknownPluginError  a strategy / backend / profile name that is not registered
    ├── BadInputError          a task's input can never succeed (corrupt picture, bad name, ...)
    │   └── UnknownTaskTypeError  the task type has no model in the configuration
    ├── LimitExceededError     an upload or a request is over a configured limit
    │   └── ImageTooLargeError  more pixels than allowed (also a BadInputError)
    ├── NotFoundError          a task or device id that does not exist
    ├── ConflictError          the request contradicts the current state (cancel a finished task)
    ├── JournalError           the journal cannot be opened or written
    │   ├── DiskFullError       no space left: nothing was half-written
    │   ├── DamagedJournalError the journal is damaged or incomplete: work may be missing
    │   ├── JournalUnavailableError  its database cannot be reached now: try again
    │   └── FencedError         another master leads: this one's write was refused
    ├── PayloadError           a task's payload cannot be read back (gone, CRC mismatch)
    ├── AuthError              missing or wrong join token / credential / API token
    ├── BackendError           the inference backend failed for reasons other than the input
    └── TransportError         a link or a connection failed

gRPC and HTTP map these to status codes in one place each (``edgesched.master.errmap``).
"""

from __future__ import annotations

from collections.abc import Iterable


class EdgeschedError(Exception):
    """Root of every error edgesched raises on purpose."""


class ConfigError(EdgeschedError):
    """A setting is missing or malformed."""


class UnknownPluginError(ConfigError):
    """A plugin name (strategy, backend, profile) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")


class BadInputError(EdgeschedError):
    """The task's input is wrong and retrying it cannot help."""


class UnknownTaskTypeError(BadInputError):
    """A task type that the configuration does not map to a model."""

    def __init__(self, task_type: str, known: Iterable[str]) -> None:
        self.task_type = task_type
        configured = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"unknown task type {task_type!r}: set [tasktypes.{task_type}] in edgesched.toml "
            f"(config key tasktypes.{task_type}.model); configured: {configured}"
        )


class LimitExceededError(EdgeschedError):
    """An upload or a request is over a configured limit."""


class ImageTooLargeError(LimitExceededError, BadInputError):
    """A picture with more pixels than allowed (a decompression bomb): a limit, and bad input."""


class NotFoundError(EdgeschedError):
    """A task or device id that does not exist."""


class ConflictError(EdgeschedError):
    """The request contradicts the current state."""


class JournalError(EdgeschedError):
    """The journal cannot be opened or written."""


class DiskFullError(JournalError):
    """No space left on the device; nothing was half-written."""


class DamagedJournalError(JournalError):
    """The journal fails its integrity check or misses work it once held (refused at start)."""


class JournalUnavailableError(JournalError):
    """The journal's database cannot be reached now (restarting, failing over): try again."""


class FencedError(JournalError):
    """This master's write carried a lease token that is no longer the database's: another
    master leads now, and this one's write was refused (never applied)."""


class PayloadError(EdgeschedError):
    """A task's payload cannot be read back as it was submitted (gone, or its CRC differs)."""


class AuthError(EdgeschedError):
    """A missing or wrong join token, credential or API token."""


class BackendError(EdgeschedError):
    """The inference backend failed for reasons other than the input."""


class TransportError(EdgeschedError):
    """A link or a connection failed."""


class StandbyMasterError(TransportError):
    """A standby master answered (several masters, one leader): ``host`` and its ports say
    where the leader is, "" and 0 where the standby did not know (edgesched.masters)."""

    def __init__(
        self, message: str, host: str = "", grpc_port: int = 0, http_port: int = 0
    ) -> None:
        super().__init__(message)
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
