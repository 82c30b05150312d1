"""Wall time and peak memory of `tailorml demo` on the shipped cohort (installed venv).

.venv/bin/python benchmarks/bench_demo.py
"""

from __future__ import annotations

import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    runs = Path(tempfile.mkdtemp(prefix="tailorml-bench-"))
    command = [sys.executable, "-m", "tailorml", "demo", "--runs-dir", str(runs)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shutil.rmtree(runs, ignore_errors=True)
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    print(f"tailorml demo: {wall:.1f} s wall, peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
