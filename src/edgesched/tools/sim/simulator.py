"""A deterministic discrete-event simulator that drives the pure scheduling core.

The core (``edgesched.core.core.Core``) is the one the master runs; this module plays the
master's shell and the agents around it, in simulated seconds on a heap of events:

- the shell: every command is carried out as ``edgesched.master.master.Master.apply`` does, and
  ``dispatch`` runs after every submission, result and failure report, and on the 0.1 s ticker;
- the agents: a device holds an assignment from the master's decision until the master has its
  result (the core's backpressure: at most ``slots + prefetch`` of them), receives payloads one
  after another over its link (one stream per agent), runs at most ``slots`` tasks at once — a
  payload that arrives while they are busy waits on the board, as the agent's slot gate makes it
  wait — each for a lognormal service time from its emulation profile, and beats every
  ``heartbeat_interval_s`` with the metrics an emulated agent reports;
- the network: a payload leaves over the master's uplink (first come, first served, at its fixed
  rate) and over the device's link (its seeded bandwidth trace); it has arrived when both are done.
- failures (``SimDevice``): a board killed (its link breaks: the core hears ``link_lost`` at
  once), frozen (silent while its link stays up: the core finds out from the missing beats on its
  ticks) or slowed by a factor for a window (a straggler); the work every attempt served is
  counted, so the work wasted on attempts whose result was not taken is known.

Every random draw comes from a generator seeded by the scenario's seed and the draw's purpose. A
task's service time is drawn from (seed, device, task, attempt), so two strategies that put a task
on the same device see the same time: strategies are compared on common random numbers.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from edgesched.agent.emulation import SlotMeter
from edgesched.agent.pacing import BandwidthTrace
from edgesched.core.commands import (
    Assign,
    CancelAttempt,
    Command,
    Expired,
    Finished,
    Persist,
    accepted,
)
from edgesched.core.core import Core
from edgesched.core.state import Device, Metrics, Task, TaskState
from edgesched.core.strategies import make_strategy
from edgesched.kinds import FailureKind
from edgesched.tools.sim.model import (
    Scenario,
    SimDevice,
    SimTask,
    lower_bound,
    sub_seed,
    transfer_end,
)

TICK_S = 0.1  #: the master's ticker period (``edgesched.master.server.TICK_S``)
HORIZON_S = 7 * 24 * 3600.0  #: a run still going by then is a bug in the scenario or the core
MIN_MEASURED_BYTES = 64 * 1024  #: the agent only measures bandwidth on payloads this large

Key = tuple[str, int]  #: (task id, attempt)


@dataclass
class SimResult:
    strategy: str
    makespan_s: float  #: from the first submission to the last final state the master saw
    lower_bound_s: float
    bound_terms: dict[str, float]
    tasks_per_device: dict[str, int]
    mean_latency_s: float  #: submission to result, over done tasks
    done: int
    dead: int
    retries: int  #: attempts the core queued again (lost with a device, deadlines, failures)
    expired: list[str]  #: devices the core declared dead
    events: int
    #: per device: slot-seconds held (assignment to result), of them serving, the last result
    device_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    #: per done task, submission to result (s), in task order
    latencies_s: list[float] = field(default_factory=list)
    #: slot-seconds served by the attempts whose result was taken, and by every other attempt
    #: (cancelled, lost with a board, or whose result came second): the wasted work
    work_s: float = 0.0
    wasted_s: float = 0.0
    assigns: int = 0  #: attempts sent (a task's first, retries and hedges)

    @property
    def ratio_to_lb(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s > 0 else float("inf")


@dataclass
class _Board:
    """A simulated agent: what its link, its slots and its heartbeats are doing."""

    spec: SimDevice
    trace: BandwidthTrace
    meter: SlotMeter
    beat_rng: random.Random
    alive: bool = True
    link_free_at: float = 0.0
    attempts: dict[Key, bool] = field(default_factory=dict)  #: on the board → running yet
    waiting: list[Key] = field(default_factory=list)  #: arrived, waiting for a slot
    running: int = 0
    bandwidth_mbps: float = 0.0  #: the agent's moving average of measured transfers
    sent_at: dict[Key, float] = field(default_factory=dict)
    held_s: float = 0.0
    service_s: float = 0.0
    last_result_s: float = 0.0

    @property
    def one_way_s(self) -> float:
        return self.spec.link.rtt_ms / 2000


class Simulation:
    def __init__(self, scenario: Scenario, strategy: str) -> None:
        self.scenario = scenario
        seed = scenario.seed
        s = scenario.settings
        rng = random.Random(sub_seed(seed, "strategy"))
        self.core = Core(s, make_strategy(strategy, s, rng), random.Random(sub_seed(seed, "core")))
        self.strategy = self.core.strategy.name
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._events = 0
        self._master_free_at = 0.0
        self._tasks = {t.id: t for t in scenario.tasks}
        self._finished: dict[str, Task] = {}
        self._serving: dict[tuple[str, Key], float] = {}  #: (device, attempt) → when it started
        self._served: dict[tuple[str, Key], float] = {}  #: (device, attempt) → seconds served
        self._won: set[tuple[str, Key]] = set()
        self._assigns = 0
        self._expired: list[str] = []
        self.boards = {
            d.id: _Board(
                spec=d,
                trace=d.link.trace(sub_seed(seed, d.id, "link")),
                meter=SlotMeter(d.slot_count, 0.0),
                beat_rng=random.Random(sub_seed(seed, d.id, "beats")),
            )
            for d in scenario.devices
        }

    # ---- the event loop ----------------------------------------------------------------

    def _at(self, t: float, action: Callable[[], None]) -> None:
        self._seq += 1  # ties run in the order they were scheduled: deterministic
        heapq.heappush(self._heap, (t, self._seq, action))

    def run(self) -> SimResult:
        for board in self.boards.values():
            self._at(0.0, partial(self._register, board))
            if board.spec.fails_at is not None:
                self._at(board.spec.fails_at, partial(self._power_off, board))
        for task in self.scenario.tasks:
            self._at(task.at, partial(self._submit, task))
        self._at(TICK_S, lambda: self._tick(1))
        while self._heap and len(self._finished) < len(self._tasks):
            self.now, _, action = heapq.heappop(self._heap)
            if self.now > HORIZON_S:
                raise RuntimeError(f"simulation still running after {HORIZON_S:g} s")
            self._events += 1
            action()
        return self._result()

    def _result(self) -> SimResult:
        bound = lower_bound(self.scenario)
        done = [t for t in self._finished.values() if t.state is TaskState.DONE]
        start = min((t.at for t in self.scenario.tasks), default=0.0)
        end = max((t.finished_at for t in self._finished.values()), default=start)
        per_device = Counter(t.device_id for t in done)
        for key, since in self._serving.items():  # still running on a board when it all ended
            self._served[key] = self._served.get(key, 0.0) + end_of(self.now, since)
        work = sum(v for k, v in self._served.items() if k in self._won)
        return SimResult(
            strategy=self.strategy,
            makespan_s=end - start,
            lower_bound_s=bound.value_s,
            bound_terms=bound.as_dict(),
            tasks_per_device={d.id: per_device.get(d.id, 0) for d in self.scenario.devices},
            mean_latency_s=(
                sum(t.finished_at - t.submitted_at for t in done) / len(done) if done else 0.0
            ),
            done=len(done),
            dead=sum(1 for t in self._finished.values() if t.state is TaskState.DEAD),
            retries=self.core.retries,
            expired=list(self._expired),
            events=self._events,
            device_stats={
                b.spec.id: {
                    "held_s": b.held_s,
                    "service_s": b.service_s,
                    "last_result_s": b.last_result_s,
                }
                for b in self.boards.values()
            },
            latencies_s=[t.finished_at - t.submitted_at for t in done],
            work_s=work,
            wasted_s=sum(self._served.values()) - work,
            assigns=self._assigns,
        )

    # ---- the master's shell ------------------------------------------------------------

    def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Assign):
                self._assigns += 1
                self._send(command)
            elif isinstance(command, CancelAttempt):
                self._cancel(command)
            elif isinstance(command, Finished):
                self._finished[command.task.id] = command.task
            elif isinstance(command, Expired):
                self._expired.append(command.device_id)
            elif isinstance(command, Persist):
                pass  # the journal write; nothing to simulate

    def _pump(self) -> None:
        self._apply(self.core.dispatch(self.now))

    def _submit(self, spec: SimTask) -> None:
        task = Task(spec.id, spec.task_type, spec.size_bytes, submitted_at=self.now)
        self.core.submit(task, self.now)
        self._pump()  # the master dispatches after every submission

    def _tick(self, n: int) -> None:
        self._apply(self.core.tick(self.now))
        self._pump()
        self._at((n + 1) * TICK_S, lambda: self._tick(n + 1))  # k·0.1, no drift from summing

    def _send(self, command: Assign) -> None:
        board = self.boards[command.device_id]
        key = (command.task.id, command.attempt)
        if not board.alive:
            return  # a board without power never reads it; the core finds out by the silence
        board.attempts[key] = False
        board.sent_at[key] = self.now
        nbytes = command.task.size_bytes
        master_start = max(self.now, self._master_free_at)
        self._master_free_at = master_start + nbytes * 8 / (self.scenario.master_mbps * 1e6)
        # control frames overtake payloads, so the assignment is there after one way; the
        # payload then waits for the payloads before it on the same stream
        arrived = self.now + board.one_way_s
        start = max(arrived, board.link_free_at)
        end = max(transfer_end(board.trace, start, nbytes), self._master_free_at + board.one_way_s)
        board.link_free_at = end
        self._at(end, lambda: self._received(board, key, command.task, arrived))

    def _cancel(self, command: CancelAttempt) -> None:
        board = self.boards[command.device_id]
        key = (command.task_id, command.attempt)
        running = board.attempts.pop(key, None)
        board.sent_at.pop(key, None)
        if running is None or not board.alive:
            return
        if running:
            self._stop_serving(board, key, self.now + board.one_way_s)
            board.meter.stop(self.now + board.one_way_s)
            board.running -= 1
            self._next(board)
        # the agent answers a cancel with a failure report; only that frees the slot in the core
        self._at(
            self.now + 2 * board.one_way_s, lambda: self._failed(board, key, FailureKind.CANCELLED)
        )

    # ---- the agents --------------------------------------------------------------------

    def _register(self, board: _Board) -> None:
        spec = board.spec
        native = spec.profile.formats[0]
        device = Device(
            id=spec.id,
            device_type=spec.profile.name,
            slots=spec.slot_count,
            task_types=frozenset(t.task_type for t in self.scenario.tasks),
            formats={t.task_type: native for t in self.scenario.tasks},
            emulated=True,
            info={
                "emulation_profile": spec.profile.name,
                "time_scale": f"{self.scenario.time_scale:g}",
            },
        )
        commands = self.core.register(device, [], [], self.now)
        self._apply(commands)
        self._pump()
        self._beat(board)  # the agent beats once as soon as it is in, then every interval

    def _received(self, board: _Board, key: Key, task: Task, arrived: float) -> None:
        if not board.alive or key not in board.attempts:
            return  # cancelled on the way, or the board is gone
        if task.size_bytes >= MIN_MEASURED_BYTES and self.now > arrived:
            # as the agent measures: bytes over the time since the assignment came in
            mbps = task.size_bytes * 8 / (self.now - arrived) / 1e6
            board.bandwidth_mbps = (
                mbps if not board.bandwidth_mbps else 0.8 * board.bandwidth_mbps + 0.2 * mbps
            )
        self._at(self.now + board.one_way_s, lambda: self._started(board, key))
        board.waiting.append(key)
        self._next(board)

    def _next(self, board: _Board) -> None:
        """Starts waiting payloads while the board has a free slot (the agent's slot gate)."""
        while board.waiting and board.running < board.spec.slot_count:
            key = board.waiting.pop(0)
            if key not in board.attempts:
                continue  # cancelled while it waited
            board.running += 1
            board.attempts[key] = True
            board.meter.start(self.now)
            spec = self._tasks[key[0]]
            draw = random.Random(sub_seed(self.scenario.seed, board.spec.id, key[0], str(key[1])))
            service_ms = board.spec.profile.sample_ms(draw) * spec.work * self.scenario.time_scale
            service_ms *= board.spec.slow_at(self.now)
            self._serving[(board.spec.id, key)] = self.now
            self._at(self.now + service_ms / 1000, partial(self._ran, board, key, service_ms))

    def _started(self, board: _Board, key: Key) -> None:
        self._apply(self.core.started(key[0], key[1], self.now, board.spec.id))

    def _ran(self, board: _Board, key: Key, service_ms: float) -> None:
        if not board.alive or board.attempts.pop(key, None) is None:
            return
        self._stop_serving(board, key, self.now)
        board.meter.stop(self.now)
        board.running -= 1
        self._next(board)
        self._at(self.now + board.one_way_s, lambda: self._result_in(board, key, service_ms))

    def _stop_serving(self, board: _Board, key: Key, at: float) -> None:
        since = self._serving.pop((board.spec.id, key), None)
        if since is not None:
            served = self._served.get((board.spec.id, key), 0.0)
            self._served[(board.spec.id, key)] = served + end_of(at, since)

    def _result_in(self, board: _Board, key: Key, service_ms: float) -> None:
        board.held_s += self.now - board.sent_at.pop(key, self.now)
        board.service_s += service_ms / 1000
        board.last_result_s = self.now
        commands = self.core.done(key[0], key[1], board.spec.id, service_ms, self.now)
        if accepted(commands, key[0]):
            self._won.add((board.spec.id, key))
        self._apply(commands)
        self._pump()

    def _failed(self, board: _Board, key: Key, kind: str) -> None:
        message = f"simulated {kind}"
        self._apply(self.core.failed(key[0], key[1], board.spec.id, kind, message, self.now))
        self._pump()

    def _beat(self, board: _Board) -> None:
        if not board.alive:
            return
        xpu = board.meter.utilisation(self.now)
        profile = board.spec.profile
        metrics = Metrics(
            cpu=0.05 + 0.25 * xpu,  # pre- and post-processing run on the host CPU
            memory=0.3,
            xpu=xpu,
            power_w=profile.power_w(xpu),
            bandwidth_mbps=board.bandwidth_mbps,
            latency_ms=board.spec.link.rtt_ms,  # heartbeats overtake payloads: the bare round trip
            probe=f"emulated:{profile.name}",
        )
        self._at(self.now + board.one_way_s, lambda: self._heard(board, metrics))
        interval = self.scenario.settings.heartbeat_interval_s
        self._at(self.now + interval * board.beat_rng.uniform(0.95, 1.0), lambda: self._beat(board))

    def _heard(self, board: _Board, metrics: Metrics) -> None:
        self._apply(self.core.heartbeat(board.spec.id, metrics, self.now))

    def _power_off(self, board: _Board) -> None:
        board.alive = False
        for key, running in board.attempts.items():
            if running:
                self._stop_serving(board, key, self.now)
                board.meter.stop(self.now)
        board.sent_at.clear()
        board.waiting.clear()
        board.running = 0
        board.attempts.clear()  # lost with the board; the core re-queues them once it is dead
        if board.spec.link_lost:
            # a killed agent: the master sees its link break at once (as ``Master`` feeds the
            # core on a closed stream), so the device is suspect now, not after missed beats
            self._apply(self.core.link_lost(board.spec.id, self.now))
            self._pump()


def end_of(at: float, since: float) -> float:
    return max(0.0, at - since)


def simulate(scenario: Scenario, strategy: str) -> SimResult:
    return Simulation(scenario, strategy).run()
