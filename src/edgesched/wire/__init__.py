"""The one place protobuf meets the domain types (issue 15).

``edgesched.v1`` (the generated code) is imported here and by the modules that own a gRPC
servicer, stub or channel (tests/unit/test_wire_imports.py keeps the list); everything else
builds and reads messages through these functions and speaks ``Detection``, ``TaskState``,
``FailureKind`` and plain values. The message classes are re-exported as opaque type names for
annotations only. Runs on the boards: Python 3.9, base install only.

- ``results``: detections and board timings ⇄ protobuf
- ``tasks``: task states, submissions and task results ⇄ protobuf (the client API)
- ``link``: the agent link's messages (register, heartbeat, started, done, failed, goodbye,
  drain) and their framing, shared by the agent and the simulated fleet of ``bench scale``
"""
