"""What a chaos run will do, all from its seed: the pictures (some cut short so they fail) and
the schedule of SIGKILLs."""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgesched.boards import ATLAS310, ORIN, RK3588

PROFILES = (RK3588, ORIN, ATLAS310)
BAD_CUT_BYTES = 60  #: past the PNG header (the master's sniff passes), inside the pixel data
KILL_WINDOW = (0.05, 0.85)  #: kills fire between these fractions of the run's progress


# ---- pictures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    name: str  #: the client's file name, unique in this run (the task's `filename` in the API)
    req_id: str  #: Gen-B request id: a resend after a master crash is the same task
    data: bytes
    bad: bool


def _png(index: int) -> bytes:
    import io

    from PIL import Image

    # every picture a different colour, so no two payloads are alike
    colour = (index & 255, (index >> 8) & 255, (index * 53) & 255)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "PNG")
    return out.getvalue()


def make_pictures(tasks: int, bad: int, rng: random.Random, nonce: str) -> list[Picture]:
    """``tasks`` small PNGs; ``bad`` of them (at seeded places) cut short so decoding fails."""
    bad_indices = set(rng.sample(range(tasks), bad))
    pictures = []
    for i in range(tasks):
        data = _png(i)
        if i in bad_indices:
            data = data[:BAD_CUT_BYTES]
        name = f"chaos-{nonce}-{i:05d}.png"
        pictures.append(Picture(name, f"{nonce}-{i}", data, i in bad_indices))
    return pictures


# ---- the ledger: what the client was told, what the receiver was handed ------------------


# ---- kills ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    at: float  #: fraction of the run's progress at which it fires
    target: str  #: "master" or an agent's name
    pause: float  #: seconds down before the restart


def kill_schedule(
    rng: random.Random,
    master_kills: int,
    agent_kills: int,
    agents: list[str],
    pg_restarts: int = 0,
) -> list[Kill]:
    """Seeded kills spread over the run: one in each of equal slices of the kill window (so they
    do not bunch up), the order of master, agent and PostgreSQL kills shuffled. Agents stay down
    for up to 5 s: some come back within the master's dead grace (3 s, reconciled), some after
    it (their tasks were queued again). "master" is the leader when there are several;
    "postgres" is the database they share, down for 1–3 s."""
    targets = ["master"] * master_kills + [rng.choice(agents) for _ in range(agent_kills)]
    targets += ["postgres"] * pg_restarts
    rng.shuffle(targets)
    low, high = KILL_WINDOW
    width = (high - low) / max(1, len(targets))
    return [
        Kill(
            low + width * (i + rng.random()),
            target,
            rng.uniform(0.3, 2.0)
            if target == "master"
            else rng.uniform(1.0, 3.0)
            if target == "postgres"
            else rng.uniform(0.5, 5.0),
        )
        for i, target in enumerate(targets)
    ]


def agent_args(index: int, seed: int, time_scale: float) -> list[str]:
    return [
        "--backend",
        "sleep",
        "--emulate",
        PROFILES[index % len(PROFILES)],
        "--time-scale",
        str(time_scale),
        "--seed",
        str(seed * 100 + index + 1),
    ]
