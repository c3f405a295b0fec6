"""Several masters, one leader, from the side of those who call them (agents, clients, the
operators' CLI): the list "a,b,c", the leader hint a standby answers with, and which master to
try next. Pure (no I/O); runs on the boards: Python 3.9, base install only.

A standby master answers every gRPC call UNAVAILABLE with details starting "standby master:"
and, when it knows the leader, trailing metadata ``edgesched-leader`` ("host:grpc_port") and
``edgesched-leader-http`` ("host:http_port"); every HTTP route answers 503 with JSON
``{"error": "standby master: ...", "role": "standby", "leader": {"host", "grpc_port",
"http_port"} or null}``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from edgesched.errors import ConfigError, StandbyMasterError

STANDBY_PREFIX = "standby master:"
LEADER_KEY = "edgesched-leader"
LEADER_HTTP_KEY = "edgesched-leader-http"

#: the pause before following a standby's hint: the leader is known, the long backoff is not
#: needed; short, but not zero, so that a hint loop is never a busy loop
HINT_PAUSE_S = 0.05


@dataclass(frozen=True)
class Address:
    """A master's host (an IP literal or a name) and one of its ports."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Leader:
    """Where a standby says the leader is; a port is 0 where the hint did not say."""

    host: str
    grpc_port: int = 0
    http_port: int = 0

    def grpc(self) -> Optional[Address]:  # noqa: UP045 - runs on Python 3.9
        return Address(self.host, self.grpc_port) if self.grpc_port else None

    def http(self) -> Optional[Address]:  # noqa: UP045
        return Address(self.host, self.http_port) if self.http_port else None

    def names(self, address: Address) -> bool:
        """Whether ``address`` is one of the leader's own (a hint naming who gave it)."""
        return address in (self.grpc(), self.http())


