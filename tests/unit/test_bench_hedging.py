"""The benchmarks' hedging switch: it is set only where the build has it, and a task's hedges
and wasted work read as 0 where the build reports none."""

from __future__ import annotations

from edgesched.config import SchedulingSettings, load_settings
from edgesched.tools.bench import hedging
from edgesched.wire import tasks


def test_the_master_env_is_one_the_settings_accept() -> None:
    for on in (True, False):
        env = hedging.master_env(on)
        settings = load_settings(None, env=env).scheduling  # an unknown key would raise
        if hedging.supported():
            assert getattr(settings, "hedging") is on  # noqa: B009
            assert env == {hedging.ENV: "true" if on else "false"}
        else:
            assert env == {}


def test_settings_with_copies_and_sets_the_switch_where_there_is_one() -> None:
    base = SchedulingSettings(dead_grace_s=5.0)
    copy = hedging.settings_with(base, False)
    assert copy is not base and copy.dead_grace_s == 5.0
    assert getattr(copy, "hedging", False) is False
    assert hedging.in_force(copy)["hedging_supported"] is hedging.supported()


def test_choices_put_off_first() -> None:
    assert hedging.choices("both") == [False, True]
    assert hedging.choices("on") == [True]
    assert hedging.choices("off") == [False]


def test_counts_of_an_api_row_and_of_a_result() -> None:
    row = {"hedges": 2, "timings": {"wasted_ms": 12.5}}
    assert hedging.task_counts(row) == (2, 12.5)
    assert hedging.reported(row)
    # the master writes them into the row's timings (a hedged task's)
    assert hedging.task_counts({"timings": {"hedges": 1, "wasted_ms": 3.0}}) == (1, 3.0)
    assert hedging.task_counts({"timings": {}}) == (0, 0.0)
    # a task never hedged carries no figure: with a build that hedges, that reads as none
    assert hedging.reported({"timings": {}}) is hedging.supported()
    result = tasks.TaskResult(task_id="t1")
    hedges, wasted = hedging.task_counts(result)
    assert hedges >= 0 and wasted >= 0.0
    if not hedging.reported(result):
        assert (hedges, wasted) == (0, 0.0)
