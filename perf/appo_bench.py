"""``appo perf`` as a script: our engine and trainer against ``model.generate`` and TRL, side by side.

Usage (the full run of ``docs/perf.md``; 30-60 minutes on 2 busy cores)::

    .venv/bin/python perf/appo_bench.py --json runs/bench/bench.json

    # one model, one thread count, some sections
    .venv/bin/python perf/appo_bench.py --models tiny --threads 1 --sections rollout,decode,branching

Everything is in :mod:`appo.perf` (``run_bench`` is the documented Python call); this file only
forwards the command line. ``perf/engine_bench.py`` holds the engine's own settings sweeps
(finished-row compaction).
"""

import sys

from appo.perf import main

if __name__ == "__main__":
    sys.exit(main())
