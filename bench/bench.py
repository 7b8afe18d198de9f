#!/usr/bin/env python3
"""Benchmark of the consent service against baselines measured in the same run.

    .venv/bin/python bench/bench.py [options]     # see bench/README.md and --help

The code is the package bench/consentbench/ (its __init__ lists the modules); this file is its
entry point, so that the command stays the same.
"""

import sys

from consentbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
