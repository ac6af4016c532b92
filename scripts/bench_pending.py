"""Does ciba-service slow down or bloat as pending requests pile up? p99 latency of /bc-authorize
and of /token polls with 100 and with 100,000 pending requests in the store, and the store's
bytes per pending request; for SQLite, and for Redis when ``redis-server`` is on PATH.

Run (from the repository root)::

    PYTHONPATH=. .venv/bin/python scripts/bench_pending.py
    PYTHONPATH=. .venv/bin/python scripts/bench_pending.py --sizes 100,100000 --duration 20 --stores sqlite

For each store and each size N, on a fresh ciba-service (one worker; ``poll_interval = 1``,
``request_expiry_default = request_expiry_max = 3600`` so nothing expires during the run;
Redis: a private ``redis-server --save "" --appendonly no --maxmemory-policy noeviction`` on a
free loopback port, started for the benchmark, one per size):

1. one real backchannel request over HTTP, read back from the store: the template;
2. N - 1 more pending requests inserted directly through the store API (``add_request`` of
   SQLiteStore / RedisStore, one call each, as the service does it), each a copy of the template
   with fresh ids (request_id, auth_req_id and its SHA-256, approval_id, nonce) and times: the
   same shape as real ones, without N HTTP round trips. The store's size is measured before and
   after (SQLite: database file + WAL, and the database file alone after a TRUNCATE checkpoint;
   Redis: ``INFO memory`` used_memory);
3. ``/token`` polls of 100 of those requests (spread over the whole store), round-robin at a
   fixed rate (``--poll-rate``, 50/s: each one polled every 2.0 s, twice the interval, so every
   answer should be ``authorization_pending``; a server stall longer than ~1.25 s would still
   earn ``slow_down``, which raises that id's interval for good, so a repeated run uses other
   ids); the first second is warm-up;
4. ``/bc-authorize`` with the usual valid request at a fixed rate (``--bc-rate``, 50/s; each one
   adds a pending request, so the "100" store holds up to ~1,600 by the end of this 30 s run);
   the first second is warm-up;
5. ``/bc-authorize`` at saturation with wrk (16 connections, ``--duration`` s) for req/s, if wrk
   is installed.

Steps 3 and 4 also run an fsync probe (4 KiB + fdatasync in the data directory every 0.1 s):
SQLite commits wait for the disk, so a slow disk (other work on a shared machine) shows there.
Steps 3 and 4 use an open-loop generator (asyncio + httpx, at most 16 connections): requests
start on schedule whatever the server is doing, so p99 is the latency at a given load rather
than the queueing at saturation. Every answer is checked (more than 1% unexpected withholds the
figure). The machine may be shared: before each measured run the script waits (``--max-wait``,
300 s) until other processes use less than a quarter of a core, and each run reports the CPU
used by the generator, the server and everything else ("DISTURBED" when other processes took
more than a quarter of a core). Goals reported against: p99 at 100,000 <= 1.2 x p99 at 100; <= 1.5 KB (1536 bytes) of
store per pending request.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import benchkit as bk
import httpx

from ciba_service.core.model import BackchannelRequest
from ciba_service.core.security import auth_req_id_key, new_id, time_prefix
from ciba_service.store import RedisStore, SQLiteStore, Store

POLLED_IDS = 100
GOAL_P99_RATIO = 1.2
GOAL_BYTES = 1536


@dataclass
class SizeRun:
    store: str
    size: int
    fill_seconds: float = 0.0
    bytes_per_request: float = 0.0
    bytes_note: str = ""
    main_bytes_per_request: float | None = None
    token: bk.LoadResult | None = None
    token_ok: bool = False
    bc: bk.LoadResult | None = None
    bc_ok: bool = False
    saturated: bk.LoadResult | None = None
    saturated_ok: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="100,100000", help="pending requests in the store (default 100,100000)")
    p.add_argument("--stores", default="sqlite,redis", help="sqlite and/or redis (redis needs redis-server)")
    p.add_argument("--duration", type=float, default=30, help="seconds per measured run (default 30)")
    p.add_argument("--poll-rate", type=float, default=50, help="token polls per second (default 50)")
    p.add_argument("--bc-rate", type=float, default=50, help="backchannel requests per second (default 50)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--no-saturation", action="store_true", help="skip the wrk /bc-authorize run")
    p.add_argument(
        "--max-wait", type=float, default=300, help="wait up to this long for other load to stop before a run (s)"
    )
    p.add_argument("--retries", type=int, default=2, help="runs disturbed by other load are repeated (default 2)")
    p.add_argument("--workdir", type=Path, default=None)
    return p.parse_args()


# the store ---------------------------------------------------------------------------------------
def sqlite_sizes(server: bk.CibaServer) -> int:
    return sum(p.stat().st_size for p in server.store_files() if p.exists())


def sqlite_checkpoint(server: bk.CibaServer) -> int:
    """TRUNCATE checkpoint from a connection of our own; returns the database file's size."""
    db = server.store_files()[0]
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return db.stat().st_size


