#!/usr/bin/env python3
"""Run the reliability scenarios (tests/reliability) and write their figures into
docs/reliability.md, between the ``reliability-table`` markers.

    .venv/bin/python scripts/reliability-report.py   # soak: RELIABILITY_SOAK_SECONDS or 600
    .venv/bin/python scripts/reliability-report.py --soak-seconds 60 -- -k "not failover"

Each scenario test appends its measured rows to a JSON-lines file (RELIABILITY_RESULTS); this
script turns them into the Markdown table. The table is written even when a scenario fails (its
row then says FAIL) and the exit status is pytest's, so ``make test-reliability`` fails too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| scenario | what was run | what was counted | result | figure met |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row[k]) for k in ("scenario", "run", "counted",
                                                              "result"))
                     + f" | {'yes' if row['ok'] else '**FAIL**'} |")
    return "\n".join(lines)


def write(doc: Path, block: str) -> None:
    text = doc.read_text() if doc.exists() else f"# Reliability\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    doc.write_text(f"{before}{START}\n{block}\n{END}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak-seconds", type=float,
                        default=float(os.environ.get("RELIABILITY_SOAK_SECONDS", "600")))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as tmp:
        results = Path(tmp.name)
    env = {**os.environ, "RELIABILITY_RESULTS": str(results), "RELIABILITY_FULL": "1",
           "RELIABILITY_SOAK_SECONDS": str(int(args.soak_seconds))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--durations=0", "tests/reliability", *args.pytest_args]
    # The commit the run starts from (others may commit while it runs).
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)
    elapsed = time.monotonic() - started
    sys.stdout.write(proc.stdout[-20000:])
    sys.stderr.write(proc.stderr[-5000:])
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    results.unlink()
    summary = next((line.strip("= ") for line in reversed(proc.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed)", line)), "no summary")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit "
              f"`{commit}` on {os.cpu_count()} cores ({platform.machine()}, load average "
              f"{load} at the end), soak {int(args.soak_seconds)} s: `make test-reliability` "
              f"(`RELIABILITY_SOAK_SECONDS={int(args.soak_seconds)} .venv/bin/python "
              f"scripts/reliability-report.py`). pytest: {summary}; whole run "
              f"{elapsed:.0f} s.")
    write(args.doc, table(rows, header))
    print(f"wrote {len(rows)} rows to {args.doc}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
