"""Task and device state, and the legal transitions between task states."""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from edgesched.boards import SLOT_CAPS
from edgesched.config import NATIVE_FORMATS

# defined with the failure kinds, where the boards read them too
from edgesched.kinds import FINAL_STATES as FINAL_STATES
from edgesched.kinds import TaskState as TaskState

#: (from, to) pairs the core may take. DEAD → QUEUED is an operator's retry.
LEGAL_TRANSITIONS: frozenset[tuple[TaskState, TaskState]] = frozenset(
    {
        (TaskState.QUEUED, TaskState.ASSIGNED),
        (TaskState.QUEUED, TaskState.DEAD),
        (TaskState.QUEUED, TaskState.CANCELLED),
        (TaskState.ASSIGNED, TaskState.RUNNING),
        (TaskState.ASSIGNED, TaskState.QUEUED),
        (TaskState.ASSIGNED, TaskState.DONE),
        (TaskState.ASSIGNED, TaskState.DEAD),
        (TaskState.ASSIGNED, TaskState.CANCELLED),
        (TaskState.RUNNING, TaskState.QUEUED),
        (TaskState.RUNNING, TaskState.DONE),
        (TaskState.RUNNING, TaskState.DEAD),
        (TaskState.RUNNING, TaskState.CANCELLED),
        (TaskState.DEAD, TaskState.QUEUED),
    }
)


class IllegalTransition(RuntimeError):
    """A bug: the core tried a transition that is not in LEGAL_TRANSITIONS."""


class DeviceState(str, enum.Enum):
    ONLINE = "online"
    SUSPECT = "suspect"  #: missed beats or a broken link; takes no new tasks
    DEAD = "dead"  #: past the grace; its tasks were queued again
    LEFT = "left"  #: said goodbye


@dataclass
class AttemptError:
    attempt: int
    device_id: str
    kind: str
    message: str
    at: float
    counted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "device_id": self.device_id,
            "kind": self.kind,
            "message": self.message,
            "at": self.at,
            "counted": self.counted,
        }


@dataclass
class Task:
    """What the core knows of a task. The journal holds the rest (payload, result)."""

    id: str
    task_type: str
    size_bytes: int
    submitted_at: float
    client_id: str = ""
    strategy: str = ""  #: a per-task strategy name; "" = the master's
    deadline_s: float = 0.0  #: per-attempt deadline; 0 = the configured default
    state: TaskState = TaskState.QUEUED
    attempt: int = 0  #: dispatch epoch: increases with every assignment
    #: the attempt number the journal holds (see ``commands.needs_persist``)
    persisted_attempt: int = 0
    #: a task restored queued: the attempt number a device may still run unknown to the journal
    #: (the one after the journaled attempt; ``Devices._adopt``); 0 = none
    restored_attempt: int = 0
    failures: int = 0  #: failures of the task itself, counted against max_attempts
    device_id: str = ""  #: device of the newest attempt
    live: dict[int, str] = field(default_factory=dict)  #: attempt → device, still outstanding
    not_before: float = 0.0  #: retry backoff: not dispatched before this time
    #: a device whose attempt of this task timed out (deadline, stall): the next attempt goes
    #: elsewhere when another able device exists ("" = none)
    avoid: str = ""
    waiting_since: float = 0.0  #: since when no online device can run it (0: one can)
    queued_at: float = 0.0
    assigned_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    errors: list[AttemptError] = field(default_factory=list)
    error: str = ""  #: the final reason when dead or cancelled
    hedges: int = 0  #: hedged attempts started (a second attempt while one was live)
    hedge_attempts: tuple[int, ...] = ()  #: their attempt numbers
    #: the straggler hedges among them: what ``hedge_budget`` bounds (a suspect device's
    #: hedges are bounded by its own attempts: they would run again after the grace anyway)
    budgeted_attempts: tuple[int, ...] = ()
    #: when each attempt of a hedged task was sent (None until the first hedge: no cost for
    #: the tasks that never get one); the losing attempts' running time is the wasted work
    attempt_at: dict[int, float] | None = None
    hedge_won: bool = False  #: the accepted result came from a hedge
    wasted_ms: float = 0.0  #: running time of the attempts the winner ended (master's view)

    def move(self, to: TaskState) -> None:
        if (self.state, to) not in LEGAL_TRANSITIONS:
            raise IllegalTransition(f"task {self.id}: {self.state.value} → {to.value}")
        self.state = to


