"""The agents a master knows: who may join, with which credential, how many slots they get, and
the live session of each connected one."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edgesched.clock import Clock
from edgesched.config import MasterSettings
from edgesched.core.state import bound_slots
from edgesched.journal.base import Journal
from edgesched.master.session import AgentSession
from edgesched.master.token import tokens_equal

log = logging.getLogger("edgesched.link")

JOIN_WINDOW_S = 60.0


@dataclass(frozen=True)
class Refusal:
    """Why an agent may not join (``code`` as the wire's ``Refused`` names it)."""

    code: str
    message: str


def digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class AgentRegistry:
    """Owns the agents' credentials (their digests, journaled), the rate of new joins and the
    live session of each connected agent. It decides who may join and with how many slots.
    It is owned by ``Master`` and may not touch the scheduling core or the wire: the master tells
    the core, the link servicer decodes and encodes."""

    def __init__(
        self,
        settings: MasterSettings,
        journal: Journal,
        clock: Clock,
        join_token: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.clock = clock
        self._join_token = join_token
        self.credentials: dict[str, str] = {}  #: agent id → sha256 of its credential
        self.sessions: dict[str, AgentSession] = {}
        self._joins: deque[float] = deque()  #: when new agent ids joined, the last minute

    async def authenticate(
        self, agent_id: str, credential: str, join_token: str, device_type: str
    ) -> tuple[str, str] | Refusal:
        """A known agent proves itself with its credential; anyone else needs the join token.

        Returns (agent id, credential to hand back) or the refusal. A new agent's credential is
        journaled before it is handed out (a JournalError when the disk is full).
        """
        known = self.credentials.get(agent_id) if agent_id else None
        if known is not None:
            if credential and tokens_equal(digest(credential), known):
                return agent_id, credential
            return Refusal(
                "duplicate_id",
                f"agent id {agent_id} belongs to another agent: its credential "
                "does not match (remove the agent's agent.json to join as a new agent)",
            )
        if not join_token or not tokens_equal(join_token, self._join_token()):
            return Refusal("unauthenticated", "missing or wrong join token (--token)")
        limited = self.join_limit()
        if limited:
            return Refusal("limit", limited)
        agent_id = agent_id or f"{device_type or 'cpu'}-{uuid.uuid4().hex[:8]}"
        credential = "esc_" + secrets.token_urlsafe(24)
        await self.journal.add_agent(agent_id, digest(credential), device_type)
        self.credentials[agent_id] = digest(credential)
        return agent_id, credential

    def join_limit(self) -> str:
        """Why one more agent id may not join with the join token now ("" = it may).

        The token mints credentials: whoever holds it could register device ids without end,
        each kept in the registry, the API, the metrics and the journal.
        """
        m = self.settings
        if len(self.credentials) >= m.max_agents:
            return (
                f"{len(self.credentials)} agents are known, the most allowed "
                "(master.max_agents); dead ones are forgotten after master.forget_dead_after_s"
            )
        now = self.clock.monotonic()
        while self._joins and now - self._joins[0] >= JOIN_WINDOW_S:
            self._joins.popleft()
        if len(self._joins) >= m.max_joins_per_minute:
            return (
                f"{len(self._joins)} new agents joined in the last minute, the most allowed "
                "(master.max_joins_per_minute); try again later"
            )
        self._joins.append(now)
        return ""

    def slots(self, agent_id: str, claimed: int, device_type: str, cpu_count: int) -> int:
        """The slots it claims, bounded by what its board's type can have (logged if cut)."""
        m = self.settings
        slots = bound_slots(
            claimed,
            device_type,
            cpu_count=cpu_count,
            cpu_slots_per_core=m.cpu_slots_per_core,
            max_slots=m.max_slots_per_device,
        )
        if slots != claimed:
            log.warning(
                "agent %s claims %d slots; a %s board (%d cores reported) gets %d "
                "(master.max_slots_per_device, master.cpu_slots_per_core)",
                agent_id,
                claimed,
                device_type,
                cpu_count,
                slots,
            )
        return slots

    def attach(self, session: AgentSession) -> None:
        """The agent's new session replaces any older one (which is closed)."""
        old = self.sessions.pop(session.device_id, None)
        if old is not None:
            old.close("replaced by a new session")
        self.sessions[session.device_id] = session

    def detach(self, session: AgentSession) -> bool:
        """The session ended. True when it was the agent's current one (not replaced)."""
        if self.sessions.get(session.device_id) is not session:
            return False
        del self.sessions[session.device_id]
        return True

    def forget(self, agent_ids: list[str]) -> None:
        for agent_id in agent_ids:
            self.credentials.pop(agent_id, None)
