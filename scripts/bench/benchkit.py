"""Shared pieces of the benchmarks in ``scripts/`` (``bench_backchannel.py``, ``bench_pending.py``).

- :class:`CibaServer`: ciba-service run as an operator runs it: a TOML configuration, a client
  secret from ``clients hash-secret``, ``serve --config --port [--workers N]`` as a subprocess,
  ``users add alice`` and a development software passkey enrolled over HTTP.
- :class:`NodeReference`: panva/node-oidc-provider (``scripts/bench/oidc-provider``), installed
  with ``npm install`` into that folder on first use.
- :class:`RedisServer`: a private ``redis-server`` on a free loopback port.
- :func:`run_wrk`: wrk with ``wrk_oauth.lua``, which counts every answer by status and OAuth error
  code; :func:`check_answers` turns those counts into a verdict.
- :func:`paced_load`: an open-loop (fixed-rate) load generator on asyncio + httpx, for latency at
  a given request rate rather than at saturation.
- :func:`generator_ceiling`: wrk with the same Lua script against a trivial HTTP server, to show
  what the generator alone can do on this machine.

Everything listens on 127.0.0.1 only. Not run on its own except as
``python scripts/bench/benchkit.py trivial-server PORT`` (used by :func:`generator_ceiling`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LUA = HERE / "wrk_oauth.lua"
NODE_DIR = HERE / "oidc-provider"

CLIENT_ID = "bench-agent"
USERNAME = "alice"
BINDING_MESSAGE = "BM-1"
AUTHORIZATION_DETAILS: list[dict[str, Any]] = [
    {
        "type": "iam_policy",
        "actions": ["update"],
        "identifier": "policy-42",
        "locations": ["https://iam.example.test/"],
    }
]
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
# How many answers may differ from the expected one before a figure is withheld.
MAX_UNEXPECTED = 0.01


def backchannel_form() -> dict[str, str]:
    return {
        "scope": "openid",
        "login_hint": USERNAME,
        "binding_message": BINDING_MESSAGE,
        "authorization_details": json.dumps(AUTHORIZATION_DETAILS, separators=(",", ":")),
    }


def backchannel_body() -> str:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in backchannel_form().items())


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(
    url: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 15) -> None:
    """SIGTERM the process group this harness started (the server and its workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def cpu_seconds(pids: Sequence[int]) -> float:
    """user + system CPU time of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[float, float]:
    """(CPU time all processes on the machine have used: user, nice, system, irq, softirq,
    steal; of which irq + softirq), seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, (irq + softirq) / tick


_PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class _Proc:
    ppid: int
    started: int
    cpu: float  # utime + stime
    reaped: float  # cutime + cstime: children it has waited for
    kthread: bool


def _process_table() -> dict[int, _Proc]:
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, _Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        f = text.rsplit(")", 1)[1].split()
        # f[0] is stat field 3 (state): ppid 4, flags 9, utime 14, stime 15, cutime 16, cstime 17,
        # starttime 22.
        table[int(entry.name)] = _Proc(
            ppid=int(f[1]),
            started=int(f[19]),
            cpu=(int(f[11]) + int(f[12])) / tick,
            reaped=(int(f[13]) + int(f[14])) / tick,
            kthread=bool(int(f[6]) & _PF_KTHREAD),
        )
    return table


def _descendants(table: dict[int, _Proc], root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, proc in table.items():
        kids.setdefault(proc.ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for kid in kids.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


class OtherLoad:
    """CPU used between start and :meth:`stop` by the kernel (kernel threads, irq, softirq: the
    block I/O of the servers' fsyncs lands here) and by everything else that is not this
    benchmark's own process tree (other people's builds and tests on a shared machine): the
    machine's total less those two less our own processes (this one, the children it waited
    for, such as wrk, and the live servers)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _cpu_times()
        self._table0 = _process_table()

    def stop(self) -> tuple[float, float]:
        """(cores used by other processes, cores used by the kernel), averaged over the span."""
        table = _process_table()
        total, irq = (b - a for a, b in zip(self._machine0, _cpu_times(), strict=True))
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        me = os.getpid()
        own = _descendants(table, me)
        kernel, ours = irq, 0.0
        for pid, proc in table.items():
            before = self._table0.get(pid)
            same = before is not None and before.started == proc.started
            used = proc.cpu - before.cpu if before is not None and same else proc.cpu
            if proc.kthread:
                kernel += used if same else 0.0
            elif pid in own:
                ours += used
        if me in table and me in self._table0:
            ours += table[me].reaped - self._table0[me].reaped
        others = total - kernel - ours
        return max(others, 0.0) / elapsed, max(kernel, 0.0) / elapsed


class FsyncProbe:
    """A thread that writes 4 KiB and fdatasyncs a scratch file in ``directory`` every
    ``period`` s: how long the disk makes an fsync wait (a SQLite commit waits as long). Its
    own load is small next to the store's commits."""

    def __init__(self, directory: Path, period: float = 0.1) -> None:
        self._path = directory / ".fsync-probe"
        self._period = period
        self._stop = threading.Event()
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = b"\0" * 4096
            while not self._stop.wait(self._period):
                t0 = time.perf_counter()
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)
                self.samples.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
            self._path.unlink(missing_ok=True)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return ""
        ordered = sorted(self.samples)
        return (
            f"fsync probe: median {_percentile(ordered, 50) * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)} fsyncs"
        )


# More than this share of one core used by processes that are not part of a run (other
# people's builds and tests on a shared machine) marks the run's figures as disturbed.
BUSY_THRESHOLD = 0.25


def wait_quiet(max_wait: float, *, sample: float = 2.0) -> str:
    """Before a run, while our servers are idle: wait (up to ``max_wait`` s) until other user
    processes use less than BUSY_THRESHOLD of a core. Returns a note ('' when it was quiet)."""
    start = time.monotonic()
    while True:
        meter = OtherLoad()
        time.sleep(sample)
        load, _ = meter.stop()
        waited = time.monotonic() - start
        if load < BUSY_THRESHOLD:
            return f"waited {waited:.0f} s for the machine to be quiet" if waited > sample + 1 else ""
        if waited >= max_wait:
            return f"machine still busy after {waited:.0f} s ({load:.2f} cores used by other processes)"


def least_disturbed(
    run: Callable[[], LoadResult], *, retries: int, max_wait: float, log: Callable[[str], None]
) -> LoadResult:
    """Wait for a quiet machine, then ``run``; while the run was disturbed (other processes used
    more than BUSY_THRESHOLD of a core meanwhile) and retries are left, do it again. Returns the
    least disturbed run."""
    best: LoadResult | None = None
    for attempt in range(retries + 1):
        note = wait_quiet(max_wait)
        if note:
            log(note)
        result = run()
        if best is None or result.others_load < best.others_load:
            best = result
        if result.others_load <= BUSY_THRESHOLD:
            break
        if attempt < retries:
            log(f"disturbed: other processes used {result.others_load:.2f} cores during the run; trying again")
    assert best is not None
    return best


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


# ciba-service ---------------------------------------------------------------------------------
def ciba_cli() -> list[str]:
    return [sys.executable, "-m", "ciba_service"]


def ciba_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # The configuration is the TOML file alone.
    for key in [k for k in env if k.startswith("CIBA_")]:
        del env[key]
    return env


def generate_client_secret() -> tuple[str, str]:
    """``ciba-service clients hash-secret``: (client_secret, client_secret_hash)."""
    # stdout is TOML to paste; the generated secret goes to a new 0600 file (never stdout).
    with tempfile.TemporaryDirectory() as tmp:
        secret_file = Path(tmp) / "client.secret"
        out = subprocess.run(
            [*ciba_cli(), "clients", "hash-secret", "--secret-file", str(secret_file)],
            check=True,
            capture_output=True,
            text=True,
            env=ciba_env(),
        )
        return secret_file.read_text().strip(), tomllib.loads(out.stdout)["client_secret_hash"]


@dataclass
class CibaServer:
    """ciba-service from a TOML file, on a free port, with user ``alice`` holding a passkey."""

    workdir: Path
    workers: int = 1
    store: str = "sqlite"
    redis_url: str | None = None
    poll_interval: int = 1
    request_expiry: int = 300
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    secret: str = ""

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def url(self) -> str:
        """Where the load goes: loopback by address (wrk does not need a name lookup)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config(self) -> Path:
        return self.workdir / "ciba.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "serve.log"

    @property
    def authorization(self) -> str:
        return basic_auth(CLIENT_ID, self.secret)

    def write_config(self) -> None:
        self.secret, secret_hash = generate_client_secret()
        lines = [
            f'issuer = "{self.base}"',
            f'data_dir = "{self.data_dir}"',
            'notifier = "none"',
            f"poll_interval = {self.poll_interval}",
            f"request_expiry_default = {self.request_expiry}",
            f"request_expiry_max = {self.request_expiry}",
        ]
        if self.store == "redis":
            lines += ['store = "redis"', f'redis_url = "{self.redis_url}"']
        lines += [
            "",
            "[[clients]]",
            f'client_id = "{CLIENT_ID}"',
            f'client_secret_hash = "{secret_hash}"',
            'authorization_details_types = ["iam_policy"]',
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join(lines) + "\n")

    def __enter__(self) -> CibaServer:
        self.write_config()
        cmd = [*ciba_cli(), "serve", "--config", str(self.config), "--port", str(self.port)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=ciba_env(), start_new_session=True
            )
        try:
            wait_http(f"{self.url}/healthz", timeout=60, proc=self.proc, log=self.log)
            self.enroll_alice()
        except BaseException:
            stop_process(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def enroll_alice(self) -> None:
        from ciba_service.agent import device
        from ciba_service.agent.softauthn import SoftAuthenticator

        added = subprocess.run(
            [*ciba_cli(), "users", "add", USERNAME, "--config", str(self.config)],
            check=True,
            capture_output=True,
            text=True,
            env=ciba_env(),
        )
        link = added.stdout.strip().splitlines()[-1]
        with httpx.Client(timeout=30) as http:
            device.enroll(http, link, SoftAuthenticator())

    def pids(self) -> list[int]:
        """The processes serving requests: the one server, or the workers under uvicorn's supervisor."""
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        deadline = time.monotonic() + 10
        while True:
            # The supervisor's children: the workers (and multiprocessing's resource tracker).
            workers = [p for p in children(self.proc.pid) if b"resource_tracker" not in _cmdline(p)]
            if len(workers) >= self.workers or time.monotonic() > deadline:
                return workers

    def store_files(self) -> list[Path]:
        db = self.data_dir / "ciba.sqlite3"
        return [db, db.with_name(db.name + "-wal")]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# node-oidc-provider ---------------------------------------------------------------------------
def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def npm_install() -> None:
    """``npm install`` into scripts/bench/oidc-provider once (node_modules is kept and gitignored)."""
    marker = NODE_DIR / "node_modules" / "oidc-provider" / "package.json"
    lock = NODE_DIR / "package-lock.json"
    if marker.exists() and (not lock.exists() or marker.stat().st_mtime >= (NODE_DIR / "package.json").stat().st_mtime):
        return
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def oidc_provider_version() -> str:
    data = json.loads((NODE_DIR / "node_modules" / "oidc-provider" / "package.json").read_text())
    return str(data["version"])


@dataclass
class NodeReference:
    """node-oidc-provider with CIBA (poll) + RAR (iam_policy), the in-memory adapter, one process."""

    workdir: Path
    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=lambda: base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))
    request_expiry: int = 300
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorization(self) -> str:
        return basic_auth(CLIENT_ID, self.secret)

    @property
    def log(self) -> Path:
        return self.workdir / "oidc-provider.log"

    def __enter__(self) -> NodeReference:
        npm_install()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "node",
            "server.mjs",
            "--port",
            str(self.port),
            "--request-expiry",
            str(self.request_expiry),
        ]
        env = {**os.environ, "BENCH_CLIENT_SECRET": self.secret}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=NODE_DIR, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            wait_http(f"{self.url}/.well-known/openid-configuration", timeout=30, proc=self.proc, log=self.log)
            discovery = httpx.get(f"{self.url}/.well-known/openid-configuration").json()
            self.backchannel_path = "/" + discovery["backchannel_authentication_endpoint"].split("/", 3)[3]
            self.token_path = "/" + discovery["token_endpoint"].split("/", 3)[3]
        except BaseException:
            stop_process(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# redis ------------------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server: no persistence, ``maxmemory-policy noeviction`` (the service refuses
    any other policy), on a free loopback port, in its own directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            str(self.workdir),
        ]
        with (self.workdir / "redis.log").open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    stop_process(self.proc)
                    raise
                time.sleep(0.05)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def used_memory(self) -> int:
        import redis

        info: dict[str, Any] = redis.Redis.from_url(self.url).info("memory")
        return int(info["used_memory"])

    def version(self) -> str:
        import redis

        info: dict[str, Any] = redis.Redis.from_url(self.url).info("server")
        return str(info["redis_version"])


