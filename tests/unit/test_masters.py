"""Several masters from the callers' side (edgesched.masters): the list, the leader hint, the
rotation."""

from __future__ import annotations

import json

import pytest

from edgesched.errors import ConfigError, StandbyMasterError
from edgesched.masters import (
    NO_ANSWER,
    Address,
    Leader,
    Rotation,
    from_json,
    from_rpc_error,
    leader_from_metadata,
    parse_address,
    parse_masters,
    standby_error,
)


def test_parse_masters_lists_hosts_with_the_default_port_or_their_own() -> None:
    assert parse_masters(" 10.0.0.1, master-b:7000 ,10.0.0.3", 6666) == [
        Address("10.0.0.1", 6666),
        Address("master-b", 7000),
        Address("10.0.0.3", 6666),
    ]
    assert parse_masters("127.0.0.1", 9999) == [Address("127.0.0.1", 9999)]


def test_parse_masters_takes_a_list_and_drops_duplicates() -> None:
    assert parse_masters(["a:1", "b:2,a:1"], 5) == [Address("a", 1), Address("b", 2)]


def test_ipv6_literals_bare_and_bracketed() -> None:
    assert parse_address("::1", 6666) == Address("::1", 6666)
    assert parse_address("[::1]:7000", 6666) == Address("::1", 7000)
    assert parse_address("[fe80::2]", 6666) == Address("fe80::2", 6666)
    assert str(Address("::1", 7000)) == "[::1]:7000"
    assert str(Address("10.0.0.1", 7000)) == "10.0.0.1:7000"


@pytest.mark.parametrize(
    "text",
    ["", " ", "a,,b", "a,", ",a", "a:", "a:x", "a:0", "a:70000", ":80", "[::1", "[nope]:1",
     "[::1]x", "1:2:3:zz", "a b", "http://a"],
)  # fmt: skip
def test_a_malformed_list_is_a_clear_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"agent\.master_ip"):
        parse_masters(text, 6666, "agent.master_ip")


def test_leader_from_metadata() -> None:
    metadata = (("edgesched-leader", "127.0.0.2:9999"), ("edgesched-leader-http", "127.0.0.2:6666"))
    assert leader_from_metadata(metadata) == Leader("127.0.0.2", 9999, 6666)
    assert leader_from_metadata((("edgesched-leader", b"10.0.0.1:1"),)) == Leader("10.0.0.1", 1, 0)
    assert leader_from_metadata((("other", "x"),)) is None
    assert leader_from_metadata(None) is None
    assert leader_from_metadata((("edgesched-leader", "garbage:port"),)) is None
    assert leader_from_metadata((("edgesched-leader", "10.0.0.1"),)) is None  # no port
    v6 = (("edgesched-leader", "::1:9999"), ("edgesched-leader-http", "[::1]:6666"))
    assert leader_from_metadata(v6) == Leader("::1", 9999, 6666)
    # two hosts for one leader: the gRPC one is trusted, the HTTP one dropped
    mixed = (("edgesched-leader", "10.0.0.1:1"), ("edgesched-leader-http", "10.0.0.9:2"))
    assert leader_from_metadata(mixed) == Leader("10.0.0.1", 1, 0)


def _body(leader: object, role: str = "standby") -> bytes:
    return json.dumps(
        {"error": "standby master: the leader is elsewhere", "role": role, "leader": leader}
    ).encode()


def test_from_json_reads_a_standbys_503() -> None:
    hint = {"host": "127.0.0.3", "grpc_port": 9999, "http_port": 6666}
    assert from_json(_body(hint)).leader == Leader("127.0.0.3", 9999, 6666)
    assert from_json(_body(hint)).standby
    none_yet = from_json(_body(None))
    assert none_yet.standby and none_yet.leader is None
    assert from_json(_body({"host": "x", "grpc_port": "1", "http_port": True})).leader is None
    assert from_json(b"not json") == NO_ANSWER
    assert from_json(b"[1]") == NO_ANSWER
    assert from_json(json.dumps({"detail": "journal down"})) == NO_ANSWER
    assert from_json(_body(hint, role="leader")).standby  # the error text says standby


class FakeRpcError(Exception):
    """The two accessors of grpc.aio.AioRpcError that the hint is read from."""

    def __init__(self, details: str, trailing: tuple[tuple[str, str], ...]) -> None:
        super().__init__(details)
        self._details, self._trailing = details, trailing

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


def test_from_rpc_error() -> None:
    hinted = FakeRpcError(
        "standby master: the leader is at 127.0.0.2:9999", (("edgesched-leader", "127.0.0.2:9"),)
    )
    assert from_rpc_error(hinted).leader == Leader("127.0.0.2", 9, 0)
    unknown = from_rpc_error(FakeRpcError("standby master: no leader elected yet", ()))
    assert unknown.standby and unknown.leader is None
    assert from_rpc_error(FakeRpcError("failed to connect to all addresses", ())) == NO_ANSWER
    assert from_rpc_error(OSError("refused")) == NO_ANSWER
    error = standby_error("standby", from_json(_body({"host": "h", "http_port": 1})))
    assert isinstance(error, StandbyMasterError)
    assert from_rpc_error(error).leader == Leader("h", 0, 1)
    assert from_rpc_error(standby_error("standby", from_json(_body(None)))).leader is None


A, B, C = Address("10.0.0.1", 1), Address("10.0.0.2", 1), Address("10.0.0.3", 1)


def test_rotation_goes_round_the_list() -> None:
    rotation = Rotation([A, B, C])
    seen = []
    for _ in range(4):
        seen.append(rotation.current)
        rotation.next()
    assert seen == [A, B, C, A]


def test_rotation_follows_a_hint_even_outside_the_list_then_drops_it_on_failure() -> None:
    rotation = Rotation([A, B])
    outside = Leader("10.0.0.9", 1, 2)
    assert rotation.follow(outside, answered_by=A)
    assert rotation.leader == outside
    rotation.next()  # the hinted leader failed too
    assert rotation.leader is None
    assert rotation.current == B


def test_a_hint_naming_its_giver_is_not_followed() -> None:
    rotation = Rotation([A, B])
    rotation.asked = A
    assert not rotation.follow(Leader(A.host, A.port, 0))
    assert rotation.leader is None and rotation.current == B


def test_hints_going_round_between_two_standbys_are_bounded() -> None:
    rotation = Rotation([A, B])
    followed = 0
    for i in range(20):
        asked = (A, B)[i % 2]
        other = (B, A)[i % 2]
        rotation.asked = asked
        if not rotation.follow(Leader(other.host, other.port, 0)):
            break
        followed += 1
    assert followed == rotation.max_hops == 3  # then the caller backs off
    assert rotation.leader is None


def test_a_success_resets_the_hops() -> None:
    rotation = Rotation([A, B], max_hops=2)
    assert rotation.follow(Leader(B.host, B.port), answered_by=A)
    rotation.settled()
    assert rotation.follow(Leader(A.host, A.port), answered_by=B)
    assert rotation.follow(Leader(B.host, B.port), answered_by=A)
    assert not rotation.follow(Leader(A.host, A.port), answered_by=B)


def test_rotation_needs_a_master() -> None:
    with pytest.raises(ConfigError):
        Rotation([])