def fill(
    store: Store, template: BackchannelRequest, count: int, expiry: int, sets: int
) -> tuple[list[list[str]], float]:
    """``count`` copies of ``template`` with fresh ids, one ``add_request`` each. Returns up to
    ``sets`` disjoint sets of POLLED_IDS auth_req_ids spread evenly over the fill (a repeated
    poll run needs ids no earlier run has polled: a ``slow_down`` raises an id's interval for
    good), and the seconds taken."""
    sets = max(1, min(sets, count // POLLED_IDS))
    step = max(1, count // (POLLED_IDS * sets))
    picked: list[str] = []
    start = time.perf_counter()
    for i in range(count):
        # The ids as the service makes them: behind their creation time (core/security.time_prefix).
        made = time_prefix()
        auth_req_id = made + new_id(32)
        now = int(time.time())
        store.add_request(
            dataclasses.replace(
                template,
                request_id=made + new_id(16),
                auth_req_id_hash=auth_req_id_key(auth_req_id),
                approval_id=made + new_id(32),
                nonce=new_id(16),
                created_at=now,
                expires_at=now + expiry,
            )
        )
        if i % step == 0 and len(picked) < POLLED_IDS * sets:
            picked.append(auth_req_id)
        if count >= 10_000 and (i + 1) % (count // 10) == 0:
            print(f"    filled {i + 1}/{count} ({time.perf_counter() - start:.0f} s)", flush=True)
    return [picked[k::sets] for k in range(sets)], time.perf_counter() - start


def redis_breakdown(redis: bk.RedisServer, request: BackchannelRequest, prefix: str = "ciba:") -> str:
    """MEMORY USAGE of one pending request's keys, and the ``pending`` zset's share per entry."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    keys = {
        "request record": f"{prefix}request:{request.request_id}",
        "auth_req_id index": f"{prefix}auth_req_id:{request.auth_req_id_hash}",
        "approval index": f"{prefix}approval:{request.approval_id}",
    }
    parts = [f"{name} {client.memory_usage(key)} B" for name, key in keys.items()]
    pending = f"{prefix}pending"
    entries = int(client.zcard(pending))
    if entries:
        usage = client.memory_usage(pending) or 0
        parts.append(f"pending zset {usage / entries:.0f} B/entry")
    record = keys["request record"]
    kind = client.type(record).decode()
    # a string since the compact record format; a hash (one field per dataclass field) before
    if kind == "string":
        shape = f"a string of {client.strlen(record)} bytes"
    else:
        shape = f"a {kind} of {client.hlen(record)} fields"
    return f"one request (MEMORY USAGE, without the keyspace's own per-key and TTL overhead): {', '.join(parts)}; " + (
        f"its record is {shape}"
    )


def real_request(server: bk.CibaServer) -> str:
    response = httpx.post(
        f"{server.url}/bc-authorize",
        data=bk.backchannel_form(),
        headers={"Authorization": server.authorization},
        timeout=30,
    )
    response.raise_for_status()
    auth_req_id: str = response.json()["auth_req_id"]
    return auth_req_id


# one size -----------------------------------------------------------------------------------
def run_size(
    args: argparse.Namespace,
    workdir: Path,
    store_kind: str,
    size: int,
    redis: bk.RedisServer | None,
) -> SizeRun:
    result = SizeRun(store_kind, size)
    expiry = 3600
    server = bk.CibaServer(
        workdir / f"{store_kind}-{size}",
        store=store_kind,
        redis_url=redis.url if redis else None,
        poll_interval=1,
        request_expiry=expiry,
    )
    with server:
        store: Store
        if store_kind == "redis":
            assert redis is not None
            store = RedisStore.from_url(redis.url)
        else:
            store = SQLiteStore(server.store_files()[0])
        first = real_request(server)
        template = store.find_request_by_auth_req_id(auth_req_id_key(first))
        assert template is not None, "the real request is not in the store"
        measure: Callable[[], int]
        if redis is not None:
            measure = redis.used_memory
        else:
            sqlite_checkpoint(server)
            measure = lambda: sqlite_sizes(server)  # noqa: E731
        before = measure()
        main_before = server.store_files()[0].stat().st_size if redis is None else 0
        print(f"  {store_kind}, {size} pending: filling {size - 1} through the store API ...", flush=True)
        id_sets, result.fill_seconds = fill(store, template, size - 1, expiry, sets=args.retries + 1)
        after = measure()
        filled = size - 1
        result.bytes_per_request = (after - before) / filled if filled else 0.0
        if redis is None:
            result.bytes_note = f"database + WAL {before} -> {after} bytes"
            main_after = sqlite_checkpoint(server)
            result.main_bytes_per_request = (main_after - main_before) / filled if filled else 0.0
            result.bytes_note += f"; database alone after checkpoint {main_before} -> {main_after} bytes"
        else:
            result.bytes_note = f"used_memory {before} -> {after} bytes; " + redis_breakdown(redis, template)
        if isinstance(store, SQLiteStore):
            store.close()
        id_sets[0] = [first, *id_sets[0]][:POLLED_IDS]
        if len(id_sets) <= args.retries:
            print(f"    (only {len(id_sets)} set(s) of {POLLED_IDS} ids: a repeated poll run reuses them)")
        warm = round(args.poll_rate)  # the first second of polls: warm-up, not counted
        attempts = iter(range(1_000_000))
        ids = id_sets[0]

        def poll_run() -> bk.LoadResult:
            nonlocal ids
            ids = id_sets[next(attempts) % len(id_sets)]
            return bk.paced_load(
                f"{server.url}/token",
                authorization=server.authorization,
                bodies=bk.token_bodies(ids),
                rate=args.poll_rate,
                duration=args.duration + warm / args.poll_rate,
                connections=args.connections,
                skip_first=warm,
                server_pids=server.pids(),
                fsync_probe=server.data_dir,
            )

        token = measured(args, poll_run)
        result.token = token
        result.token_ok, _ = bk.check_answers(token, "400:authorization_pending")
        print_run(
            "token poll",
            token,
            "400:authorization_pending",
            f"{len(ids)} ids, each every {len(ids) / args.poll_rate:.2f} s",
        )
        warm = round(args.bc_rate)
        bc = measured(
            args,
            lambda: bk.paced_load(
                f"{server.url}/bc-authorize",
                authorization=server.authorization,
                bodies=[bk.backchannel_body()],
                rate=args.bc_rate,
                duration=args.duration + warm / args.bc_rate,
                connections=args.connections,
                skip_first=warm,
                server_pids=server.pids(),
                fsync_probe=server.data_dir,
            ),
        )
        result.bc = bc
        result.bc_ok, _ = bk.check_answers(bc, "200:auth_req_id")
        print_run("bc-authorize", bc, "200:auth_req_id")
        if not args.no_saturation and bk.wrk_available():
            saturated = measured(
                args,
                lambda: bk.run_wrk(
                    f"{server.url}/bc-authorize",
                    mode="body",
                    authorization=server.authorization,
                    arg=bk.backchannel_body(),
                    connections=args.connections,
                    duration=args.duration,
                    server_pids=server.pids(),
                ),
            )
            result.saturated = saturated
            result.saturated_ok, _ = bk.check_answers(saturated, "200:auth_req_id")
            print_run("bc (wrk, max)", saturated, "200:auth_req_id")
        print(f"    fill: {result.fill_seconds:.1f} s; store growth: {result.bytes_note}", flush=True)
    return result


def measured(args: argparse.Namespace, run: Callable[[], bk.LoadResult]) -> bk.LoadResult:
    """``run`` on a quiet machine; a run disturbed by other processes is tried again (up to
    ``--retries`` times) and the least disturbed one kept."""
    return bk.least_disturbed(run, retries=args.retries, max_wait=args.max_wait, log=lambda m: print(f"    ({m})"))


def print_run(label: str, result: bk.LoadResult, expected: str, extra: str = "") -> None:
    _, text = bk.describe(result, expected)
    notes = "; ".join(x for x in (result.note, extra) if x)
    print(f"    {label:<14}{text}" + (f"  ({notes})" if notes else ""), flush=True)


# verdicts -------------------------------------------------------------------------------------
def p99_verdict(name: str, small: SizeRun, large: SizeRun, pick: str) -> str:
    a: bk.LoadResult | None = getattr(small, pick)
    b: bk.LoadResult | None = getattr(large, pick)
    ok_a: bool = getattr(small, pick + "_ok")
    ok_b: bool = getattr(large, pick + "_ok")
    label = f"p99 {name}: {small.size} -> {large.size}"
    if a is None or b is None or not (ok_a and ok_b):
        return f"{label}: withheld (answers not as expected)"
    ratio = b.p99_ms / a.p99_ms
    verdict = "met" if ratio <= GOAL_P99_RATIO else "NOT met"
    text = f"{label}: {a.p99_ms:.2f} ms -> {b.p99_ms:.2f} ms = {ratio:.2f}x (goal <= {GOAL_P99_RATIO}x: {verdict})"
    if max(a.others_load, b.others_load) > bk.BUSY_THRESHOLD:
        text += " (a run was disturbed by other load: see above)"
    stalls = [(r.fsync_max_ms, r.p99_ms) for r in (a, b) if r.fsync_max_ms is not None]
    if any(worst >= p99 / 2 for worst, p99 in stalls):
        text += (
            f"\n    but the disk itself stalled fsyncs for up to {max(w for w, _ in stalls):.0f} ms during these runs "
            "(fsync probe), as long as these p99s: this compares the disk's stalls, not the store's size"
        )
    return text


def bytes_verdict(run: SizeRun) -> str:
    def judge(value: float) -> str:
        return "met" if value <= GOAL_BYTES else "NOT met"

    text = f"bytes per pending request at {run.size}: {run.bytes_per_request:.0f}"
    if run.main_bytes_per_request is not None:
        text += (
            f" (database + WAL; {judge(run.bytes_per_request)}), {run.main_bytes_per_request:.0f}"
            f" (database file alone after a checkpoint; {judge(run.main_bytes_per_request)})"
        )
    else:
        text += f" (used_memory; {judge(run.bytes_per_request)})"
    return text + f"  [goal <= {GOAL_BYTES}]"


def main() -> None:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pending-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(bk.machine_line() + "; generator: asyncio + httpx, open loop (fixed rate), in this process")
    print(
        f"ciba-service, one worker; per run {args.duration:g} s; token polls at {args.poll_rate:g}/s over "
        f"{POLLED_IDS} pending ids; bc-authorize at {args.bc_rate:g}/s; at most {args.connections} connections; "
        f"work files in {workdir}",
        flush=True,
    )
    results: dict[str, list[SizeRun]] = {}
    for kind in stores:
        if kind == "redis" and shutil.which("redis-server") is None:
            print("redis: skipped (redis-server not on PATH)")
            continue
        runs: list[SizeRun] = []
        for size in sizes:
            if kind == "redis":
                with bk.RedisServer(workdir / f"redis-{size}") as redis:
                    if size == sizes[0]:
                        print(
                            f"redis: a private redis-server {redis.version()} on 127.0.0.1:{redis.port}, "
                            '--save "" --appendonly no --maxmemory-policy noeviction, one fresh server per size'
                        )
                    runs.append(run_size(args, workdir, kind, size, redis))
            else:
                if size == sizes[0]:
                    print(
                        "sqlite: the service's SQLite store (WAL, synchronous=NORMAL; decisions and token "
                        "issues flushed) in its data_dir"
                    )
                runs.append(run_size(args, workdir, kind, size, None))
        results[kind] = runs

    print("\nsummary:")
    for kind, runs in results.items():
        for run in runs:
            cells = []
            for name, res, ok in (("token", run.token, run.token_ok), ("bc-authorize", run.bc, run.bc_ok)):
                cells.append(f"{name} p50 {res.p50_ms:.2f} p99 {res.p99_ms:.2f} ms" if res and ok else f"{name} -")
                if res and ok and res.others_load > bk.BUSY_THRESHOLD:
                    cells[-1] += " (disturbed)"
            if run.saturated is not None:
                sat = f"{run.saturated.rps:.0f} req/s" if run.saturated_ok else "-"
                cells.append(f"bc-authorize max {sat}")
            print(f"  {kind:<6} {run.size:>7} pending: " + "; ".join(cells))
        if len(runs) >= 2:
            small, large = runs[0], runs[-1]
            print(f"  {kind}: " + p99_verdict("/token poll", small, large, "token"))
            print(f"  {kind}: " + p99_verdict("/bc-authorize", small, large, "bc"))
        for run in runs:
            print(f"  {kind}: " + bytes_verdict(run))


if __name__ == "__main__":
    main()
