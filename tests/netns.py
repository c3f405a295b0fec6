"""A network namespace joined to the root namespace by a veth pair, for partition tests.

``isolated_namespace()`` creates the namespace, the pair and a /30 between them, and always
deletes them again. A partition is cut from *inside* the namespace (its end of the pair goes
down): connections then time out, as a real partition does. Taking the root-side end down would
remove the route instead, and traffic would fall through to the default route, where something
may answer (shared reference ``testing-here.md``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

#: the /30s are carved out of this range (one per namespace, chosen from the process id)
POOL = ipaddress.IPv4Network("10.213.0.0/16")

_made = itertools.count()


class NamespaceUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no ``ip``, no permission)."""


def why_unavailable() -> str | None:
    """The reason namespaces cannot be made here, or None when they can be tried."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs ``ip ARGS``; on failure the error names the command and what it printed."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class Namespace:
    name: str
    host_veth: str  #: the root namespace's end of the pair
    inner_veth: str  #: the namespace's end of the pair
    host_ip: str  #: reachable from inside the namespace
    inner_ip: str  #: reachable from the root namespace

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """A silent partition: the namespace's end of the link goes down."""
        ip("netns", "exec", self.name, "ip", "link", "set", self.inner_veth, "down")

    def heal(self) -> None:
        ip("netns", "exec", self.name, "ip", "link", "set", self.inner_veth, "up")


def _free_subnet(pid: int, n: int) -> ipaddress.IPv4Network:
    """A /30 of the pool that no interface of the root namespace uses, starting at one chosen
    from the process id (so runs side by side do not collide)."""
    used = ip("-4", "-o", "addr", "show").stdout
    subnets = list(POOL.subnets(new_prefix=30))
    start = (pid * 7 + n) % len(subnets)
    for offset in range(len(subnets)):
        subnet = subnets[(start + offset) % len(subnets)]
        hosts = [str(h) for h in subnet.hosts()]
        if not any(f" {h}/" in used for h in hosts):
            return subnet
    raise NamespaceUnavailable(f"every /30 of {POOL} is in use")


@contextlib.contextmanager
def isolated_namespace() -> Iterator[Namespace]:
    """A fresh namespace with ``lo`` up and a veth /30 to the root namespace; deleted on exit.

    Processes started inside it must be stopped before the block ends (a namespace lives on
    while a process is in it). Raises NamespaceUnavailable when it cannot be made.
    """
    reason = why_unavailable()
    if reason is not None:
        raise NamespaceUnavailable(reason)
    pid = os.getpid()
    n = next(_made)
    # interface names are at most 15 characters: "es" + pid (≤ 7 digits) + "h|n" + counter
    name = f"es-{pid}-{n}"
    host_veth, inner_veth = f"es{pid}h{n}", f"es{pid}n{n}"
    subnet = _free_subnet(pid, n)
    host_ip, inner_ip = (str(h) for h in subnet.hosts())
    made = Namespace(name, host_veth, inner_veth, host_ip, inner_ip)
    try:
        try:
            ip("netns", "add", name)
            ip("link", "add", host_veth, "type", "veth", "peer", "name", inner_veth)
        except RuntimeError as exc:  # no permission (a container without CAP_NET_ADMIN), no veth
            raise NamespaceUnavailable(str(exc)) from exc
        ip("link", "set", inner_veth, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", host_veth)
        ip("link", "set", host_veth, "up")
        inner = ("netns", "exec", name, "ip")
        ip(*inner, "addr", "add", f"{inner_ip}/30", "dev", inner_veth)
        ip(*inner, "link", "set", inner_veth, "up")
        ip(*inner, "link", "set", "lo", "up")
        yield made
    finally:
        # deleting the namespace deletes its end of the pair, and with it the other end
        ip("netns", "del", name, check=False)
        if ip("link", "show", host_veth, check=False).returncode == 0:
            ip("link", "del", host_veth, check=False)