def _port(text: str, entry: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ConfigError(f"{what}: bad port in {entry!r}: must be 1..65535")
    return int(text)


def parse_address(entry: str, default_port: int, what: str = "master") -> Address:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a bare IPv6 literal takes the
    default port. Raises ConfigError, naming ``what``, for anything else."""
    text = entry.strip()
    if not text:
        raise ConfigError(f"{what}: an empty entry in the list of masters")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{what}: malformed address {text!r}")
        port = _port(rest[1:], text, what) if rest else default_port
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{what}: {host!r} in {text!r} is no IPv6 address") from None
        return Address(host, port)
    if text.count(":") > 1:  # a bare IPv6 literal
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ConfigError(f"{what}: malformed address {text!r}") from None
        return Address(text, default_port)
    host, sep, port_text = text.partition(":")
    port = _port(port_text, text, what) if sep else default_port
    if not host or any(c.isspace() or c in "/@?#" for c in host):
        raise ConfigError(f"{what}: malformed host in {text!r}")
    return Address(host, port)


def parse_masters(
    masters: Union[str, Sequence[str]],  # noqa: UP007 - runs on Python 3.9
    default_port: int,
    what: str = "master",
) -> list[Address]:
    """ "a,b,c" (or a list of entries, each of which may itself be such a list) → addresses,
    in order, duplicates dropped. Raises ConfigError for an empty list or a bad entry."""
    entries = [masters] if isinstance(masters, str) else list(masters)
    found: list[Address] = []
    for listed in entries:
        for entry in listed.split(","):
            address = parse_address(entry, default_port, what)
            if address not in found:
                found.append(address)
    if not found:
        raise ConfigError(f"{what}: no master given")
    return found


def _leader_field(value: str) -> Optional[Address]:  # noqa: UP045
    """A hint's "host:port"; an IPv6 host may come bracketed or bare ("::1:9999")."""
    text = value.strip()
    if text.count(":") > 1 and not text.startswith("["):
        host, _, port = text.rpartition(":")
        text = f"[{host}]:{port}"
    try:
        address = parse_address(text, 0, "leader hint")
    except ConfigError:
        return None
    return address if address.port else None


def leader_from_metadata(
    metadata: Optional[Iterable[tuple[str, Any]]],  # noqa: UP045
) -> Optional[Leader]:  # noqa: UP045
    """The leader named by a standby's trailing metadata, or None (none named, or garbled)."""
    grpc_address: Optional[Address] = None  # noqa: UP045
    http_address: Optional[Address] = None  # noqa: UP045
    for key, value in metadata or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if key == LEADER_KEY:
            grpc_address = _leader_field(text)
        elif key == LEADER_HTTP_KEY:
            http_address = _leader_field(text)
    if grpc_address is None and http_address is None:
        return None
    if (
        grpc_address is not None
        and http_address is not None
        and grpc_address.host != http_address.host
    ):
        http_address = None  # two hosts for one leader: trust the gRPC one
    host = (grpc_address or http_address or Address("", 0)).host
    return Leader(
        host,
        grpc_address.port if grpc_address else 0,
        http_address.port if http_address else 0,
    )


def is_standby(message: str) -> bool:
    return message.strip().startswith(STANDBY_PREFIX)


@dataclass(frozen=True)
class StandbyAnswer:
    """What a call learnt about the masters: whether a standby answered, and its hint."""

    standby: bool
    leader: Optional[Leader] = None  # noqa: UP045


NO_ANSWER = StandbyAnswer(False)


def from_rpc_error(exc: BaseException) -> StandbyAnswer:
    """A failed gRPC call's error (or a StandbyMasterError from a gateway): a standby's
    answer with its hint, or NO_ANSWER (a master that is down, or any other failure)."""
    if isinstance(exc, StandbyMasterError):
        leader = Leader(exc.host, exc.grpc_port, exc.http_port) if exc.host else None
        return StandbyAnswer(True, leader)
    details, trailing = getattr(exc, "details", None), getattr(exc, "trailing_metadata", None)
    if not callable(details) or not callable(trailing):
        return NO_ANSWER
    leader = leader_from_metadata(trailing())
    return StandbyAnswer(is_standby(str(details() or "")) or leader is not None, leader)


def from_json(body: Union[bytes, str, Mapping[str, Any]]) -> StandbyAnswer:  # noqa: UP007
    """A 503's body: a standby's answer with its hint, or NO_ANSWER (not a standby's)."""
    data: Any = body
    if isinstance(body, (bytes, str)):
        try:
            data = json.loads(body)
        except ValueError:
            return NO_ANSWER
    if not isinstance(data, Mapping):
        return NO_ANSWER
    if data.get("role") != "standby" and not is_standby(str(data.get("error", ""))):
        return NO_ANSWER
    leader = data.get("leader")
    if not isinstance(leader, Mapping) or not isinstance(leader.get("host"), str):
        return StandbyAnswer(True)
    ports: list[int] = []
    for key in ("grpc_port", "http_port"):
        value = leader.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535
        ports.append(value if ok and isinstance(value, int) else 0)
    if not leader["host"] or ports == [0, 0]:
        return StandbyAnswer(True)
    return StandbyAnswer(True, Leader(leader["host"], ports[0], ports[1]))


def standby_error(message: str, answer: StandbyAnswer) -> StandbyMasterError:
    """The error a caller raises for a standby's answer: it carries the hint."""
    leader = answer.leader
    if leader is None:
        return StandbyMasterError(message)
    return StandbyMasterError(message, leader.host, leader.grpc_port, leader.http_port)


class Rotation:
    """Which master to try next: the hinted leader first, else the next of the list.

    A hint naming an address not in the list is followed all the same (the masters know their
    leader better than a stale list). Hints followed without a success in between are counted:
    past ``max_hops`` (two standbys naming each other, or a hint naming its own giver) the hint
    is dropped and the caller is told to back off, so a loop of hints runs at the backoff's pace,
    never faster."""

    def __init__(self, addresses: Sequence[Address], max_hops: int = 0) -> None:
        if not addresses:
            raise ConfigError("no master given")
        self.addresses = list(addresses)
        self.max_hops = max_hops or len(self.addresses) + 1
        self.hops = 0
        self._index = 0
        self._leader: Optional[Leader] = None  # noqa: UP045
        #: the address last asked or dialled (the caller sets it): a hint naming it is a loop
        self.asked: Optional[Address] = None  # noqa: UP045

    @property
    def current(self) -> Address:
        """The list's address to try (when there is no hint to follow)."""
        return self.addresses[self._index]

    @property
    def leader(self) -> Optional[Leader]:  # noqa: UP045
        """The hinted leader the next try goes to, if any."""
        return self._leader

    def follow(self, leader: Leader, answered_by: Optional[Address] = None) -> bool:  # noqa: UP045
        """A standby (``answered_by``, else ``asked``) named ``leader``: the next try goes
        there. True: go at once (after HINT_PAUSE_S); False: the hints go round, back off
        first (the hint is dropped and the list moves on)."""
        answered_by = answered_by or self.asked
        self.hops += 1
        if (answered_by is not None and leader.names(answered_by)) or self.hops > self.max_hops:
            self.hops = 0
            self.next()
            return False
        self._leader = leader
        return True

    def next(self) -> None:
        """The master tried did not answer (or answered without a hint): the next of the list."""
        self._leader = None  # a hinted leader that fails is dropped like any other
        self._index = (self._index + 1) % len(self.addresses)

    def settled(self) -> None:
        """A master answered as the leader: hints count again from zero."""
        self.hops = 0
