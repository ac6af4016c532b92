"""The operator's first hour at the command line: which configuration a command uses, commands
that only read never create an empty data directory, a user's mistake on any path is one line
and a non-zero exit (never a traceback), users and passkeys are managed and audited, and every
command's help has examples and no ``<bool>`` placeholders."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from ciba_service import cli
from ciba_service.web.serving import free_port

CLI = [sys.executable, "-m", "ciba_service"]
ROOT = Path(__file__).resolve().parents[2]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no CIBA_* variables, a HOME and XDG directory of the
    test's own (so no configuration of the machine's user is found), this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBA_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(cwd),
        check=False,
    )


CONFIG = """issuer = "http://localhost:8000"
data_dir = "data"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ./ciba-service.toml and a user alice (no passkey yet)."""
    root = tmp_path_factory.mktemp("site")
    (root / "ciba-service.toml").write_text(CONFIG)
    added = run("users", "add", "alice", cwd=root)
    assert added.returncode == 0, added.stderr
    return root


# which configuration ------------------------------------------------------------------------------
def test_the_config_in_the_working_directory_is_found(site: Path) -> None:
    listed = run("users", "list", cwd=site)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("alice\t")
    assert listed.stderr == ""  # found: nothing to warn about
    assert (site / "data" / "ciba.sqlite3").is_file()  # data_dir relative to the file


def test_ciba_config_from_another_directory_finds_the_same_data(site: Path, tmp_path: Path) -> None:
    # data_dir = "data" is relative to the file, not to where the command runs.
    listed = run("users", "list", cwd=tmp_path, env=clean_env(tmp_path, CIBA_CONFIG=str(site / "ciba-service.toml")))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("alice\t")
    assert not (tmp_path / "data").exists()


def test_the_user_config_directory_is_searched(site: Path, tmp_path: Path) -> None:
    xdg = tmp_path / ".config" / "ciba-service"
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text(f'data_dir = "{site / "data"}"\n')
    listed = run("users", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("alice\t")


def test_without_a_config_the_data_directory_is_named_and_reads_create_nothing(tmp_path: Path) -> None:
    for args in (["users", "list"], ["users", "enroll-link", "alice"], ["receipts", "verify", "r1"]):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2, result
        first, second = result.stderr.strip().splitlines()
        assert first.startswith("no configuration file (--config, CIBA_CONFIG, ciba-service.toml, ")
        assert first.endswith(f"using the defaults, data directory {tmp_path / '.ciba-data'}")
        assert second.startswith(f"ciba-service: no service data in {tmp_path / '.ciba-data'} (no configuration file)")
        assert not (tmp_path / ".ciba-data").exists()
    added = run("users", "add", "bob", cwd=tmp_path)  # a command that creates may create it
    assert added.returncode == 0, added.stderr
    assert (tmp_path / ".ciba-data" / "ciba.sqlite3").is_file()


# a user's mistake: one line, non-zero, no traceback -------------------------------------------------
@dataclass
class Case:
    name: str
    args: list[str]
    code: int
    message: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""
    in_site: bool = False  # run where alice exists (the module's site)
    usage: bool = False  # a usage error: click says it with the usage lines


UNUSED = free_port()  # nothing listens there
AGENT = ["agent", "request", "--client-id", "ops-agent", "--login-hint", "alice"]
SECRET = {"CIBA_AGENT_CLIENT_SECRET": "s"}
ACTION = '[{"type": "iam_policy", "actions": ["read"], "identifier": "p"}]'


def with_client(line: str) -> str:
    return f'{CONFIG}[[clients]]\nclient_id = "ops-agent"\n{line}\n'


CASES = [
    Case("details-file-missing", [*AGENT, "-a", "@missing.json"], 2,
         "cannot read --authorization-details file missing.json: No such file or directory", env=SECRET),
    Case("details-not-json", [*AGENT, "-a", "{oops"], 2, "--authorization-details value is not JSON", env=SECRET),
    Case("details-file-not-json", [*AGENT, "-a", "@a.json"], 2, "--authorization-details file a.json is not JSON",
         files={"a.json": "nope"}, env=SECRET),
    Case("details-not-an-array", [*AGENT, "-a", '{"type": "x"}'], 2, "must be a JSON array of objects", env=SECRET),
    Case("no-client-secret", [*AGENT, "-a", ACTION], 2, "set CIBA_AGENT_CLIENT_SECRET"),
    Case("no-client-id", ["agent", "request", "--login-hint", "alice", "-a", ACTION], 2,
         "Missing option '--client-id'", env=SECRET, usage=True),
    Case("server-unreachable", [*AGENT, "-a", ACTION, "--issuer", f"http://127.0.0.1:{UNUSED}"], 1,
         f"cannot reach http://127.0.0.1:{UNUSED}: ConnectError", env=SECRET),
    Case("issuer-not-a-url", [*AGENT, "-a", ACTION, "--issuer", "localhost"], 1, "cannot reach localhost", env=SECRET),
    Case("dpop-key-not-a-key", [*AGENT, "-a", ACTION, "--dpop-key", "k.pem"], 2,
         "--dpop-key k.pem is not a P-256 private key in PEM", files={"k.pem": "not a key"}, env=SECRET),
    Case("config-missing", ["users", "list", "--config", "nope.toml"], 2,
         "configuration error: configuration file nope.toml not found (--config)"),
    Case("ciba-config-missing", ["users", "list"], 2, "configuration file nope.toml not found (CIBA_CONFIG)",
         env={"CIBA_CONFIG": "nope.toml"}),
    Case("config-not-toml", ["users", "list"], 2,
         'not valid TOML: Invalid value (at line 2, column 22); a text value must be quoted: '
         'client_secret_hash = "scrypt$1"',
         files={"ciba-service.toml": "[[clients]]\nclient_secret_hash = scrypt$1\n"}),
    Case("top-level-key-after-clients", ["users", "list"], 2,
         "clients[0].environment (client 'ops-agent'): `environment` is a top-level setting, but it comes after the "
         "[[clients]] header on line 3, and in TOML a key after a table header belongs to that table",
         files={"ciba-service.toml": with_client('environment = "development"')}),
    Case("secret-instead-of-hash", ["users", "list"], 2,
         "clients[0].client_secret (client 'ops-agent'): the service never stores a client's secret, only its hash",
         files={"ciba-service.toml": with_client('client_secret = "hunter2"')}),
    Case("top-level-key-after-a-type", ["users", "list"], 2,
         "authorization_details_types.db.notifier: `notifier` is a top-level setting, but it comes after the "
         "[authorization_details_types.db] header",
         files={"ciba-service.toml": '[authorization_details_types.db]\ndescription = "d"\nactions = ["a"]\n'
                'notifier = "none"\n'}),
    Case("unknown-key", ["users", "list"], 2, "ciba-service.toml: isuer: unknown key; did you mean `issuer`?",
         files={"ciba-service.toml": 'isuer = "http://localhost:8000"\n'}),
    Case("bad-value-from-environment", ["users", "list"], 2,
         "environment variable CIBA_ACCESS_TOKEN_LIFETIME: access_token_lifetime: Input should be less than or "
         "equal to 300", env={"CIBA_ACCESS_TOKEN_LIFETIME": "900"}),
    Case("client-placeholder-hash", ["serve"], 2,
         "client 'ops-agent': client_secret_hash 'sha256$…' is a placeholder from the documentation",
         files={"ciba-service.toml": with_client('client_secret_hash = "sha256$…"')}),
    Case("client-raw-secret", ["serve"], 2, "client 'ops-agent': client_secret_hash is not a hash",
         files={"ciba-service.toml": with_client('client_secret_hash = "hunter2"')}),
    Case("client-no-credentials", ["serve"], 2, "client 'ops-agent' has no credentials",
         files={"ciba-service.toml": with_client("")}),
    Case("redis-unreachable", ["users", "add", "bob"], 1, "the store is unavailable",
         files={"ciba-service.toml": f'store = "redis"\nredis_url = "redis://127.0.0.1:{UNUSED}/0"\n'}),
    Case("data-dir-not-writable", ["users", "add", "bob"], 1, "/proc/ciba-data",
         files={"ciba-service.toml": 'data_dir = "/proc/ciba-data"\n'}),
    Case("keycloak-mode-add-user", ["users", "add", "bob"], 1, "enrollment is Keycloak's in keycloak mode",
         files={"ciba-service.toml": 'mode = "keycloak"\n[keycloak]\nadmin_client_secret = "x"\n'}),
    Case("no-such-user-link", ["users", "enroll-link", "bob"], 1, "no user 'bob' (users: alice;", in_site=True),
    Case("no-such-user-disable", ["users", "disable", "bob"], 1, "no user 'bob'", in_site=True),
    Case("user-already-exists", ["users", "add", "alice"], 1, "alice", in_site=True),
    Case("passkey-prefix-too-short", ["passkeys", "revoke", "alice", "ab"], 1, "at least its first 6 characters",
         in_site=True),
    Case("unknown-receipt", ["receipts", "verify", "nope"], 1, "invalid: unknown receipt", in_site=True),
    Case("secret-on-command-line", ["clients", "hash-secret", "s3cret"], 2,
         "a secret on the command line stays in your shell history"),
    Case("secret-stdin-empty", ["clients", "hash-secret", "--stdin"], 2, "no secret on stdin"),
    Case("secret-file-exists", ["clients", "hash-secret", "--secret-file", "s.txt"], 2,
         "s.txt exists: the secret is not written over it", files={"s.txt": "old"}),
    Case("approve-not-a-link", ["approve", "not-a-url"], 1, "not approved: not an http(s) link"),
    Case("approve-unreachable", ["approve", f"http://127.0.0.1:{UNUSED}/approve/x"], 1,
         "not approved: cannot reach the service"),
    Case("unknown-command", ["users", "remove", "alice"], 2, "No such command 'remove'", usage=True),
]  # fmt: skip


def run_case(case: Case, tmp_path: Path, site: Path) -> tuple[Case, subprocess.CompletedProcess[str]]:
    where = site if case.in_site else tmp_path / case.name
    where.mkdir(exist_ok=True)
    for name, text in case.files.items():
        (where / name).write_text(text)
    return case, run(*case.args, cwd=where, env=clean_env(where, **case.env), stdin=case.stdin)


def test_every_mistake_is_one_line_and_a_non_zero_exit(tmp_path: Path, site: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: run_case(c, tmp_path, site), CASES))
    failures = []
    for case, result in results:
        said = result.stderr
        # Besides the notice naming the data directory (no configuration found), one line.
        lines = [line for line in said.splitlines() if not line.startswith("no configuration file (")]
        if (
            result.returncode != case.code
            or case.message not in said
            or "Traceback" in said
            or "unexpected error" in said
            or (not case.usage and len(lines) != 1)
        ):
            failures.append(f"{case.name}: exit {result.returncode} (want {case.code})\n{said}")
    assert not failures, "\n\n".join(failures)


def test_an_unexpected_error_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.delenv("CIBA_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 70
    assert capsys.readouterr().err == (
        "ciba-service: unexpected error: RuntimeError: a bug (set CIBA_DEBUG=1 to see the traceback)\n"
    )


# users and passkeys from the command line -------------------------------------------------------
def test_disable_enable_and_the_audit_name_the_operator(tmp_path: Path) -> None:
    (tmp_path / "ciba-service.toml").write_text(CONFIG)
    assert run("users", "add", "carol", "--by", "ann", cwd=tmp_path).returncode == 0
    disabled = run("users", "disable", "carol", "--by", "ops-oncall", cwd=tmp_path)
    assert (disabled.returncode, disabled.stdout) == (0, "carol disabled\n"), disabled.stderr
    assert run("users", "disable", "carol", cwd=tmp_path).stdout == "carol was already disabled\n"
    assert "enabled=False" in run("users", "list", cwd=tmp_path).stdout
    link = run("users", "enroll-link", "carol", cwd=tmp_path)
    assert link.returncode == 1 and "is disabled: enable it first" in link.stderr
    enabled = run("users", "enable", "carol", cwd=tmp_path, env=clean_env(tmp_path, USER="bob", LOGNAME="bob"))
    assert enabled.stdout == "carol enabled\n"
    assert run("passkeys", "list", "carol", cwd=tmp_path).stderr.startswith("carol has no passkey")
    audit = run("audit", "list", "--user", "carol", cwd=tmp_path).stdout.splitlines()
    assert [line.split("\t")[1:3] for line in audit] == [
        ["bob", "user.enabled"],
        ["ops-oncall", "user.disabled"],
        ["ann", "user.added"],
    ]
    assert audit[0].endswith("\tusername=carol")


# clients hash-secret ------------------------------------------------------------------------------
def test_hash_secret_prints_a_clients_table_and_writes_the_secret_privately(tmp_path: Path) -> None:
    result = run("clients", "hash-secret", "--client-id", "ops-agent", "--secret-file", "agent.secret", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = tomllib.loads(result.stdout)
    [client] = table["clients"]
    assert client["client_id"] == "ops-agent" and client["client_secret_hash"].startswith("sha256$")
    secret_file = tmp_path / "agent.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    assert secret not in result.stdout + result.stderr
    from ciba_service.core.security import verify_secret

    assert verify_secret(secret, client["client_secret_hash"])


# help, version, startup ---------------------------------------------------------------------------
def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(group, "commands"):  # a group (Typer's own click)
        found = []
        for name, command in group.commands.items():
            found += commands(command, (*path, name))
        return found
    return [path]


def test_every_command_has_examples_and_no_bool_placeholder() -> None:
    runner = CliRunner()
    every = commands(typer.main.get_command(cli.app))
    assert ("passkeys", "revoke") in every and ("users", "disable") in every
    for path in [(), *every]:
        result = runner.invoke(cli.app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        if path:
            assert "Examples:" in result.output and "$ ciba-service " in result.output, path


def test_version() -> None:
    from ciba_service import __version__

    result = CliRunner().invoke(cli.app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"ciba-service {__version__}\n")


def test_starting_the_cli_imports_nothing_heavy() -> None:
    # --help used to take 1.7-2.1 s: every command imported the server, pydantic and JWT first.
    probe = (
        "import sys, ciba_service.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'pydantic_settings', 'jwt', 'fastapi', 'httpx', 'redis', 'cryptography', 'rich', 'webauthn'} "
        "or m.startswith(('ciba_service.server', 'ciba_service.store', 'ciba_service.config'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
