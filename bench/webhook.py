"""Benchmark 1: signed inbound webhooks — throughput and latency, against two floors.

Five servers, one after the other, each a real subprocess on loopback with the Twilio
fake (50 ms latency) in its own process:

- baseline ``bare``: Starlette + uvicorn (same settings as ``tertulia serve``) parsing the
  same form and answering ``<Response/>`` (bench/baseline_app.py);
- baseline ``sqlite``: the same plus one BEGIN IMMEDIATE insert + commit;
- baseline ``batched``: the same insert through one group-commit writer thread, as
  tertulia hands its messages over (engine/batching.py);
- tertulia with ``TIMEOUT_REARM=self`` (the default: the job re-arms itself when it
  fires early) and with ``TIMEOUT_REARM=message`` (a job write on every message).

Each server first gets "hola" from every phone (tertulia opens a session per phone and
greets it), then the measured load: "mmm" texts round-robin over the phones. In the
trial flow a text it does not understand re-prompts and stays in ``greeting`` (after 3
misses it lists the options and starts counting again), so every measured message is a
message to an open session, mid-flow, that renews it and queues one reply.

The load generator (bench/loadgen.py) runs in its own process with keep-alive
connections, at concurrency 1, 8, 32 and 64; each level runs 3 times and the median is
reported. tertulia runs with default settings (TWILIO_MAX_MPS=80, LOG_LEVEL=INFO), except
SESSION_TIMEOUT_MINUTES=600 so no session expires mid-run.

Each run also reads the server's CPU time (/proc/<pid>/stat, all threads) to give CPU
per request, and the engine's own step is timed in this process first
(bench/engine_step.py), for the one-process floor in the report.

With --profile (default in a full run), tertulia (self) gets three extra c=32 runs under
py-spy after its measured runs (so sampling never touches the measured figures): GIL
holders, raw (bench/profile-webhook.txt, summarised into RESULTS.md); all threads with
waiting included, raw (bench/profile-webhook-wall.txt); and a flame graph of the GIL
holders (bench/profile-webhook.svg).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/webhook.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import engine_step, profiling

BENCH_DIR = Path(__file__).resolve().parent


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", dest="profile", action="store_true", default=None)
    parser.add_argument("--no-profile", dest="profile", action="store_false")


def _measure(server: c.Server, levels: list[int], reps: int, duration: float, phones: int,
             label: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    port = server.port
    for level in levels:
        pending_before = c.pending_outbox(port)
        runs = []
        for rep in range(reps):
            spec = c.load_spec(port, concurrency=level, duration=duration, phones=(0, phones),
                               texts=["mmm"], order="round_robin", seed=rep)
            cpu_before = c.cpu_seconds(server.pid)
            runs.append(c.run_load(spec))
            cpu_after = c.cpu_seconds(server.pid)
            if cpu_before is not None and cpu_after is not None and runs[-1]["requests"]:
                # Everything the server process spent (all threads, user + system), per
                # request: a steadier figure than req/s on a shared host.
                runs[-1]["cpu_us"] = 1e6 * (cpu_after - cpu_before) / runs[-1]["requests"]
            c.progress(f"{label} c={level} rep {rep + 1}: {runs[-1]['rps']:.0f} req/s, "
                       f"p99 {runs[-1]['lat_ms']['p99']:.1f} ms")
        summary = c.summarize_runs(runs)
        summary["runs"] = runs
        summary["pending_before"] = pending_before
        summary["pending_after"] = c.pending_outbox(port)
        out[level] = summary
    return out


def _open_sessions(port: int, phones: int) -> dict[str, Any]:
    spec = c.load_spec(port, concurrency=16, duration=120, phones=(0, phones), texts=["hola"],
                       order="rounds", n=phones)
    opened = c.run_load(spec)
    # A short warm-up, not measured.
    c.run_load(c.load_spec(port, concurrency=8, duration=1.0, phones=(0, phones),
                           texts=["mmm"], seed=99))
    return opened


def _profile(server: c.Server, phones: int, duration: int) -> dict[str, Any]:
    """Three sampled c=32 runs: GIL holders (raw), all threads wall-clock (raw), and a
    flame graph of the GIL holders (svg)."""
    passes = [("gil", BENCH_DIR / "profile-webhook.txt", "raw", {"gil": True}),
              ("wall", BENCH_DIR / "profile-webhook-wall.txt", "raw", {"idle": True}),
              ("svg", BENCH_DIR / "profile-webhook.svg", "flamegraph", {"gil": True})]
    result: dict[str, Any] = {"runs": {}}
    for key, out, fmt, flags in passes:
        spy = profiling.record(server.pid, out, duration=duration, fmt=fmt, **flags)
        spec = c.load_spec(server.port, concurrency=32, duration=duration + 0.5,
                           phones=(0, phones), texts=["mmm"], seed=7)
        result["runs"][key] = c.run_load(spec)
        try:
            _, err = spy.communicate(timeout=duration + 60)
        except Exception:
            spy.kill()
            _, err = spy.communicate()
        if spy.returncode != 0:
            result["error"] = err.decode(errors="replace")[-500:]
            return result
    result["gil"] = profiling.analyse(BENCH_DIR / "profile-webhook.txt")
    result["wall_writer"] = profiling.analyse(BENCH_DIR / "profile-webhook-wall.txt",
                                              thread="group-commit", top=10)
    result["wall_loop"] = profiling.analyse(BENCH_DIR / "profile-webhook-wall.txt",
                                            thread="MainThread", top=10)
    result["duration"] = duration
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    levels = [1, 8, 32, 64]
    reps = 1 if quick else 3
    duration = 0.7 if quick else 4.0
    phones = 128 if quick else 1024
    do_profile = (not quick) if args.profile is None else args.profile
    if do_profile and not profiling.available():
        c.progress("py-spy not found: skipping the profile (pip install py-spy)")
        do_profile = False
    report = c.Report("Webhook throughput and latency (bench/webhook.py)", quick=quick)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    extras: dict[str, dict[str, Any]] = {}
    profile: dict[str, Any] | None = None
    c.progress("timing the engine step in process")
    engine_us = engine_step.measure()
    with c.workdir("webhook", args.keep) as work:
        fake, fake_url = c.start_fake(work, latency=0.05)
        targets: list[tuple[str, Any]] = [
            ("baseline bare", lambda: c.start_baseline(work, "bare")),
            ("baseline sqlite", lambda: c.start_baseline(work, "sqlite",
                                                         db_path=work / "baseline.db")),
            ("baseline batched", lambda: c.start_baseline(work, "batched",
                                                          db_path=work / "batched.db")),
            ("tertulia self", lambda: c.start_tertulia(
                work, work / "self.db", fake_url, name="tertulia-self",
                extra_env={"TIMEOUT_REARM": "self", "SESSION_TIMEOUT_MINUTES": "600"})),
            ("tertulia message", lambda: c.start_tertulia(
                work, work / "message.db", fake_url, name="tertulia-message",
                extra_env={"TIMEOUT_REARM": "message", "SESSION_TIMEOUT_MINUTES": "600"})),
        ]
        for name, start in targets:
            c.progress(f"starting {name}")
            server = start()
            opened = _open_sessions(server.port, phones)
            rss_before = server.rss_kb()
            results[name] = _measure(server, levels, reps, duration, phones, name)
            extras[name] = {"opened": opened, "rss_before": rss_before,
                            "rss_after": server.rss_kb(), "healthy_after": server.healthy_after}
            if name == "tertulia self":
                extras[name]["outbox_alone"] = _outbox_alone(server, seconds=5.0)
            if name == "tertulia self" and do_profile:
                c.progress("profiling tertulia (self) at c=32 with py-spy")
                profile = _profile(server, phones, duration=8)
            server.stop()
            extras[name]["log"] = c.log_summary(server.proc.log_path)
            extras[name]["excerpts"] = c.log_excerpts(server.proc.log_path)
        fake.stop()

    report.settings({
        "fake latency": "50 ms", "phones": phones, "levels": levels, "reps": reps,
        "seconds per run": duration, "tertulia env": "defaults + SESSION_TIMEOUT_MINUTES=600",
        "TWILIO_MAX_MPS": "80 (default)", "LOG_LEVEL": "INFO (default)",
        "measured text": "mmm (not understood: re-prompt, stays in greeting)",
    })
    rows = []
    for name, levels_out in results.items():
        for level, s in levels_out.items():
            rows.append([name, level, s["rps"], s["p50"], s["p95"], s["p99"], _us(s["cpu_us"]),
                         s["requests"], s["non200"],
                         s.get("pending_after") if "tertulia" in name else "–"])
    report.table(["server", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms",
                  "server CPU µs / request", "requests (all reps)", "non-200 / errors",
                  "outbox pending after"], rows, caption="Medians of the runs at each level")
    ratio_rows = []
    bare, sqlite, batched = (results["baseline bare"], results["baseline sqlite"],
                             results["baseline batched"])
    for level in levels:
        row: list[Any] = [level, bare[level]["rps"], sqlite[level]["rps"],
                          batched[level]["rps"]]
        for mode in ("tertulia self", "tertulia message"):
            rps = results[mode][level]["rps"]
            row += [rps, f"{rps / bare[level]['rps']:.3f}", f"{rps / sqlite[level]['rps']:.3f}",
                    f"{rps / batched[level]['rps']:.3f}"]
        ratio_rows.append(row)
    report.table(["c", "bare req/s", "sqlite req/s", "batched req/s", "self req/s",
                  "self / bare", "self / sqlite", "self / batched", "message req/s",
                  "message / bare", "message / sqlite", "message / batched"],
                 ratio_rows, caption="tertulia's throughput as a fraction of each floor")
    _budget_section(report, results, engine_us, extras["tertulia self"].get("outbox_alone"))
    self32, msg32, bare32 = (results["tertulia self"][32], results["tertulia message"][32],
                             bare[32])
    better = "self" if self32["rps"] >= msg32["rps"] else "message"
    report.table(["target (issue 5)", "goal", "measured", "met"], [
        ["throughput at c=32 vs bare (self)", ">= 0.5",
         f"{self32['rps'] / bare32['rps']:.3f}", "yes" if self32["rps"] >= 0.5 * bare32["rps"]
         else "no"],
        ["throughput at c=32 vs bare (message)", ">= 0.5",
         f"{msg32['rps'] / bare32['rps']:.3f}", "yes" if msg32["rps"] >= 0.5 * bare32["rps"]
         else "no"],
        ["p99 at c=32 (self)", "< 50 ms", f"{self32['p99']:.1f} ms",
         "yes" if self32["p99"] < 50 else "no"],
        ["p99 at c=32 (message)", "< 50 ms", f"{msg32['p99']:.1f} ms",
         "yes" if msg32["p99"] < 50 else "no"],
    ], caption=f"Targets (better timeout strategy at c=32 here: {better})")
    ext_rows = []
    for name, e in extras.items():
        log = e.get("log", {})
        ext_rows.append([name, f"{e['healthy_after']:.2f}", e["opened"]["rps"],
                         e["rss_before"], e["rss_after"], log.get("lines"), log.get("warning"),
                         log.get("error"), log.get("database is locked")])
    report.table(["server", "start to healthy s", "opening 'hola' req/s (c=16)",
                  "RSS KB before load", "RSS KB after", "log lines", "WARNING", "ERROR",
                  "'database is locked'"], ext_rows, caption="Around the runs")
    for name, e in extras.items():
        c.log_report(report, name, e.get("excerpts", []))
    if profile is not None:
        _profile_section(report, profile)
    report.write(not args.no_write)
    return {"results": results, "profile": profile}


def _outbox_alone(server: c.Server, seconds: float) -> dict[str, float] | None:
    """The server's CPU while its outbox drains the backlog the runs left, no webhooks."""
    pending0, cpu0, started = c.pending_outbox(server.port), c.cpu_seconds(server.pid), \
        time.monotonic()
    time.sleep(seconds)
    pending1, cpu1 = c.pending_outbox(server.port), c.cpu_seconds(server.pid)
    elapsed = time.monotonic() - started
    if pending0 is None or pending1 is None or cpu0 is None or cpu1 is None:
        return None
    return {"sent_per_s": (pending0 - pending1) / elapsed, "cores": (cpu1 - cpu0) / elapsed,
            "backlog": float(pending1)}


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _budget_section(report: c.Report, results: dict[str, dict[int, dict[str, Any]]],
                    engine_us: float, outbox: dict[str, float] | None) -> None:
    """Where one core's microseconds go at c=32, and what half of bare would allow."""
    rows = []
    for name, levels_out in results.items():
        s = levels_out[32]
        cores = s["cpu_us"] * s["rps"] / 1e6 if s["cpu_us"] is not None else None
        rows.append([name, s["rps"], _us(s["cpu_us"]),
                     "–" if cores is None else f"{cores:.2f}"])
    report.table(["server (c=32)", "req/s", "server CPU µs / request",
                  "cores busy (CPU µs/req × req/s)"], rows,
                 caption="CPU per request at c=32 (server process, all threads)")
    bare = results["baseline bare"][32]
    bare_cpu = bare["cpu_us"]
    if bare_cpu is None:
        return
    budget = 1e6 / (0.5 * bare["rps"])
    cap = 1e6 / (bare_cpu + engine_us)
    report.text(
        f"**The floor of one process.** Python runs one thread at a time (the GIL), so a "
        f"server is held to about one core whatever its threads; the cores-busy column "
        f"shows it. Half of bare at c=32 is {0.5 * bare['rps']:,.0f} req/s, which leaves "
        f"**{budget:.0f} µs of CPU per request**. The same stack with nothing behind it "
        f"already spends {bare_cpu:.0f} µs (bare); the engine's step alone, in process, "
        f"with no HTTP, no threads and none of the listeners serve adds "
        f"(`python -m bench.engine_step`), costs **{engine_us:.0f} µs per message**. "
        f"Those two alone cap a one-process server at 1e6 / ({bare_cpu:.0f} + "
        f"{engine_us:.0f}) = {cap:,.0f} req/s, {cap / bare['rps']:.2f} of bare, before the "
        f"signature check, the hand-off to the writer, the outbox's sends and the log "
        f"lines. `baseline batched` is that hand-off with one INSERT in place of the step.")
    if outbox is not None:
        left = max(0.0, 1.0 - outbox["cores"])
        report.text(
            f"**The outbox shares that core.** After the runs, with no webhooks, the server "
            f"drained its backlog ({outbox['backlog']:,.0f} rows left) at "
            f"{outbox['sent_per_s']:.1f} sends/s (TWILIO_MAX_MPS=80) and kept "
            f"**{outbox['cores']:.2f} cores** busy doing only that (twilio-python's request, "
            f"the bookkeeping commits). That leaves about {left:.2f} of the core to webhooks: "
            f"at the {bare_cpu + engine_us:.0f} µs above, at most "
            f"{left * cap:,.0f} req/s, {left * cap / bare['rps']:.2f} of bare.")


