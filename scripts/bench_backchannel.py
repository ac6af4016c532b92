"""Throughput and latency of ciba-service's /bc-authorize and /token (pending polls), compared
with panva/node-oidc-provider configured the same way.

Run (from the repository root; needs wrk: ``apt-get install -y wrk``; node + npm for the
reference, which is installed by ``npm install`` into scripts/bench/oidc-provider on first use)::

    PYTHONPATH=. .venv/bin/python scripts/bench_backchannel.py            # 10 s per run
    PYTHONPATH=. .venv/bin/python scripts/bench_backchannel.py --duration 20 --connections 16
    PYTHONPATH=. .venv/bin/python scripts/bench_backchannel.py --profile  # + py-spy, 1 worker
    PYTHONPATH=. .venv/bin/python scripts/bench_backchannel.py --no-reference

What it does, for each server (oidc-provider, then ciba-service with one worker, then with
``--workers 2``), each started fresh:

1. ``/bc-authorize`` (oidc-provider: ``/backchannel``, read from its discovery): the same valid
   request (scope=openid, login_hint=alice, binding_message=BM-1, one ``iam_policy``
   authorization_details entry, HTTP Basic client auth), expected answer 200 with an auth_req_id.
   A 2 s warm-up run first, discarded.
2. ``/token`` polls of pending requests, expected answer 400 ``authorization_pending``: first
   ``--token-ids`` requests are created over HTTP, then wrk polls them round-robin, so each one is
   polled at most every ids/rate seconds (ciba-service runs with ``poll_interval = 1``, and answers
   ``slow_down`` to a poll within 0.75 s of the previous one; the gap is printed).
   oidc-provider keeps only 1,000 to 2,000 artifacts in its in-memory adapter (an LRU) and has no
   ``slow_down``, so it gets ``--node-token-ids`` (500) ids, each polled once before the run to
   check it is pending.

Both runs use wrk (``-c CONNECTIONS``, ``-t WRK_THREADS``, ``-d DURATION``) with
scripts/bench/wrk_oauth.lua, which counts every answer by status and error code: a figure made of
more than 1% unexpected answers is withheld, and so is a ratio built on it. The last lines are
``bc_vs_nop=R1 token_vs_nop=R2`` (ciba-service, one worker, req/s divided by oidc-provider req/s)
and ``workers=2 bc_vs_nop=... token_vs_nop=...``.

The machine may be shared (2 cores here): before each measured run the script waits
(``--max-wait``, 300 s) until other processes use less than a quarter of a core, and each run
reports the CPU used by wrk, the server and everything else ("DISTURBED" when other processes
took more than a quarter of a core). wrk itself competes with the servers for the same cores; the
"generator ceiling" line shows what it drives against a trivial server.

``--profile`` also runs py-spy (``pip install py-spy``) on the one-worker server during an extra
``/bc-authorize`` run of ``--profile-seconds`` and prints the top functions by share of samples.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import benchkit as bk


@dataclass
class Figures:
    label: str
    bc: bk.LoadResult | None = None
    bc_ok: bool = False
    token: bk.LoadResult | None = None
    token_ok: bool = False


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: keeps the generator light)")
    p.add_argument("--warmup", type=float, default=2, help="discarded warm-up run before the first measurement (s)")
    p.add_argument(
        "--token-ids",
        type=int,
        default=16000,
        help="pending requests polled round-robin (ciba-service; enough that\n"
        "each is polled less often than every 0.75 s, or the answer is slow_down)",
    )
    p.add_argument("--node-token-ids", type=int, default=500, help="pending requests polled (oidc-provider, LRU)")
    p.add_argument("--workers", default="1,2", help="ciba-service worker counts to run (default 1,2)")
    p.add_argument("--no-reference", action="store_true", help="skip node-oidc-provider")
    p.add_argument("--profile", action="store_true", help="py-spy the one-worker server under /bc-authorize load")
    p.add_argument("--profile-seconds", type=float, default=10)
    p.add_argument(
        "--max-wait", type=float, default=300, help="wait up to this long for other load to stop before a run (s)"
    )
    p.add_argument("--retries", type=int, default=2, help="runs disturbed by other load are repeated (default 2)")
    p.add_argument("--workdir", type=Path, default=None, help="where configs, data and logs go (default: temp)")
    return p.parse_args()


def quiet(args: argparse.Namespace) -> None:
    """Other sessions may share this machine: wait for it to be quiet before a measured run."""
    note = bk.wait_quiet(args.max_wait)
    if note:
        print(f"  ({note})", flush=True)


def measured(args: argparse.Namespace, run: Callable[[], bk.LoadResult]) -> bk.LoadResult:
    """``run`` on a quiet machine; a run disturbed by other processes is tried again (up to
    ``--retries`` times) and the least disturbed one kept."""
    return bk.least_disturbed(run, retries=args.retries, max_wait=args.max_wait, log=lambda m: print(f"  ({m})"))


def poll_gap_note(ids: int, result: bk.LoadResult) -> str:
    return f"each id polled every ~{ids / result.rps:.2f} s" if result.rps else ""


def report(label: str, result: bk.LoadResult, expected: str, extra: str = "") -> bool:
    ok, text = bk.describe(result, expected)
    notes = "; ".join(x for x in (result.note, extra) if x)
    print(f"  {label:<16}{text}" + (f"  ({notes})" if notes else ""), flush=True)
    return ok


def bench_bc_authorize(
    args: argparse.Namespace, figures: Figures, url: str, authorization: str, common: dict[str, Any]
) -> None:
    """The same valid /bc-authorize request for either server: a warm-up, then the measured run."""

    def run(duration: float) -> bk.LoadResult:
        return bk.run_wrk(
            url, mode="body", authorization=authorization, arg=bk.backchannel_body(), duration=duration, **common
        )

    if args.warmup > 0:
        run(args.warmup)
    figures.bc = measured(args, lambda: run(args.duration))
    figures.bc_ok = report("bc-authorize", figures.bc, "200:auth_req_id")


def bench_reference(args: argparse.Namespace, workdir: Path) -> Figures:
    figures = Figures("oidc-provider")
    with bk.NodeReference(workdir / "oidc-provider") as ref:
        print(
            f"oidc-provider {bk.oidc_provider_version()} on node {bk.node_version()}, one process, "
            "bundled in-memory adapter (LRU of 1,000 entries), CIBA poll + RAR iam_policy, "
            f"endpoint {ref.backchannel_path}",
            flush=True,
        )
        url = ref.url + ref.backchannel_path
        assert ref.proc is not None
        common = {"connections": args.connections, "threads": args.wrk_threads, "server_pids": [ref.proc.pid]}
        bench_bc_authorize(args, figures, url, ref.authorization, common)
        ids = bk.create_pending(url, authorization=ref.authorization, count=args.node_token_ids)
        check = bk.paced_load(
            ref.url + ref.token_path,
            authorization=ref.authorization,
            bodies=bk.token_bodies(ids),
            rate=500,
            duration=len(ids) / 500,
        )
        if check.counts != {"400:authorization_pending": len(ids)}:
            print(f"  note: before the token run, polling each id once gave {check.counts}")
        id_file = workdir / "oidc-provider-ids.txt"
        id_file.write_text("\n".join(ids) + "\n")
        figures.token = measured(
            args,
            lambda: bk.run_wrk(
                ref.url + ref.token_path,
                mode="poll",
                authorization=ref.authorization,
                arg=str(id_file),
                duration=args.duration,
                **common,
            ),
        )
        figures.token_ok = report(
            "token (pending)", figures.token, "400:authorization_pending", poll_gap_note(len(ids), figures.token)
        )
    return figures


def bench_ciba(args: argparse.Namespace, workdir: Path, workers: int) -> Figures:
    figures = Figures(f"ciba-service workers={workers}")
    with bk.CibaServer(workdir / f"ciba-w{workers}", workers=workers, poll_interval=1) as server:
        print(
            f"ciba-service, {workers} worker{'s' if workers > 1 else ''} (uvicorn, httptools + uvloop), "
            f"SQLite store in {server.data_dir}, poll_interval=1, notifier=none, access log off (the default)",
            flush=True,
        )
        url = server.url + "/bc-authorize"
        common = {"connections": args.connections, "threads": args.wrk_threads, "server_pids": server.pids()}
        bench_bc_authorize(args, figures, url, server.authorization, common)
        id_file = workdir / f"ciba-w{workers}-ids.txt"

        def poll_run() -> bk.LoadResult:
            # Fresh ids for every attempt: a slow_down raises an id's interval for good.
            ids = bk.create_pending(url, authorization=server.authorization, count=args.token_ids)
            id_file.write_text("\n".join(ids) + "\n")
            return bk.run_wrk(
                server.url + "/token",
                mode="poll",
                authorization=server.authorization,
                arg=str(id_file),
                duration=args.duration,
                **common,
            )

        figures.token = measured(args, poll_run)
        figures.token_ok = report(
            "token (pending)", figures.token, "400:authorization_pending", poll_gap_note(args.token_ids, figures.token)
        )
        if args.profile and workers == 1:
            profile(args, server, workdir)
    return figures


# profiling ----------------------------------------------------------------------------------------
def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile(args: argparse.Namespace, server: bk.CibaServer, workdir: Path) -> None:
    """Two py-spy recordings of ``--profile-seconds`` each under one /bc-authorize wrk run:
    every non-idle thread (where requests spend wall-clock time, lock waits included), then only
    the thread holding the GIL (where the interpreter's CPU goes)."""
    tool = py_spy()
    if tool is None:
        print("  profile skipped: py-spy not found (pip install py-spy)")
        return
    pid = server.pids()[0]
    seconds = args.profile_seconds
    views = [("all", "all non-idle threads", []), ("gil", "thread holding the GIL (--gil)", ["--gil"])]
    load: dict[str, bk.LoadResult] = {}

    def drive() -> None:
        load["bc"] = bk.run_wrk(
            server.url + "/bc-authorize",
            mode="body",
            authorization=server.authorization,
            arg=bk.backchannel_body(),
            connections=args.connections,
            duration=len(views) * (seconds + 1) + 2,
            threads=args.wrk_threads,
            server_pids=[pid],
        )

    quiet(args)
    driver = threading.Thread(target=drive)
    driver.start()
    time.sleep(1)
    outputs = []
    for name, _, extra in views:
        raw = workdir / f"profile-{name}.txt"
        record = [tool, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "200"]
        record += ["--nonblocking", *extra, "--format", "raw", "--output", str(raw)]
        subprocess.run(record, check=True, capture_output=True)
        outputs.append(raw)
    driver.join()
    print(
        f"\nprofile of ciba-service (one worker, pid {pid}) under /bc-authorize load "
        "(the 'wrk' CPU share below includes py-spy's):"
    )
    report("load meanwhile", load["bc"], "200:auth_req_id")
    for (name, label, extra), raw in zip(views, outputs, strict=True):
        cmd = " ".join(["py-spy record --rate 200 --nonblocking", *extra, f"-d {seconds:.0f}"])
        print(f"\n  [{name}] {cmd}: samples of {label}; raw stacks in {raw}")
        print_profile(raw)


def _frame_parts(frame: str) -> tuple[str, str, str]:
    """'func (path/to/file.py:123)' -> ('func', 'path/to/file.py', '123')."""
    if frame.endswith(")") and " (" in frame:
        name, _, where = frame[:-1].rpartition(" (")
        path, _, line = where.rpartition(":")
        return name, path, line
    return frame, "", ""


def _short(path: str) -> str:
    for marker in ("site-packages/", "ciba_service/", "python3.", "lib/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return ("ciba_service/" + tail) if marker == "ciba_service/" else tail.split("/", 1)[-1]
    return path


CATEGORIES = [
    ("sqlite store (lock wait + queries + fsync)", ("ciba_service/store/sqlite.py", "sqlite3/")),
    ("json", ("json/", "orjson")),
    ("logging (access log)", ("logging/", "uvicorn/logging.py")),
    ("uvicorn / httptools / uvloop / asyncio loop", ("uvicorn/", "httptools", "uvloop", "asyncio/")),
    ("starlette / fastapi", ("starlette/", "fastapi/")),
    ("pydantic", ("pydantic",)),
    ("thread pool hop (anyio / threading / futures)", ("anyio/", "threading.py", "concurrent/")),
    (
        "crypto / randomness (hashlib, secrets, random, cryptography)",
        ("hashlib", "secrets.py", "random.py", "cryptography/", "hmac.py", "base64.py"),
    ),
    ("ciba_service (other)", ("ciba_service/",)),
]


def print_profile(raw: Path, top: int = 15) -> None:
    self_lines: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_parts(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        name, path, lineno = frames[-1]
        self_lines[f"{name} ({_short(path)}:{lineno})"] += count
        categories[_category(_short(path))] += count
        for key in {f"{n} ({_short(p)})" for n, p, _ in frames}:
            incl_counts[key] += count
    if not total:
        print("    (no samples)")
        return
    print(f"    {total} samples; by category of the innermost Python frame (self):")
    for cat, n in categories.most_common():
        print(f"      {n / total * 100:5.1f}%  {cat}")
    print(f"    top {top} by self time, per line (the innermost Python frame; C calls made there count there):")
    for key, n in self_lines.most_common(top):
        print(f"      {n / total * 100:5.1f}%  {key}")
    print(f"    top {top} functions of ciba_service by inclusive time (on the stack):")
    ours = [
        (k, n)
        for k, n in incl_counts.most_common()
        if "ciba_service/" in k and not any(x in k for x in ("cli.py", "__main__.py"))
    ]
    for key, n in ours[:top]:
        print(f"      {n / total * 100:5.1f}%  {key}")


def _category(path: str) -> str:
    for name, markers in CATEGORIES:
        if any(m in path for m in markers):
            return name
    return "other"


# ratios -------------------------------------------------------------------------------------------
def ratio(ciba: bk.LoadResult | None, ciba_ok: bool, ref: bk.LoadResult | None, ref_ok: bool) -> str:
    if ciba is None or ref is None:
        return "n/a"
    if not (ciba_ok and ref_ok):
        return "withheld"
    return f"{ciba.rps / ref.rps:.2f}"


def main() -> None:
    args = parse_args()
    if not bk.wrk_available():
        sys.exit("wrk not found: apt-get install -y wrk")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-backchannel-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[
        0
    ]
    print(bk.machine_line() + f" (wrk -t{args.wrk_threads}); python {platform.python_version()}; {wrk_version.strip()}")
    print(
        f"each run: {args.connections} connections, {args.duration:g} s, wrk + scripts/bench/wrk_oauth.lua; "
        f"work files in {workdir}"
    )
    quiet(args)
    ceiling = bk.generator_ceiling(
        connections=args.connections, duration=min(args.duration, 5), threads=args.wrk_threads
    )
    print(
        f"generator ceiling: {ceiling.rps:.0f} req/s against a trivial keep-alive server (one Python process, "
        f"uvloop + httptools) on the same cores, answers parsed as in the real runs; {ceiling.note}",
        flush=True,
    )

    reference: Figures | None = None
    if args.no_reference:
        print("oidc-provider reference skipped (--no-reference): ciba-service figures only")
    elif not bk.node_available():
        print("oidc-provider reference skipped (node or npm not found): ciba-service figures only")
    else:
        reference = bench_reference(args, workdir)

    runs = [bench_ciba(args, workdir, w) for w in workers]

    print("\nsummary (req/s; p50/p99 in ms; '-' = withheld or not run):")
    for f in ([reference] if reference else []) + runs:
        cells = []
        for name, result, ok in (("bc-authorize", f.bc, f.bc_ok), ("token", f.token, f.token_ok)):
            if result is None or not ok:
                cells.append(f"{name} -")
            else:
                cells.append(f"{name} {result.rps:.0f} req/s p50 {result.p50_ms:.1f} p99 {result.p99_ms:.1f}")
                if result.others_load > bk.BUSY_THRESHOLD:
                    cells[-1] += " (disturbed)"
        print(f"  {f.label:<28}" + "   ".join(cells))
    if reference is None:
        print("no ratios: the oidc-provider reference was skipped")
        return
    for f, w in zip(runs, workers, strict=True):
        prefix = "" if w == 1 else f"workers={w} "
        bc = ratio(f.bc, f.bc_ok, reference.bc, reference.bc_ok)
        token = ratio(f.token, f.token_ok, reference.token, reference.token_ok)
        print(f"{prefix}bc_vs_nop={bc} token_vs_nop={token}")


if __name__ == "__main__":
    main()
