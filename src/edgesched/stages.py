"""A task's stages, as the master times them (``StageTimings`` in the wire contract).

queued → assigned (queue wait) → payload on the board (transfer) → inference → result back at the
master (result return) → delivered to the client (delivery); and the whole (end to end).
"""

from __future__ import annotations

STAGES = ("queue_wait", "transfer", "inference", "result_return", "delivery", "end_to_end")
#: the same stages as the fields of ``StageTimings`` and the keys of a task's timings
STAGE_FIELDS = tuple(f"{stage}_ms" for stage in STAGES)
