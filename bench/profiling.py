"""py-spy helpers: sample a running server, and summarise py-spy's raw (collapsed) output.

    python -m bench.profiling bench/profile-webhook.txt     # print the summary again

py-spy samples every thread that is on the CPU (idle threads, e.g. waiting for a lock
or the GIL, are left out unless --idle), 100 times a second. Percentages are of all
samples taken, so they read as "share of the server's CPU time".
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")

# (label, regex on one frame "func (file)"); a sample counts for a label when any frame
# of its stack matches, so the labels overlap: they are inclusive shares.
CATEGORIES: list[tuple[str, str]] = [
    ("HTTP server: uvicorn (protocol, parsing, writing)", r"\(uvicorn/"),
    ("Starlette (middleware, routing, request, response)", r"\(starlette/"),
    ("webhook handler (engine/server/app.py _whatsapp, incl. reading and checks)",
     r"_whatsapp \(engine/server/app\.py"),
    ("signature check (twilio RequestValidator)", r"\(twilio/request_validator\.py"),
    ("form parsing (parse_form / parse_qsl)", r"(parse_form|parse_qsl) \("),
    ("engine: inbound messages (Conversations.handle / handle_many)",
     r"Conversations\.(handle|handle_many) \(engine/core/conversations\.py"),
    ("store: SQL statements (persistence/store.py + sql.py)",
     r"\(persistence/(store|sql)\.py"),
    ("store: BEGIN/COMMIT (SQLAlchemy begin / commit)",
     r"(Connection\.begin|Transaction\.commit|RootTransaction\.|do_commit|_on_begin) "),
    ("SQLAlchemy (any use)", r"\(sqlalchemy/"),
    ("transitions (flow.fire)", r"\(transitions/"),
    ("intent detection (engine/core/intents.py)", r"\(engine/core/intents\.py"),
    ("flow texts (render, split_body)", r"\((engine/core/flow|engine/core/text)\.py"),
    ("listeners after commit (Conversations._publish)",
     r"_publish \(engine/core/conversations\.py"),
    ("logging (records, masking filter, handler)",
     r"\(logging/__init__\.py|\(engine/monitoring/logs\.py"),
    ("timeouts module (engine/scheduling/timeouts.py)",
     r"\(engine/scheduling/timeouts\.py"),
    ("APScheduler", r"\(apscheduler/"),
    ("outbox dispatcher (engine/outbox/dispatcher.py)",
     r"\(engine/outbox/dispatcher\.py"),
    ("outbox queries (persistence/outbox.py)", r"\(persistence/outbox\.py"),
    ("twilio-python REST client + requests + urllib3",
     r"\((twilio/rest|twilio/http|twilio/base|requests|urllib3)/"),
    ("Prometheus metrics", r"\(prometheus_client/"),
    ("asyncio machinery", r"\(asyncio/"),
]
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\):? ?(?P<name>.*)$")


def available() -> bool:
    return shutil.which("py-spy") is not None or (Path(sys.executable).parent / "py-spy").exists()


def py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


def record(pid: int, out: Path, *, duration: int, fmt: str = "raw", rate: int = 100,
           gil: bool = False, idle: bool = False) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` for `duration` seconds; the caller waits on the process.

    --nonblocking: py-spy does not pause the server for each sample (pausing a process
    with 40 threads 100 times a second halved its throughput in a trial run).
    """
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(duration), "--rate",
            str(rate), "--format", fmt, "--output", str(out), "--nonblocking"]
    if fmt == "raw":
        argv += ["--nolineno", "--threads"]
    if gil:
        argv.append("--gil")
    if idle:
        argv.append("--idle")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _split(stack: str) -> tuple[str, list[str]]:
    """(thread name, frames outermost first) of one raw line's stack."""
    frames = stack.split(";")
    name = "?"
    if frames and frames[0].startswith("thread ("):
        match = _THREAD.match(frames[0])
        name = (match["name"] or match["tid"]) if match else frames[0]
        frames = frames[1:]
    return name, frames


def _func(frame: str) -> str:
    match = _FRAME.match(frame)
    return f"{match['func']} ({match['file']})" if match else frame


def thread_kind(name: str) -> str:
    """Group py-spy's thread names: outbox_3 -> outbox, ThreadPoolExecutor-0_1 -> ..."""
    if name == "MainThread":
        return "MainThread: event loop (uvicorn, Starlette, handler, signature)"
    if name.startswith("group-commit"):
        return "group-commit: the writer thread (engine transactions)"
    if name.startswith("outbox"):
        return "outbox: dispatcher loop + sender threads"
    if name.startswith("APScheduler"):
        return "APScheduler: the scheduler thread"
    if name.startswith("ThreadPoolExecutor"):
        return "APScheduler job executor threads (ThreadPoolExecutor)"
    if name.startswith("AnyIO"):
        return "AnyIO worker threads (run_in_threadpool)"
    return re.sub(r"[-_]\d+(_\d+)?$", "", name) or "?"


def analyse(raw: Path, top: int = 15, thread: str | None = None) -> dict[str, Any]:
    """Shares of samples; with `thread`, only the samples of threads whose kind (see
    thread_kind) starts with it."""
    total = 0
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    cat_counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    compiled = [(label, re.compile(pattern)) for label, pattern in CATEGORIES]
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        name, frames = _split(stack)
        if not frames or (thread is not None and not thread_kind(name).startswith(thread)):
            continue
        total += count
        funcs = [_func(f) for f in frames]
        self_counts[funcs[-1]] += count
        for func in set(funcs):
            incl_counts[func] += count
        for label, pattern in compiled:
            if any(pattern.search(f) for f in funcs):
                cat_counts[label] += count
        kinds[thread_kind(name)] += count

    def share(counter: Counter[str], n: int | None = None) -> list[tuple[str, int, float]]:
        items = counter.most_common(n)
        return [(k, v, 100.0 * v / total if total else 0.0) for k, v in items]

    return {
        "samples": total,
        "self": share(self_counts, top),
        "inclusive": share(incl_counts, top + 10),
        "categories": [(label, cat_counts[label], 100.0 * cat_counts[label] / total
                        if total else 0.0) for label, _ in CATEGORIES],
        "threads": share(kinds),
    }


def render(report: Any, analysis: dict[str, Any], what: str,
           sections: tuple[str, ...] = ("threads", "categories", "self", "inclusive")) -> None:
    """Add the summary tables to a bench.common.Report."""
    captions = {
        "threads": ("thread kind", f"{what}: samples by thread"),
        "categories": ("stacks containing (inclusive, overlapping)", f"{what}: by component"),
        "self": ("function (self: the innermost frame)", f"{what}: top self-time functions"),
        "inclusive": ("function (inclusive)", f"{what}: top inclusive functions"),
    }
    for key in sections:
        head, caption = captions[key]
        rows = [[f"`{k}`" if key in ("self", "inclusive") else k, n, f"{p:.1f}"]
                for k, n, p in analysis[key] if n or key != "categories"]
        report.table([head, "samples", "% of samples"], rows, caption=caption)


def main() -> None:
    result = analyse(Path(sys.argv[1]))
    print(f"samples: {result['samples']}")
    for key in ("threads", "categories", "self", "inclusive"):
        print(f"\n{key}:")
        for name, count, pct in result[key]:
            print(f"  {pct:5.1f}%  {count:6d}  {name}")


if __name__ == "__main__":
    main()
