"""`skdsl explore`: sample a spec's design space, count every point exactly, train a chosen few.

The floors of this package, lowest first:

- counting.py: one point of a space -> its exact counts, from a shared parse and shared units;
- points.py: the table of counted points (points.csv, points.jsonl) and how a row reads back;
- sampling.py: drawing points with Optuna's samplers, deterministic for a seed;
- budget.py: `--where "params <= 25M and macs <= 4.5G"`;
- study.py: the Optuna study that trains the chosen points (local SQLite or any storage URL);
- figures.py, show.py: histograms, error against multiply-adds, RegNet-style EDFs; `explore show`.

Optuna is an optional dependency (the `explore` extra): importing this package does not need it,
running a study does.
"""