# wrk ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadResult:
    """One run: how many requests, how long, latency percentiles (ms), answers by status:code."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    counts: dict[str, int]
    socket_errors: dict[str, int] = field(default_factory=dict)
    note: str = ""
    # Cores used meanwhile by processes outside the run (neither the server nor the generator).
    others_load: float = 0.0
    # The longest fdatasync of the FsyncProbe during the run (ms), when one ran.
    fsync_max_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    mode: str,
    authorization: str,
    arg: str,
    connections: int,
    duration: float,
    threads: int = 1,
    server_pids: Sequence[int] = (),
) -> LoadResult:
    """wrk -t THREADS -c CONNECTIONS -d DURATION with wrk_oauth.lua (``mode`` body or poll).
    The CPU time used meanwhile by wrk and by ``server_pids`` goes into the result's note."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        mode,
        authorization,
        arg,
        str(threads),
    ]
    server_before = cpu_seconds(server_pids)
    meter = OtherLoad()
    before = os.times()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    after = os.times()
    server_cpu = cpu_seconds(server_pids) - server_before
    others, kernel = meter.stop()
    wrk_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    seconds = max(data["duration_us"] / 1e6, 1e-9)
    lat = data["latency_us"]
    errors = {k: int(v) for k, v in data["errors"].items() if v}
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=lat["p50"] / 1000,
        p99_ms=lat["p99"] / 1000,
        counts={k: int(v) for k, v in data["counts"].items()},
        socket_errors=errors,
        note=(
            f"CPU: wrk {wrk_cpu / seconds * 100:.0f}%"
            + (f", server {server_cpu / seconds * 100:.0f}%" if server_pids else "")
            + f", kernel {kernel * 100:.0f}%, other processes {others * 100:.0f}% of one core"
            + (" (!) DISTURBED by other load" if others > BUSY_THRESHOLD else "")
        ),
        others_load=others,
    )


