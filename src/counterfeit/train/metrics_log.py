"""metrics.csv for a run: one row per logged step, columns added as new keys appear."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from counterfeit.atomic import atomic_write_text
from counterfeit.errors import UserError


class MetricsLog:
    """Rows of {column: value}; the file is rewritten atomically on each flush (runs log a few thousand rows)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = ["step"]

    @classmethod
    def resume(cls, path: Path, upto_step: int) -> "MetricsLog":
        """Read an existing log and drop rows after `upto_step` (they will be recomputed)."""
        log = cls(path)
        if log.path.is_file():
            with open(log.path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                try:
                    log.columns = list(reader.fieldnames or ["step"])
                    for row in reader:
                        values = {k: float(v) for k, v in row.items() if v not in ("", None)}
                        if values.get("step", math.inf) <= upto_step:
                            log.rows.append(values)
                except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:  # e.g. edited by hand
                    raise UserError(f"{log.path}: line {reader.line_num} is not a row of numbers ({err}); the "
                                    "checkpoint is fine: fix or delete that line (or the file) and resume again") from None
        return log

    def append(self, step: int, values: dict[str, float]) -> None:
        row = {"step": float(step), **values}
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        self.rows.append(row)

    def flush(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in row.items()})
        atomic_write_text(self.path, buf.getvalue())
