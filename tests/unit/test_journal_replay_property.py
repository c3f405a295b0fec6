"""Replaying any prefix of the journal yields the state the live core had at that point.

The journal is what the core's Persist commands wrote (as the master's shell writes them); after
every random step the recorded rows must match the live tasks exactly — except a task whose one
live attempt is the single one after its journaled attempt (``needs_persist``: the journal hears
of it with the task's end), whose row must still say queued one attempt earlier — and a fresh
core restored from them (as a restarted master restores) must hold the same unfinished tasks,
those out on a device queued again with their attempt numbered past the live one's.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from edgesched.core.commands import Command, Persist
from edgesched.core.core import Core
from edgesched.core.state import Task, TaskState
from edgesched.core.strategies import make_strategy
from tests.unit.test_scheduler_properties import CoreMachine, Harness

Row = tuple[str, int, int, str]  # state, attempt, failures, device of the newest attempt


class JournalHarness(Harness):
    def __init__(self, strategy: str, seed: int, pump: bool = False) -> None:
        super().__init__(strategy, seed, pump)
        self.journal: dict[str, Row] = {}

    def record(self, task: Task) -> None:
        self.journal[task.id] = (task.state.value, task.attempt, task.failures, task.device_id)

    def submit(self, task_type: str) -> None:
        super().submit(task_type)
        self.record(self.all_tasks[f"t{self.next_id - 1}"])  # journaled before the ack

    def apply(self, commands: list[Command]) -> None:
        super().apply(commands)
        for command in commands:
            if isinstance(command, Persist):
                self.record(command.task)

    def check(self) -> None:
        super().check()
        live = {
            t.id: (t.state.value, t.attempt, t.failures, t.device_id)
            for t in self.all_tasks.values()
        }
        unjournaled = {
            t.id
            for t in self.all_tasks.values()
            if t.state in (TaskState.ASSIGNED, TaskState.RUNNING)
            and len(t.live) == 1
            and t.attempt == t.persisted_attempt + 1
        }
        for task_id in unjournaled:
            state, attempt, failures, _ = self.journal[task_id]
            assert (state, attempt, failures) == (
                TaskState.QUEUED.value,
                live[task_id][1] - 1,
                live[task_id][2],
            )
        assert {i: r for i, r in self.journal.items() if i not in unjournaled} == {
            i: r for i, r in live.items() if i not in unjournaled
        }
        restored = Core(
            self.settings,
            make_strategy("roundrobin", self.settings, random.Random(0)),
            random.Random(0),
        )
        for task_id, (state, attempt, failures, device_id) in self.journal.items():
            if TaskState(state).final:
                continue
            task = Task(
                id=task_id,
                task_type=self.all_tasks[task_id].task_type,
                size_bytes=1000,
                submitted_at=self.now,
                state=TaskState(state),
                attempt=attempt,
                failures=failures,
                device_id=device_id,
            )
            restored.restore(task, self.now)
        expected = {
            i: (TaskState.QUEUED if i in unjournaled else t.state, t.attempt, t.failures)
            for i, t in self.core.tasks.items()
        }
        # a task restored queued numbers its attempts one past the journaled one
        queued_again = {i for i, (state, *_) in self.journal.items() if state == "queued"}
        assert {
            i: (t.state, t.attempt - (i in queued_again and i not in unjournaled), t.failures)
            for i, t in restored.tasks.items()
        } == expected


class JournalMachine(CoreMachine):
    harness = JournalHarness


def test_every_prefix_of_the_journal_replays_to_the_live_state() -> None:
    run_state_machine_as_test(
        JournalMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
