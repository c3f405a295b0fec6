"""``edgesched bench memory``: does anything leak? Real processes on loopback, sampled by pid.

Three parts, each on its own cluster of real processes:

- ``agent``: one agent with the real ``onnx`` backend runs ``--inferences`` real inferences on
  synthetic document pages; its RSS is sampled after ``--baseline-at`` (100) tasks, at every
  checkpoint and at the end. Gate: it grew by at most 5 MB (10^6 bytes) from the baseline.
- ``master``: ``--master-tasks`` (100,000) tasks through the master with fast no-op agents; its
  RSS is sampled at ``--master-sample-at`` (20,000), every ``--master-sample-every`` and at
  the end. Gate: the end is within ±10 % of the sample at 20,000.
- ``idle``: an agent with the onnx backend that has joined and does nothing: CPU (percent of
  one core) and RSS over ``--idle-s`` (30 s); the master's beside it. Measured on the agent of
  the ``agent`` part before its first task when both parts run.
"""