def check_answers(result: LoadResult, expected: str) -> tuple[bool, str]:
    """(figure usable, one-line account of the answers). Socket errors (connect, read, write,
    timeout) count as unexpected answers too."""
    answered = sum(result.counts.values())
    failed = sum(v for k, v in result.socket_errors.items() if k != "status")
    total = answered + failed
    good = result.counts.get(expected, 0)
    bad = total - good
    parts = [f"{k}={v}" for k, v in sorted(result.counts.items(), key=lambda kv: -kv[1])]
    parts += [f"socket_{k}={v}" for k, v in result.socket_errors.items() if k != "status"]
    account = ", ".join(parts) or "no answers"
    ok = total > 0 and bad <= MAX_UNEXPECTED * total
    if not ok:
        share = (bad / total * 100) if total else 100.0
        account += f"  -> {share:.1f}% not {expected}: FIGURE WITHHELD"
    return ok, account


# open-loop load (fixed rate) -----------------------------------------------------------------
def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


async def _paced(
    url: str,
    *,
    authorization: str,
    bodies: Sequence[str],
    rate: float,
    count: int,
    connections: int,
    skip_first: int,
    server_pids: Sequence[int],
) -> LoadResult:
    headers = {"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"}
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (start offset, latency) of each counted request
    counts: Counter[str] = Counter()
    lag_max = 0.0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=bodies[i % len(bodies)], headers=headers)
            except httpx.HTTPError as exc:
                if i >= skip_first:
                    counts[f"error:{type(exc).__name__}"] += 1
                return
            if i < skip_first:
                return
            latencies.append(time.perf_counter() - t0)
            timeline.append((t0 - start, latencies[-1]))
            counts[_answer_key(response)] += 1

        start = time.perf_counter()
        cpu_before = (cpu_seconds(server_pids), cpu_seconds([os.getpid()]))
        meter = OtherLoad()
        tasks = []
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag_max = max(lag_max, -delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(server_pids) - cpu_before[0]
        own_cpu = cpu_seconds([os.getpid()]) - cpu_before[1]
        others, kernel = meter.stop()
    latencies.sort()
    cpu = f"CPU: generator {own_cpu / elapsed * 100:.0f}%, server {server_cpu / elapsed * 100:.0f}%, "
    cpu += f"kernel {kernel * 100:.0f}%, other processes {others * 100:.0f}% of one core"
    if others > BUSY_THRESHOLD:
        cpu += " (!) DISTURBED by other load"
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed - skip_first / rate,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
        counts=dict(counts),
        note=f"generator max lag behind schedule {lag_max * 1000:.1f} ms; {slow_bursts(timeline)}; {cpu}",
        others_load=others,
    )


