"""The grade of a chaos run from the ledger (and, for dead tasks only, the master's API), and
the notes that name what the counts alone would hide."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from edgesched.core.state import TaskState
from edgesched.tools.chaos.ledger import Ledger, Reception, result_file
from edgesched.tools.chaos.notes import note
from edgesched.tools.chaos.plan import Picture


def dead_pictures(http_url: str) -> set[str]:
    """Client file names of the dead tasks: the seed protocol pushes nothing for them."""
    import httpx

    names: set[str] = set()
    offset = 0
    while True:
        response = httpx.get(
            f"{http_url}/api/v1/tasks",
            params={"state": TaskState.DEAD.value, "limit": 1000, "offset": offset},
            timeout=10,
        )
        response.raise_for_status()
        tasks = response.json()["tasks"]
        names.update(t["filename"] for t in tasks)
        if len(tasks) < 1000:
            return names
        offset += len(tasks)


@dataclass
class Verdict:
    accepted: int
    done: int
    dead: int
    lost: int
    duplicates_delivered: int


def grade(acked: dict[str, str], received: list[str], dead: set[str]) -> Verdict:
    counts = Counter(received)
    done = {p for p, f in acked.items() if result_file(f) in counts}
    died = {p for p in acked if p in dead}
    return Verdict(
        accepted=len(acked),
        done=len(done),
        dead=len(died),
        lost=len(set(acked) - done - died),
        duplicates_delivered=sum(n - 1 for n in counts.values()),
    )


def unaccounted(ledger: Ledger, http_url: str) -> int | None:
    """Acknowledged tasks with neither a received result nor a dead state (yet); None when the
    master cannot say right now."""
    import httpx

    acked, received = ledger.snapshot()
    waiting = {result_file(f) for f in acked.values()} - set(received)
    if not waiting:
        return 0
    try:
        dead = dead_pictures(http_url)
    except httpx.HTTPError as exc:
        note(f"cannot list dead tasks yet: {exc}")
        return None
    return sum(1 for p, f in acked.items() if result_file(f) in waiting and p not in dead)


# ---- the run ----------------------------------------------------------------------------


REPEAT_KINDS = {
    "unanswered": "the master was SIGKILLed while the receiver was answering its push (the 200 "
    "never reached it), so it pushed again after its restart",
    "after_kill": "the master was SIGKILLed after the receiver's 200 but before its journal had "
    "committed what that push settled (the delivery mark, or even the task's done state), so "
    "after its restart it pushed again (or ran the task again and pushed that)",
    "no_kill": "pushed again with no master kill in between",
}


def repeat_kind(previous: Reception, repeat: Reception, master_kills: list[float]) -> str:
    if not previous.answered:
        return "unanswered"
    if any(previous.at < k < repeat.at for k in master_kills):
        return "after_kill"
    return "no_kill"


def explain_repeats(receptions: list[Reception], master_kills: list[float]) -> None:
    last: dict[str, Reception] = {}
    kinds: Counter[str] = Counter()
    for reception in receptions:
        if reception.name in last:
            kind = repeat_kind(last[reception.name], reception, master_kills)
            kinds[kind] += 1
            note(f"{reception.name} delivered again: {kind}")
        last[reception.name] = reception
    for kind, count in sorted(kinds.items()):
        note(f"{count} duplicate(s): {REPEAT_KINDS[kind]}")


def explain(
    ledger: Ledger, pictures: list[Picture], dead: set[str], master_kills: list[float]
) -> None:
    """Names what the counts alone would hide: which uploads, deaths and deliveries were odd."""
    for name, reason in sorted(ledger.refused.items()):
        note(f"never acknowledged: {name}: {reason}")
    note(f"{ledger.resends} uploads sent again after an error")
    bad = {p.name for p in pictures if p.bad}
    for name in sorted(dead - bad):
        note(f"a good picture ended dead: {name}")
    acked, received = ledger.snapshot()
    for name in sorted(p for p in dead if result_file(acked.get(p, "")) in set(received)):
        note(f"dead, yet its result was delivered: {name}")
    explain_repeats(list(ledger.received), master_kills)
