"""``edgesched bench scale``: a thousand light agents heartbeating against one real master.

One master runs as its own process (:class:`~edgesched.tools.testing.process_cluster.LocalCluster`).
A few worker processes each simulate a share of the agents; every simulated agent holds its own gRPC
channel and one ``AgentLink.Connect`` stream and speaks the real protocol: it asks the gateway for
the link port, registers with the join token, keeps the credential it is given (one agent per worker
drops its link and rejoins with that credential, as a real agent does after a broken link), then
sends a Heartbeat with plausible, jittered board metrics every interval the master announced.

Measured over a steady window after every agent joined:

- the master's CPU (user + system of its process, percent of one core) and RSS;
- heartbeat handling on the master (``edgesched_heartbeat_handling_seconds`` from /metrics);
- heartbeat bytes per agent per second, from the serialised protobuf messages each way and, where
  ``ss`` can tell, from the master's TCP sockets (HTTP/2 + gRPC framing and keepalive included);
- separately, in this process, a scheduling decision's latency in the pure core with 1,000
  registered devices, for each strategy.

Then, unless ``--task-seconds 0``, a phase with tasks (:mod:`.flow`): a client submits ``echo``
tasks while the fleet keeps heartbeating, the simulated agents answer each assignment at once
(:mod:`.answers`): tasks/s sustained, heartbeat handling p99 and the master's CPU over it.

The agent workers share the machine with the master: only the master's process is measured.
"""
