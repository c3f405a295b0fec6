"""``python -m edgesched.tools.bench.scale``: a worker process of the simulated fleet
(``--worker '<json>'``, how the benchmark starts them), else the command itself."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        from edgesched.tools.bench.scale.fleet import worker_main

        worker_main(sys.argv[2:])
    else:
        from edgesched.tools.bench.scale.cli import scale_command

        scale_command()
