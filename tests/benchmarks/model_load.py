"""Benchmark: how long loading the embedded model takes, the first time (the GGUF weights
are de-quantised into a fresh cache) and later (booted from that cache).

Run it from the repository root on an otherwise idle machine (it is not a test and
pytest does not collect it; ``make benchmark`` runs it)::

    HF_HUB_OFFLINE=1 .venv/bin/python tests/benchmarks/model_load.py [--first-budget 60] [--later-budget 15]

It exits with status 1 when a load exceeds its budget. The last line printed reads
``first_load_s=<x> later_load_s=<y>``. ``tests/test_models.py`` checks what the loads
do (the conversion, and its reuse), not how long they take.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-budget", type=float, default=60.0, help="seconds allowed for the first load")
    parser.add_argument("--later-budget", type=float, default=15.0, help="seconds allowed for a later load")
    options = parser.parse_args()

    from utils.core import models

    with tempfile.TemporaryDirectory(prefix="model-load-") as cache:
        os.environ[models.CACHE_ENV_VAR] = cache
        start = time.perf_counter()
        models.load_model(device="cpu")
        first = time.perf_counter() - start
        start = time.perf_counter()
        models.load_model(device="cpu")
        later = time.perf_counter() - start

    print(f"first load (converts the GGUF weights): {first:.1f} s (budget {options.first_budget:.0f} s)")
    print(f"later load (from the cache):            {later:.1f} s (budget {options.later_budget:.0f} s)")
    print(f"first_load_s={first:.1f} later_load_s={later:.1f}")
    over = first > options.first_budget or later > options.later_budget
    if over:
        print("over budget", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