def slow_bursts(timeline: Sequence[tuple[float, float]], share: float = 0.01, gap: float = 0.25) -> str:
    """When do the slowest ``share`` of requests start? Grouped into bursts (starts less than
    ``gap`` s apart), with the mean spacing of the bursts: a periodic stall shows as regular
    spacing."""
    if len(timeline) < 100:
        return ""
    ranked = sorted(timeline, key=lambda x: x[1], reverse=True)
    slow = sorted(t for t, _ in ranked[: max(1, round(len(timeline) * share))])
    bursts = [slow[0]]
    for t in slow[1:]:
        if t - bursts[-1] > gap:
            bursts.append(t)
        else:
            bursts[-1] = t  # extend the burst to its last start
    floor = ranked[len(slow) - 1][1] * 1000
    text = f"slowest {share:.0%} (>= {floor:.1f} ms) in {len(bursts)} burst{'s' if len(bursts) > 1 else ''}"
    if len(bursts) >= 3:
        spacing = (bursts[-1] - bursts[0]) / (len(bursts) - 1)
        text += f", every {spacing:.2f} s on average"
    return text


def _answer_key(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}:other"
    if isinstance(body, dict):
        if "error" in body:
            return f"{response.status_code}:{body['error']}"
        if "auth_req_id" in body:
            return f"{response.status_code}:auth_req_id"
    return f"{response.status_code}:other"


