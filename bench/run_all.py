"""Run every benchmark, one after the other, each in its own process.

    python -m bench.run_all [--quick] [--no-write] [--keep] [--only webhook,scale]

Each benchmark appends its own section to bench/RESULTS.md. A benchmark that fails is
reported and the others still run; the exit status is 1 if any failed. Each one is
bounded in time (see LIMITS).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["webhook", "scale", "timeout_precision", "restart", "outbox", "intents"]
# Seconds each may take before it is stopped (full run; --quick runs far below).
LIMITS = {"webhook": 900, "scale": 1200, "timeout_precision": 900, "restart": 1200,
          "outbox": 600, "intents": 300}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated names from: "
                        + ", ".join(ORDER))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    flags = [f for f, on in (("--quick", args.quick), ("--no-write", args.no_write),
                             ("--keep", args.keep)) if on]
    started = time.monotonic()
    outcome: list[tuple[str, str, float]] = []
    for name in names:
        t0 = time.monotonic()
        print(f"\n===== bench.{name} {' '.join(flags)} =====", flush=True)
        child = subprocess.Popen([sys.executable, "-m", f"bench.{name}", *flags],
                                 cwd=str(ROOT))
        try:
            code = child.wait(timeout=LIMITS[name])
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            # SIGTERM first: the benchmark then stops the servers it started.
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            status = f"stopped after {LIMITS[name]} s"
        outcome.append((name, status, time.monotonic() - t0))
    print("\n===== summary =====")
    for name, status, seconds in outcome:
        print(f"{name:18s} {status:24s} {seconds:6.0f} s")
    print(f"{'total':18s} {'':24s} {time.monotonic() - started:6.0f} s")
    return 0 if all(status == "ok" for _, status, _ in outcome) else 1


if __name__ == "__main__":
    raise SystemExit(main())
