"""Benchmark 5: outbox throughput against the Twilio fake with 50 ms per request.

`tertulia serve` with default settings (TWILIO_MAX_MPS=80), the fake started with
`--latency 0.05 --record F.jsonl`. The messages are queued the way users queue them:
400 phones each send "hola" and then a few "mmm" texts as signed webhooks (round by
round, 16 connections), and every one of those messages queues one reply in the outbox
(the greeting, then re-prompts). Webhooks arrive faster than 80/s, so the outbox has a
backlog for most of the run and the dispatcher runs flat out.

From the fake's record (`at` is the fake's time.monotonic() when a request arrived):

- messages per second delivered: over the whole run, and over the steady part (the first
  and last second left out);
- the busiest 1-second sliding window (half-open), which must never exceed 80;
- order per recipient: for each phone, the Twilio SIDs in the order the fake received
  them must equal the SIDs of that phone's outbound rows in id order (the order the
  engine queued them);
- duplicates and non-201 answers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/outbox.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c


def _stalls(gaps: list[float], interval: float) -> str:
    long = [g for g in gaps if g > 4 * interval]
    if not long:
        return "0"
    lost = sum(g - interval for g in long)
    return f"{len(long)}, {lost:.2f} s, {max(long) * 1000:.0f} ms"


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    except OSError:
        pass
    return out


def _count_201(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if b'"status_code": 201' in line)
    except OSError:
        return 0


def _windows(times: list[float], limit: int, window: float = 1.0) -> tuple[int, int, float]:
    """(busiest count in any half-open `window`, number of arrivals that end a window
    holding more than `limit`, start of the busiest window relative to the first)."""
    best, over, i, at = 0, 0, 0, 0.0
    for j, t in enumerate(times):
        while t - times[i] >= window:
            i += 1
        count = j - i + 1
        if count > best:
            best, at = count, times[i] - times[0]
        if count > limit:
            over += 1
    return best, over, at


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    phones = 400
    per_phone = 2 if quick else 6
    max_mps = 80
    expected = phones * per_phone
    report = c.Report("Outbox throughput (bench/outbox.py)", quick=quick)
    with c.workdir("outbox", args.keep) as work:
        db = work / "bench.db"
        record = work / "fake.jsonl"
        fake, fake_url = c.start_fake(work, latency=0.05, record=record)
        server = c.start_tertulia(work, db, fake_url,
                                  extra_env={"SESSION_TIMEOUT_MINUTES": "600"})
        texts = ["hola"] + ["mmm"] * (per_phone - 1)
        load = c.run_load(c.load_spec(server.port, concurrency=16, duration=300,
                                      phones=(0, phones), texts=texts, order="rounds",
                                      n=expected), limit=600)
        c.progress(f"outbox: {load['ok']} webhooks in {load['elapsed_s']:.1f} s; "
                   f"waiting for {expected} sends at <= {max_mps}/s")
        deadline = time.monotonic() + expected / max_mps + 90
        while time.monotonic() < deadline and _count_201(record) < expected:
            time.sleep(0.5)
        time.sleep(1.0)  # a late duplicate would show up here
        pending = c.pending_outbox(server.port)
        conn = c.db_connect(db)
        rows = conn.execute(
            "SELECT s.phone, m.id, m.twilio_sid, m.status FROM messages m "
            "JOIN sessions s ON s.id = m.session_id WHERE m.direction = 'out' "
            "ORDER BY m.id").fetchall()
        conn.close()
        server.stop()
        log = c.log_summary(server.proc.log_path)
        excerpts = c.log_excerpts(server.proc.log_path)
        fake.stop()
        recs = _records(record)

    ok = sorted((r for r in recs if r["status_code"] == 201), key=lambda r: r["at"])
    statuses: dict[int, int] = defaultdict(int)
    for r in recs:
        statuses[r["status_code"]] += 1
    times = [r["at"] for r in ok]
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    overall = (len(times) - 1) / span if len(times) > 1 and span > 0 else float("nan")
    steady = [t for t in times if times[0] + 1.0 <= t < times[-1] - 1.0]
    steady_rate = len(steady) / (span - 2.0) if span > 2 else float("nan")
    best, over, best_at = _windows(times, max_mps)
    later = [t for t in times if t >= times[0] + 2.0] if times else []
    best_later, _, _ = _windows(later, max_mps) if later else (0, 0, 0.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Order per recipient.
    db_order: dict[str, list[str]] = defaultdict(list)
    for phone, _id, sid, _status in rows:
        if sid:
            db_order[f"whatsapp:{phone}"].append(sid)
    fake_order: dict[str, list[str]] = defaultdict(list)
    for r in ok:
        fake_order[r["to"]].append(r["sid"])
    out_of_order = sum(1 for to, sids in fake_order.items() if db_order.get(to) != sids)
    duplicates = len(ok) - len({(r["to"], r["body"], r["sid"]) for r in ok})
    unsent = sum(1 for _p, _i, sid, _s in rows if not sid)
    per_recipient = sorted(len(v) for v in fake_order.values())
    report.settings({"phones": phones, "messages per phone": per_phone,
                     "replies expected": expected, "TWILIO_MAX_MPS": f"{max_mps} (default)",
                     "fake latency": "50 ms", "other settings": "defaults",
                     "queued by": "signed webhooks (hola + mmm), 16 connections"})
    report.table(["measure", "value"], [
        ["webhooks answered 200", f"{load['ok']:,} of {expected:,} in {load['elapsed_s']:.1f} s"
                                  f" ({load['rps']:.0f}/s)"],
        ["delivered (201 at the fake)", f"{len(ok):,}"],
        ["other answers at the fake", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())
                                                if k != 201) or "none"],
        ["first to last delivery", f"{span:.2f} s"],
        ["messages per second, whole run", f"{overall:.2f}"],
        ["messages per second, steady part", f"{steady_rate:.2f}"],
        ["busiest 1 s sliding window", f"{best} (starting {best_at:.2f} s after the first "
                                        f"delivery)"],
        ["busiest 1 s window after the first 2 s", f"{best_later}"],
        [f"arrivals that closed a 1 s window above {max_mps}", f"{over}"],
        ["smallest gap between two sends", f"{min(gaps) * 1000:.2f} ms" if gaps else "–"],
        ["median gap", f"{c.percentile(gaps, 50) * 1000:.2f} ms (1/80 s = 12.5 ms)"
         if gaps else "–"],
        # Where the rate goes: a gap of more than four intervals is a stall, not pacing.
        ["stalls (gaps over 50 ms): count, time beyond one interval, longest",
         _stalls(gaps, 1.0 / max_mps)],
        ["recipients whose order differs from the queue order", f"{out_of_order} of "
                                                                f"{len(fake_order)}"],
        ["duplicate deliveries", f"{duplicates}"],
        ["outbound rows without a SID at the end", f"{unsent}"],
        ["outbox pending at the end", f"{pending}"],
        ["messages per recipient (min / max)",
         f"{per_recipient[0]} / {per_recipient[-1]}" if per_recipient else "–"],
        ["server log", str(log)],
    ], caption="Outbox")
    sustained = steady_rate == steady_rate and abs(steady_rate - max_mps) <= 0.02 * max_mps
    report.table(["target (issue 5)", "goal", "measured", "met"], [
        ["sustains TWILIO_MAX_MPS", f"{max_mps}/s (within 2%)", f"{steady_rate:.2f}/s",
         "yes" if sustained else "no"],
        ["never above it (any 1 s window)", f"<= {max_mps}", f"{best}",
         "yes" if best <= max_mps else "no"],
        ["order per recipient", "kept", f"{out_of_order} recipients out of order",
         "yes" if out_of_order == 0 else "no"],
    ], caption="Targets")
    c.log_report(report, "Server", excerpts)
    report.write(not args.no_write)
    return {"steady": steady_rate, "max_window": best, "out_of_order": out_of_order}


def main(argv: list[str] | None = None) -> None:
    run(c.bench_args(__doc__ or "", argv))


if __name__ == "__main__":
    main()
