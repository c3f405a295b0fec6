"""A deterministic simulator around the pure scheduling core, and the benchmarks built on it.

Simulated devices (emulation profiles: slots, service times), links (seeded bandwidth traces),
failures and time; the core is the one the master runs. No sockets, no event loop, no sleeping.
"""

from edgesched.tools.sim.model import Bound, Link, Scenario, SimDevice, SimTask, lower_bound
from edgesched.tools.sim.simulator import SimResult, Simulation, simulate

__all__ = [
    "Bound",
    "Link",
    "Scenario",
    "SimDevice",
    "SimResult",
    "SimTask",
    "Simulation",
    "lower_bound",
    "simulate",
]
