"""What runs around the system rather than in it: the demo, the benchmarks, the chaos run, the
simulator, and the cluster harness they and the tests share. Nothing under ``edgesched.master``,
``edgesched.agent`` or ``edgesched.client`` imports from here."""