def paced_load(
    url: str,
    *,
    authorization: str,
    bodies: Sequence[str],
    rate: float,
    duration: float,
    connections: int = 16,
    skip_first: int = 0,
    server_pids: Sequence[int] = (),
    fsync_probe: Path | None = None,
) -> LoadResult:
    """POST ``bodies`` (round-robin) at a fixed ``rate`` for ``duration`` seconds (open loop:
    each request starts on schedule, whatever the previous ones are doing), through at most
    ``connections`` keep-alive connections. Latency is measured per request from send to answer;
    the first ``skip_first`` requests are a warm-up and are not counted."""
    count = max(1, round(rate * duration))
    # No garbage-collection pauses in the generator during the run: they would show as latency
    # (this process has imported the service's packages, so a full collection takes a while).
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        if fsync_probe is None:
            return _run_paced(url, authorization, bodies, rate, count, connections, skip_first, server_pids)
        with FsyncProbe(fsync_probe) as probe:
            result = _run_paced(url, authorization, bodies, rate, count, connections, skip_first, server_pids)
        worst = max(probe.samples) * 1000 if probe.samples else None
        return dataclasses.replace(result, note=f"{result.note}; {probe.summary()}", fsync_max_ms=worst)
    finally:
        gc.enable()
        gc.unfreeze()


