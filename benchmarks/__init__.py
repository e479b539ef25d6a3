"""skdsl's benchmarks: `python benchmarks/run.py [--quick]` (see benchmarks/RESULTS.md)."""