def _profile_section(report: c.Report, profile: dict[str, Any]) -> None:
    if "error" in profile:
        report.text(f"Profile failed: `{profile['error']}`")
        return
    gil, runs, seconds = profile["gil"], profile["runs"], profile["duration"]
    report.text(
        f"**Profile of tertulia (self) at c=32** (py-spy, 100 Hz, --nonblocking, after the "
        f"measured runs). GIL pass: only the thread holding the GIL is sampled, so the "
        f"shares read as shares of the Python time of this process, which is one GIL; "
        f"{gil['samples']} samples in {seconds} s, i.e. the GIL was held about "
        f"{gil['samples'] / (seconds * 100):.0%} of the time; the load ran "
        f"{runs['gil']['rps']:.0f} req/s (p99 {runs['gil']['lat_ms']['p99']:.1f} ms) while "
        f"sampled. Files: `bench/profile-webhook.txt` (GIL, raw; `python -m bench.profiling "
        f"bench/profile-webhook.txt`), `bench/profile-webhook-wall.txt` (all threads, "
        f"waiting included), `bench/profile-webhook.svg` (flame graph, GIL).")
    profiling.render(report, gil, "GIL holders")
    writer, loop = profile["wall_writer"], profile["wall_loop"]
    report.text(
        f"Wall-clock pass (all threads, waiting included; {runs['wall']['rps']:.0f} req/s "
        f"while sampled): where the group-commit writer thread and the event loop thread "
        f"spend their time. A writer sampled in `SimpleQueue.get` is idle, waiting for "
        f"work; anywhere else it is busy.")
    profiling.render(report, writer, "group-commit writer, wall clock", sections=("self",))
    profiling.render(report, loop, "event loop (MainThread), wall clock", sections=("self",))


def main(argv: list[str] | None = None) -> None:
    run(c.bench_args(__doc__ or "", argv, _extra))


if __name__ == "__main__":
    main()