def _run_paced(
    url: str,
    authorization: str,
    bodies: Sequence[str],
    rate: float,
    count: int,
    connections: int,
    skip_first: int,
    server_pids: Sequence[int],
) -> LoadResult:
    return asyncio.run(
        _paced(
            url,
            authorization=authorization,
            bodies=bodies,
            rate=rate,
            count=count,
            connections=connections,
            skip_first=skip_first,
            server_pids=server_pids,
        )
    )


async def _create_pending(url: str, authorization: str, count: int, connections: int) -> list[str]:
    headers = {"Authorization": authorization}
    ids: list[str] = []
    failures: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    queue = iter(range(count))
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            for _ in queue:
                response = await client.post(url, data=backchannel_form(), headers=headers)
                if response.status_code == 200 and "auth_req_id" in response.json():
                    ids.append(response.json()["auth_req_id"])
                else:
                    failures[_answer_key(response)] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    if failures:
        raise RuntimeError(f"creating pending requests at {url}: {dict(failures)}")
    return ids


def create_pending(url: str, *, authorization: str, count: int, connections: int = 16) -> list[str]:
    """``count`` real backchannel requests over HTTP; returns their auth_req_ids."""
    return asyncio.run(_create_pending(url, authorization, count, connections))


def token_bodies(ids: Sequence[str]) -> list[str]:
    return [f"grant_type={quote(CIBA_GRANT, safe='')}&auth_req_id={quote(i, safe='')}" for i in ids]


# the generator's own ceiling ----------------------------------------------------------------
def _trivial_server(port: int) -> None:
    """A minimal keep-alive HTTP/1.1 server (uvloop + httptools when present) answering every
    request with a small JSON body, for measuring what wrk alone can drive."""
    import httptools

    body = b'{"auth_req_id":"x"}'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(answer)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port)
        await server.serve_forever()

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())


def generator_ceiling(*, connections: int, duration: float, threads: int) -> LoadResult:
    """wrk + wrk_oauth.lua (answers parsed and counted, as in the real runs) against the trivial
    server above. The trivial server (one Python process) shares the 2 cores with wrk, so this
    is a lower bound of what the generator can drive."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "trivial-server", str(port)], start_new_session=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=10, proc=proc)
        return run_wrk(
            f"http://127.0.0.1:{port}/",
            mode="body",
            authorization="Basic eDp5",
            arg=backchannel_body(),
            connections=connections,
            duration=duration,
            threads=threads,
            server_pids=[proc.pid],
        )
    finally:
        stop_process(proc)


# reporting ---------------------------------------------------------------------------------------
def describe(result: LoadResult, expected: str) -> tuple[bool, str]:
    ok, account = check_answers(result, expected)
    figures = f"{result.rps:8.1f} req/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
    if not ok:
        figures = "   (withheld: answers not as expected)"
    return ok, f"{figures}  [{result.requests} requests in {result.seconds:.1f} s; {account}]"


def machine_line() -> str:
    cores = os.cpu_count() or 0
    return f"machine: {cores} cores; the load generator runs on the same cores as the servers"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "trivial-server":
        _trivial_server(int(sys.argv[2]))
    else:
        sys.exit(__doc__)