@dataclass
class Metrics:
    cpu: float = 0.0
    memory: float = 0.0
    xpu: float = -1.0  #: negative: the device has no XPU figure
    xpu_memory: float = -1.0
    temperature_c: float = math.nan
    power_w: float = math.nan
    bandwidth_mbps: float = 0.0  #: 0: not measured yet
    latency_ms: float = 0.0
    probe: str = ""


def bound_slots(
    claimed: int, device_type: str, *, cpu_count: int, cpu_slots_per_core: int, max_slots: int
) -> int:
    """The slots a registration may have: its claim, bounded by what its board's type can run
    (a CPU: ``cpu_slots_per_core`` per reported core), and by ``max_slots`` in any case."""
    cap = max(1, max_slots)
    if device_type in SLOT_CAPS:
        cap = min(cap, SLOT_CAPS[device_type])
    elif cpu_count > 0:
        cap = min(cap, cpu_count * max(1, cpu_slots_per_core))
    return max(1, min(claimed, cap))


def clean_fraction(value: float, *, unknown: float = 0.0) -> float:
    """Clamps a reported utilisation into [0, 1]; NaN and infinities become ``unknown``."""
    if not math.isfinite(value):
        return unknown
    return min(1.0, max(0.0, value))


@dataclass
class Device:
    id: str
    device_type: str
    slots: int
    task_types: frozenset[str]
    #: task type → the best model format the device holds for it (rknn/om/engine beat onnx)
    formats: dict[str, str] = field(default_factory=dict)
    emulated: bool = False
    hostname: str = ""
    address: str = ""  #: the agent's address as the master saw it
    state: DeviceState = DeviceState.ONLINE
    #: an operator's drain: kept when the agent rejoins (it is the operator's to lift)
    operator_drained: bool = False
    #: the agent says it drains (SIGTERM, or an operator's drain it was told of): a new
    #: registration starts without it, so a restarted agent takes tasks again
    self_draining: bool = False
    #: held assignments without reporting a start for longer than scheduling.stall_after_s
    #: while it kept beating: takes nothing new until it reports progress or rejoins
    stalled: bool = False
    #: the last report; replaced (never changed in place) by each heartbeat: strategies cache
    #: what they derive from it per report
    metrics: Metrics = field(default_factory=Metrics)
    last_seen: float = 0.0
    joined_at: float = 0.0
    session: int = 0
    link_up: bool = True
    #: (task id, attempt) the master sent and has not heard the end of
    inflight: set[tuple[str, int]] = field(default_factory=set)
    sent_since_heartbeat: int = 0  #: optimistic accounting between heartbeats
    reserved: int = 0  #: tasks that chose to wait for this device in the current dispatch
    prefetch: int = 0  #: assignments it may hold beyond its slots (queued on the board)
    tasks_done: int = 0
    service_ms_total: float = 0.0
    heartbeats: int = 0
    suspect_since: float = 0.0
    gone_since: float = 0.0  #: when it was declared dead or left (forgotten some time after)
    #: (task id, attempt) sent and not yet reported started (or ended)
    unstarted: set[tuple[str, int]] = field(default_factory=set)
    #: its last report of progress (a start or an end of an attempt), or when it was given work
    #: while it had nothing unstarted: the stall watch counts from here
    progress_at: float = 0.0
    info: dict[str, str] = field(default_factory=dict)

    @property
    def draining(self) -> bool:
        return self.operator_drained or self.self_draining

    @property
    def shown_state(self) -> str:
        """The state an operator sees: an online device that is stalled or drains says so."""
        if self.state is DeviceState.ONLINE:
            if self.stalled:
                return "stalled"
            if self.draining:
                return "draining"
        return self.state.value

    @property
    def free_slots(self) -> int:
        """Slots not running a task (what the dashboard and the load score show)."""
        return max(0, self.slots - len(self.inflight))

    @property
    def openings(self) -> int:
        """Assignments it can still take: free slots, then room in its prefetch queue."""
        return max(0, self.slots + self.prefetch - len(self.inflight))

    @functools.cached_property
    def time_scale(self) -> float:
        """An emulated board's time scale (from its info, read once), 1 for a real one."""
        try:
            return float(self.info.get("time_scale") or 1.0)
        except ValueError:
            return 1.0

    @property
    def mean_service_ms(self) -> float:
        return self.service_ms_total / self.tasks_done if self.tasks_done else 0.0

    def tier(self, task_type: str) -> int:
        """0 for a native compiled artefact, 1 for ONNX (the universal fallback)."""
        return 0 if self.formats.get(task_type, "onnx") in NATIVE_FORMATS else 1

    @property
    def schedulable(self) -> bool:
        return (
            self.state is DeviceState.ONLINE
            and self.link_up
            and not self.draining
            and not self.stalled
        )
