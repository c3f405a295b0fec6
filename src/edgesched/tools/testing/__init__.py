"""The one cluster harness of tests, demo, benchmarks and the chaos run.

- ``process_cluster``: :class:`LocalCluster`, a master and agents as ``edgesched`` processes on
  loopback (demo, benchmarks, chaos, end-to-end tests);
- ``lifecycle``: what makes sure those processes are stopped however a run is left (SIGTERM
  included), a working directory, and a cluster started with its agents joined;
- ``inprocess_cluster``: :class:`InProcessCluster`, a real master and agents on one event loop
  (integration tests);
- ``pictures``: small PNGs to submit.

This package imports nothing itself, so a user of one harness does not load the other's stack.
"""
