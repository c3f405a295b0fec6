"""The address of a gRPC peer, as the servicers record and log it."""

from __future__ import annotations


def peer_host(peer: str) -> str:
    """``ipv4:1.2.3.4:5`` → ``1.2.3.4``; ``ipv6:[::1]:5`` → ``::1``; else ``unknown``."""
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rsplit(":", 1)[0].strip("[]")
    return "unknown"
