"""The boards edgesched knows, in one place: their type names, the seed's aliases, their slots
and the published per-task times that estimates and emulation start from.

Pure data (no I/O, no extras, Python 3.9): the agent, the core and the tools all read it. A new
device type is named here first (docs/devices.md: adding a board).
"""

from __future__ import annotations

#: device type names, as agents report them (strings on the wire: plain constants)
AUTO = "auto"  #: --device-type only: what the probes detect
CPU = "cpu"
ATLAS310 = "atlas310"
RK3588 = "rk3588"
ORIN = "orin"
NVIDIA = "nvidia"

#: what --device-type accepts
DEVICE_TYPES = (AUTO, CPU, ATLAS310, RK3588, ORIN, NVIDIA)
#: the board families with published figures, which an agent can emulate
BOARD_FAMILIES = (ATLAS310, RK3588, ORIN)
#: the seed's device-type names
ALIASES = {"ATLAS_I": ATLAS310, "RK3588": RK3588, "ORIN": ORIN}
#: what --device-type auto becomes when that probe detects its board
PROBE_DEVICE = {"ascend": ATLAS310, "rknpu": RK3588, "jetson": ORIN, "nvidia": NVIDIA}

#: slots follow the hardware: an RK3588 runs one task per NPU core
HARDWARE_SLOTS = {RK3588: 3, ATLAS310: 1, ORIN: 1, NVIDIA: 1, CPU: 1}
#: the most slots a board of a known accelerator type can use: its NPU cores / chips / GPU, with
#: room for two tasks in flight per unit (an RK3588 has 3 NPU cores; an Atlas 310 card up to 4
#: chips; a Jetson one GPU, run by a few streams). Other types are bounded like a CPU.
SLOT_CAPS = {RK3588: 6, ATLAS310: 8, ORIN: 8, NVIDIA: 8}

#: published per-task service times (ms, one slot, batch 1, end to end in a Python worker;
#: shared reference devices.md §7): the median, used by estimates until measured, and the 95th
#: percentile, which with the median shapes the emulation's lognormal
MEDIAN_MS = {ATLAS310: 25.0, RK3588: 40.0, ORIN: 5.0}
P95_MS = {ATLAS310: 50.0, RK3588: 60.0, ORIN: 8.0}
