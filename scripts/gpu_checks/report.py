"""The report: rows in order, each printed when done and the JSON rewritten after it."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path


class Report:
    """Rows in order; each printed when done and the JSON rewritten, so a killed run keeps what finished."""

    def __init__(self, out: Path | None, meta: dict, only: set[str] | None):
        self.out, self.meta, self.only = out, meta, only
        self.rows: dict[str, dict] = {}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def run(self, name: str, fn) -> dict:
        """Run ``fn()`` as row ``name``; an exception makes a failed row and the run goes on."""
        if self.only is not None and name not in self.only:
            return {}
        self.log(f"{name} ...")
        t = time.perf_counter()
        try:
            row = fn()
        except Exception as e:  # noqa: BLE001 - a failed check is a row, the others still run
            row = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(row["traceback"], flush=True)
        row["seconds"] = round(time.perf_counter() - t, 2)
        self.rows[name] = row
        self.log(f"{name}: {status(row)} {json.dumps(brief(row), default=str)[:1500]}")
        self.write()
        return row

    def skip(self, name: str, reason: str) -> None:
        if self.only is not None and name not in self.only:
            return
        self.rows[name] = {"ok": None, "skipped": reason, "seconds": 0.0}
        self.log(f"{name}: skipped ({reason})")
        self.write()

    def write(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.meta, "elapsed_s": round(self.elapsed(), 1), "checks": self.rows}
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
        os.replace(tmp, self.out)

    def table(self) -> None:
        print(f"\n{'check':<20} {'result':<8} {'seconds':>8}  details", flush=True)
        for name, row in self.rows.items():
            print(f"{name:<20} {status(row):<8} {row['seconds']:>8.1f}  {json.dumps(brief(row), default=str)[:400]}",
                  flush=True)


def status(row: dict) -> str:
    return "skipped" if row.get("ok") is None else ("ok" if row["ok"] else "FAILED")


def brief(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("ok", "seconds", "traceback", "figures")}


def _jsonable(x):
    return str(x)  # anything json cannot write (paths, dtypes) as its text
