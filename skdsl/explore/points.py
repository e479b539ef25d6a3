"""One row per sampled point: its parameter values, what became of it, and its exact counts.

`DIR/points.csv` and `DIR/points.jsonl` hold the same rows; the JSONL keeps types (an int stays an
int), the CSV is for spreadsheets. A row reads back with `read_points(DIR)`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..base import files

OK, REJECTED, OVER_BUDGET = "ok", "rejected", "over budget"
STATUSES = (OK, REJECTED, OVER_BUDGET)
# The counts of a point that built, in the order of the table's columns.
COUNTS = ("params", "macs", "activations", "peak_bytes", "latency_ms")


@dataclass
class Point:
    """A point of the space. `status` is ok, rejected (it does not build, or breaks a `where`:
    `error` holds the code and `message` what was wrong) or over budget (it builds, and a
    --where budget refuses it). The counts are None where the point did not build; `latency_ms`
    is None where no latency model exists."""

    index: int
    values: dict
    status: str = OK
    error: str | None = None
    message: str | None = None
    params: int | None = None
    macs: int | None = None
    activations: int | None = None
    peak_bytes: int | None = None  # memory of an inference pass, batch 1, fp32: weights,
    # buffers and the most activations alive at once (resources.estimate_memory)
    latency_ms: float | None = None
    extra: dict = field(default_factory=dict)

    def counts(self) -> dict:
        return {name: getattr(self, name) for name in COUNTS}

    def row(self) -> dict:
        """The flat row of points.csv / points.jsonl: index, the parameters, status, error,
        message, then the counts."""
        return {"index": self.index, **self.values, "status": self.status, "error": self.error,
                "message": self.message, **self.counts(), **self.extra}

    @classmethod
    def from_row(cls, row: dict, names: list[str]) -> "Point":
        known = {"index", "status", "error", "message", *COUNTS, *names}
        return cls(index=row["index"], values={n: row[n] for n in names}, status=row["status"],
                   error=row.get("error"), message=row.get("message"),
                   **{name: row.get(name) for name in COUNTS},
                   extra={k: v for k, v in row.items() if k not in known})


def write_points(folder: Path, points: list[Point], names: list[str]) -> tuple[Path, Path]:
    """points.csv and points.jsonl in `folder`, each written whole or not at all
    (files.write_text): a study killed while writing keeps its previous table."""
    folder = Path(folder)
    rows = [point.row() for point in points]
    columns = ["index", *names, "status", "error", "message", *COUNTS]
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    jsonl, table = folder / "points.jsonl", folder / "points.csv"
    lines = [json.dumps({"columns": columns, "names": names})]
    lines += [json.dumps(row) for row in rows]
    files.write_text(jsonl, "\n".join(lines) + "\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(table, text.getvalue())
    return table, jsonl


def read_points(folder: Path) -> tuple[list[str], list[Point]]:
    """The parameter names and the points of a study folder's points.jsonl."""
    path = Path(folder) / "points.jsonl"
    with open(path, encoding="utf-8") as stream:
        header = json.loads(stream.readline())
        names = header["names"]
        return names, [Point.from_row(json.loads(line), names) for line in stream if line.strip()]


__all__ = ["Point", "write_points", "read_points", "STATUSES", "COUNTS", "OK", "REJECTED",
           "OVER_BUDGET"]
