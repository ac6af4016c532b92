"""Redis store: the multi-instance store. Every instance pointed at the same Redis (and the same
prefix) sees the same users, passkeys, requests and receipts.

Layout (``p`` is the prefix, ``ciba:`` by default). Records are hashes whose fields hold the
JSON text of the dataclass field of the same name (bytes as base64url strings), so a script can
compare a field with a constant without re-encoding anything. Requests, the records there are
most of, and their outbox entries are instead one string of the same ``name=JSON`` pairs, one
per line (see "Records" below):

==============================  ===========================================  =================
key                             value                                        lifetime
==============================  ===========================================  =================
``p user:<user_id>``            hash: :class:`User`                          durable
``p username:<username>``       ``user_id``                                  durable
``p users``                     zset ``user_id`` by ``created_at``           durable
``p passkey:<b64 cred id>``     hash: :class:`Passkey`                       durable
``p passkeys:<user_id>``        zset of b64 credential ids by ``created_at`` durable
``p enrollment:<token_hash>``   hash: :class:`Enrollment`                    expiry + retention
``p request:<request_id>``      string: :class:`BackchannelRequest`          see below
``p auth_req_id:<hash>``        ``request_id``                               as its request
``p approval:<approval_id>``    ``request_id``                               as its request
``p jti:<jti>``                 ``request_id``                               durable
``p pending``                   zset: pending, callback unclaimed, by        (entries pruned
                                ``expires_at`` (:meth:`expired_pending`)     with the record)
``p notify``                    zset: ping/push, callback unclaimed, by the
                                time delivery is due (0 once decided)
``p receipt:<receipt_id>``      hash: :class:`ApprovalReceipt`               durable
``p once:<key>``                ``expires_at``                               expiry + 300 s
``p attempts:<key>``            zset: attempt ids by time                    window + 300 s
``p user_code:<user_id>``       code hash                                    durable
``p intent:<intent_id>``        hash: :class:`Intent`                        expiry + retention
``p outbox:<request_id>``       string: :class:`OutboxEntry`, the request's  as its pending
                                undelivered notice                           request
``p outbox``                    zset: outbox entries by ``claimed_until``    (entries pruned
                                (their lease's end; due once it has passed)  with the record)
``p refusal:<intent_id>``       JSON: :class:`ChannelRefusal`                expiry + 300 s
``p audit:<record_id>``         hash: :class:`AuditRecord` (operators'       durable
                                actions on users and passkeys)
``p audit``                     zset: audit record ids in the order written  durable
                                (scored by the counter ``p audit_seq``)
==============================  ===========================================  =================

Records: a request, and its outbox entry (the notice's JSON is over 64 bytes too), is stored as
one string, ``name=<JSON>`` per line (JSON text never holds a raw newline); a request leaves out
the fields that hold their default (``status`` pending, no decision yet, ``upstream`` empty,
...). A hash with a field longer than 64 bytes (``authorization_details`` always is) leaves
Redis's compact listpack encoding for a hash table of one allocation per field; one string is
the smallest form (Redis ``used_memory`` per pending request, all its keys counted: about
2.5 KB as a hash, about 1.2 KB as a string; ``scripts/bench_pending.py``). Scripts read a
record with ``load_record`` and change it by replacing whole lines (``lua/prelude.lua``), so no
JSON the service wrote is decoded and encoded again in Lua. A request or outbox entry written
by the previous format (a hash of the same fields) is still read, by the store and by every
script, and is rewritten as a string, TTL kept, by the first script that changes it; nothing
needs migrating beforehand. Instances of the previous version cannot read the new records:
stop them before starting this one.

A pending request (with its two index keys) expires ``retain_after_expiry`` seconds after its
own ``expires_at``; deciding it makes it durable, like its receipt. Redis TTLs only collect
garbage: every expiry decision compares ``expires_at`` with the ``now`` of the service clock,
exactly as the SQLite store does, so a request is never decided late because Redis has not
deleted it yet. TTLs are relative and computed with the service clock, so the Redis server's own
clock does not matter.

Every guarded transition is one Lua script (registered once, run by ``EVALSHA``): Redis runs a
script alone, so two instances can never both pass the same check. Each script checks everything
before it writes, because Redis does not roll a failed script back. The scripts are package data,
``lua/<name>.lua`` next to this module, each with a header saying what it guards and which KEYS
and ARGV it takes; ``lua/prelude.lua`` is put in front of every one of them.

Failures of the server (unreachable, timeout, out of memory under ``noeviction``, read-only
after a failover) are raised as :class:`StoreUnavailable`, the redis-py exception chained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, asdict
from dataclasses import fields as dataclass_fields
from importlib.resources import files
from typing import Any, TypeVar

import redis
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from ciba_service.core.model import (
    ApprovalReceipt,
    AuditRecord,
    BackchannelRequest,
    CallbackState,
    ChannelRefusal,
    Enrollment,
    Intent,
    OutboxEntry,
    Passkey,
    RequestStatus,
    User,
)
from ciba_service.core.security import b64url_decode_lenient, b64url_encode
from ciba_service.store.base import Store
from ciba_service.store.errors import StoreConflict, StoreMisconfigured, StoreUnavailable, unavailable_when

__all__ = ["RedisStore", "StoreConflict", "StoreMisconfigured", "StoreUnavailable"]

# How long a record outlives its expiry by default: the sweep of an instance that was down for a
# while still finds expired requests to notify, and late polls still get ``expired_token``.
DEFAULT_RETENTION = 3600
# use_once keys outlive their expiry by this much: instances whose clocks run a little behind
# still see the key until their own clock passes ``expires_at``.
_CLOCK_SKEW = 300


# Lua ------------------------------------------------------------------------------------------
def _read_lua(name: str) -> str:
    return (files("ciba_service.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


# Read once, at import: each script is the prelude (ARGV[1] is the key prefix, KEYS[1] the record
# the script is about) followed by the script's own text.
_PRELUDE = _read_lua("prelude")
_SCRIPTS = {
    name: _PRELUDE + "\n" + _read_lua(name)
    for name in (
        "add_request",
        "update_request",
        "decide",
        "mark_issued",
        "delete_request",
        "claim_callback",
        "claim_outbox",
        "add_user",
        "upsert_user",
        "add_passkey",
        "update_sign_count",
        "upsert_passkeys",
        "add_enrollment",
        "set_enrollment_challenge",
        "consume_enrollment",
        "add_intent",
        "take_intent",
        "use_once",
        "reserve_attempt",
        "set_user_enabled",
        "revoke_passkey",
        "add_audit",
        "find_approver",
    )
}


def _unavailable(exc: Exception) -> bool:
    """A failure of the Redis server the caller may retry, not a bug: the server cannot be
    reached (also while it loads its data set) or does not answer in time, refuses writes
    because it is out of memory (``maxmemory`` with ``noeviction``), or is a read-only replica
    (after a failover). A script that fails on such a write is reported the same way. Older
    redis-py versions raise OOM and READONLY as plain ``ResponseError``s: matched by their text."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OutOfMemoryError | ReadOnlyError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("OOM ", "READONLY "))


# encoding -------------------------------------------------------------------------------------
_Record = (
    User
    | Passkey
    | Enrollment
    | BackchannelRequest
    | ApprovalReceipt
    | Intent
    | OutboxEntry
    | ChannelRefusal
    | AuditRecord
)
_T = TypeVar("_T")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _fields(record: _Record) -> dict[str, str]:
    """Hash fields of ``record``: each dataclass field as JSON, bytes as base64url strings."""
    return {
        name: _json(b64url_encode(value) if isinstance(value, bytes) else value)
        for name, value in asdict(record).items()
    }


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _field_default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


# The fields of a request record, and the defaults left out of it. The Lua scripts compare two of
# these defaults (``REQUEST_DEFAULTS`` in ``lua/prelude.lua``: status and callback_state).
_REQUEST_FIELDS = tuple(f.name for f in dataclass_fields(BackchannelRequest))
_REQUEST_DEFAULTS = {
    f.name: _field_default(f)
    for f in dataclass_fields(BackchannelRequest)
    if f.default is not MISSING or f.default_factory is not MISSING
}
_NO_DEFAULT = object()


def _request_record(request: BackchannelRequest) -> str:
    """The stored form of a request: ``name=<JSON>`` per line, fields at their default left out."""
    lines = []
    for name in _REQUEST_FIELDS:
        value = getattr(request, name)
        default = _REQUEST_DEFAULTS.get(name, _NO_DEFAULT)
        if default is _NO_DEFAULT or type(value) is not type(default) or value != default:
            lines.append(f"{name}={_json(value)}")
    return "\n".join(lines)


def _record(fields: Mapping[str, str]) -> str:
    """The stored form of a record given its ``name -> JSON`` pairs (every field written)."""
    return "\n".join(f"{name}={value}" for name, value in fields.items())


def _record_fields(record: str) -> dict[str, str]:
    """The ``name -> JSON`` pairs of a stored record (:func:`_record`, :func:`_request_record`)."""
    fields: dict[str, str] = {}
    for line in record.split("\n"):
        name, _, value = line.partition("=")
        fields[name] = value
    return fields


def _wrong_type(reply: object) -> bool:
    """A GET that met a hash: a request stored by the previous format."""
    return isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE")


# How each record's fields come back: bytes from base64url, enums from their values.
_DECODE: dict[type[Any], dict[str, Callable[[Any], Any]]] = {
    User: {"user_handle": b64url_decode_lenient},
    Passkey: {"credential_id": b64url_decode_lenient, "public_key": b64url_decode_lenient},
    Enrollment: {"challenge": b64url_decode_lenient},
    BackchannelRequest: {"status": RequestStatus, "callback_state": CallbackState},
    ApprovalReceipt: {
        "credential_id": b64url_decode_lenient,
        "credential_public_key": b64url_decode_lenient,
        "preimage": b64url_decode_lenient,
    },
    Intent: {},
    OutboxEntry: {},
    AuditRecord: {},
}


def _decode(cls: type[_T], raw: Mapping[Any, Any] | None) -> _T | None:
    if not raw:
        return None
    convert = _DECODE[cls]
    values: dict[str, Any] = {}
    for name, text in raw.items():
        value = json.loads(text)
        values[name] = convert[name](value) if name in convert and value is not None else value
    return cls(**values)


@unavailable_when(_unavailable)
class RedisStore(Store):
    """State in Redis, shared by every instance using the same server and prefix.

    ``clock`` is the service clock: TTLs are computed with it (as relative times), never with
    the Redis server's clock. ``retain_after_expiry`` is how long (seconds) a pending request,
    an enrollment link or an intent is kept after its own expiry before Redis deletes it.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "ciba:",
        clock: Callable[[], float] = time.time,
        retain_after_expiry: int = DEFAULT_RETENTION,
    ) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStore needs a client made with decode_responses=True")
        # redis-py's annotations cover its async client too (every reply may be an awaitable);
        # the replies of this sync client are typed where they are used.
        self._redis: Any = client
        self._prefix = prefix
        self._clock = clock
        self._retain = retain_after_expiry

        def script(name: str) -> Any:
            return client.register_script(_SCRIPTS[name])

        self._add_request = script("add_request")
        self._update_request = script("update_request")
        self._decide = script("decide")
        self._mark_issued = script("mark_issued")
        self._delete_request = script("delete_request")
        self._claim_callback = script("claim_callback")
        self._claim_outbox = script("claim_outbox")
        self._add_user = script("add_user")
        self._upsert_user = script("upsert_user")
        self._add_passkey = script("add_passkey")
        self._update_sign_count = script("update_sign_count")
        self._upsert_passkeys = script("upsert_passkeys")
        self._add_enrollment = script("add_enrollment")
        self._set_enrollment_challenge = script("set_enrollment_challenge")
        self._consume_enrollment = script("consume_enrollment")
        self._add_intent = script("add_intent")
        self._take_intent = script("take_intent")
        self._use_once = script("use_once")
        self._reserve_attempt = script("reserve_attempt")
        self._set_user_enabled = script("set_user_enabled")
        self._revoke_passkey = script("revoke_passkey")
        self._add_audit = script("add_audit")
        self._find_approver = script("find_approver")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "ciba:",
        clock: Callable[[], float] = time.time,
        retain_after_expiry: int = DEFAULT_RETENTION,
    ) -> RedisStore:
        """``redis://[user:password@]host:port/db``, ``rediss://…`` or ``unix:///path``."""
        return cls(
            redis.Redis.from_url(url, decode_responses=True),
            prefix=prefix,
            clock=clock,
            retain_after_expiry=retain_after_expiry,
        )

    def check_server(self) -> list[str]:
        """Refuse a Redis that may drop what this store relies on; return warnings to log.

        Raises :class:`StoreMisconfigured` when ``maxmemory-policy`` is not ``noeviction``:
        every record that enforces single use (client assertion, request object and DPoP
        ``jti``s, the ``user_code`` attempt log, pending requests, enrollment links) carries a
        TTL, so a ``volatile-*`` policy evicts exactly those under memory pressure, and a
        replayed assertion or proof would then be accepted (``allkeys-*`` can evict anything,
        receipts included). Warns when append-only persistence is off or not fsynced on every
        write: a crash then forgets acknowledged writes, and a forgotten "issued" or "used"
        reopens single use. Managed Redis that refuses ``CONFIG`` gets a warning instead."""
        try:
            config: dict[str, str] = self._redis.config_get("maxmemory-policy")
            config.update(self._redis.config_get("appendonly"))
            config.update(self._redis.config_get("appendfsync"))
        except redis.ResponseError as exc:
            return [f"cannot read the Redis configuration ({exc}); make sure maxmemory-policy is noeviction"]
        policy = config.get("maxmemory-policy", "")
        if policy != "noeviction":
            raise StoreMisconfigured(
                f"Redis maxmemory-policy is {policy!r}: it may evict the keys that enforce single use; "
                "set maxmemory-policy noeviction"
            )
        warnings = []
        if config.get("appendonly") != "yes":
            warnings.append("Redis persistence (appendonly) is off: a Redis restart loses every decision and receipt")
        elif config.get("appendfsync") != "always":
            warnings.append(
                f"Redis appendfsync is {config.get('appendfsync')!r}: a crash may forget the last second of "
                "acknowledged writes (an issued token or a used jti); appendfsync always closes that gap"
            )
        return warnings

    def close(self) -> None:
        self._redis.close()

    # plumbing -----------------------------------------------------------------------------
    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    def _run(self, script: Any, keys: list[str], *args: str | int) -> Any:
        try:
            return script(keys=keys, args=[self._prefix, *args])
        except redis.ResponseError as exc:
            if str(exc).startswith("CONFLICT"):
                raise StoreConflict(str(exc).removeprefix("CONFLICT ")) from None
            raise

    def _ttl_ms(self, expires_at: int, *, extra: int) -> int:
        """Milliseconds from now (service clock) until ``extra`` seconds after ``expires_at``."""
        return max(1, int((expires_at + extra - self._clock()) * 1000))

    def _hgetall_many(self, keys: list[str]) -> list[dict[str, str]]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        result: list[dict[str, str]] = pipe.execute()
        return result

    # users and passkeys -------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        self._run(
            self._add_user,
            [self._key("user", user.user_id), self._key("username", user.username)],
            user.user_id,
            user.created_at,
            *_pairs(_fields(user)),
        )

    def get_user(self, user_id: str) -> User | None:
        return _decode(User, self._redis.hgetall(self._key("user", user_id)))

    def find_user(self, username: str) -> User | None:
        user_id = self._redis.get(self._key("username", username))
        user = None if user_id is None else self.get_user(user_id)
        return user if user is not None and user.username == username else None

    def find_approver(self, *, user_id: str | None = None, username: str | None = None) -> tuple[User, bool] | None:
        # One script (one round trip) for the user and whether they hold a passkey.
        by_id = user_id is not None
        key = self._key("user", user_id) if user_id is not None else self._key("username", username or "")
        found = self._run(self._find_approver, [key], "id" if by_id else "name")
        if not found:
            return None
        flat, has_passkey = found
        user = _decode(User, dict(zip(flat[::2], flat[1::2], strict=True)))
        if user is None or (not by_id and user.username != username):
            return None  # as find_user: an index left naming another user finds nobody
        return user, bool(has_passkey)

    def list_users(self) -> list[User]:
        ids = self._redis.zrange(self._prefix + "users", 0, -1)
        users = (_decode(User, raw) for raw in self._hgetall_many([self._key("user", i) for i in ids]))
        return [u for u in users if u is not None]

    def add_passkey(self, passkey: Passkey) -> None:
        cred = b64url_encode(passkey.credential_id)
        self._run(
            self._add_passkey,
            [self._key("passkey", cred)],
            passkey.user_id,
            cred,
            passkey.created_at,
            *_pairs(_fields(passkey)),
        )

    def passkeys_for(self, user_id: str) -> list[Passkey]:
        creds = self._redis.zrange(self._key("passkeys", user_id), 0, -1)
        found = (_decode(Passkey, raw) for raw in self._hgetall_many([self._key("passkey", c) for c in creds]))
        return [p for p in found if p is not None and p.user_id == user_id]

    def find_passkey(self, credential_id: bytes) -> Passkey | None:
        return _decode(Passkey, self._redis.hgetall(self._key("passkey", b64url_encode(credential_id))))

    def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        key = self._key("passkey", b64url_encode(credential_id))
        return bool(self._run(self._update_sign_count, [key], _json(old), _json(new)))

    # enrollment ---------------------------------------------------------------------------
    def add_enrollment(self, enrollment: Enrollment) -> None:
        self._run(
            self._add_enrollment,
            [self._key("enrollment", enrollment.token_hash)],
            enrollment.user_id,
            self._ttl_ms(enrollment.expires_at, extra=self._retain),
            *_pairs(_fields(enrollment)),
        )

    def get_enrollment(self, token_hash: str) -> Enrollment | None:
        return _decode(Enrollment, self._redis.hgetall(self._key("enrollment", token_hash)))

    def set_enrollment_challenge(self, token_hash: str, challenge: bytes) -> None:
        self._run(
            self._set_enrollment_challenge, [self._key("enrollment", token_hash)], _json(b64url_encode(challenge))
        )

    def consume_enrollment(self, token_hash: str, *, now: int) -> bool:
        return bool(self._run(self._consume_enrollment, [self._key("enrollment", token_hash)], now))

    # requests -----------------------------------------------------------------------------
    def add_request(self, request: BackchannelRequest, *, outbox: OutboxEntry | None = None) -> None:
        if outbox is not None and outbox.request_id != request.request_id:
            raise ValueError("the outbox entry belongs to another request")
        # Pending: kept until its expiry plus the retention, then Redis deletes it. Anything
        # already decided is durable from the start.
        ttl = self._ttl_ms(request.expires_at, extra=self._retain) if request.status is RequestStatus.PENDING else 0
        keys = [self._key("request", request.request_id)]
        if outbox is not None:
            keys.append(self._key("outbox", request.request_id))
        self._run(
            self._add_request,
            keys,
            request.request_id,
            ttl,
            # The notice lives as long as a pending request does: useless after its expiry.
            self._ttl_ms(outbox.expires_at, extra=self._retain) if outbox is not None else 0,
            _record(_fields(outbox)) if outbox is not None else "",
            _request_record(request),
        )

    def _get_records(self, keys: list[str]) -> list[Mapping[str, str] | None]:
        """The ``name -> JSON`` pairs of the records (requests, outbox entries) at ``keys`` (None
        where gone), in one round trip, plus one for those still stored in the previous format
        (a hash)."""
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not _wrong_type(reply):
                raise reply
        old = [i for i, reply in enumerate(replies) if _wrong_type(reply)]
        if old:
            for i, raw in zip(old, self._hgetall_many([keys[i] for i in old]), strict=True):
                replies[i] = raw
        return [_record_fields(reply) if isinstance(reply, str) else reply for reply in replies]

    def _get_requests(self, request_ids: list[str]) -> list[BackchannelRequest | None]:
        records = self._get_records([self._key("request", i) for i in request_ids])
        return [_decode(BackchannelRequest, record) for record in records]

    def get_request(self, request_id: str) -> BackchannelRequest | None:
        key = self._key("request", request_id)
        try:
            record: str | None = self._redis.get(key)
        except redis.ResponseError as exc:
            if not _wrong_type(exc):
                raise
            return _decode(BackchannelRequest, self._redis.hgetall(key))  # the previous format
        return None if record is None else _decode(BackchannelRequest, _record_fields(record))

    def _find_request(self, kind: str, name: str) -> BackchannelRequest | None:
        request_id = self._redis.get(self._key(kind, name))
        return None if request_id is None else self.get_request(request_id)

    def find_request_by_auth_req_id(self, auth_req_id_hash: str) -> BackchannelRequest | None:
        request = self._find_request("auth_req_id", auth_req_id_hash)
        return request if request is not None and request.auth_req_id_hash == auth_req_id_hash else None

    def find_request_by_approval_id(self, approval_id: str) -> BackchannelRequest | None:
        request = self._find_request("approval", approval_id)
        return request if request is not None and request.approval_id == approval_id else None

    def find_request_by_jti(self, jti: str) -> BackchannelRequest | None:
        request = self._find_request("jti", jti)
        return request if request is not None and request.token_jti == jti else None

    def _update(self, request_id: str, **fields: Any) -> None:
        pairs = _pairs({name: _json(value) for name, value in fields.items()})
        self._run(self._update_request, [self._key("request", request_id)], request_id, *pairs)

    def record_poll(self, request_id: str, *, now: int, interval: int) -> None:
        self._update(request_id, last_poll_at=now, interval=interval)

    def decide(
        self,
        request_id: str,
        *,
        status: RequestStatus,
        now: int,
        receipt: ApprovalReceipt | None = None,
    ) -> bool:
        if status not in (RequestStatus.APPROVED, RequestStatus.DENIED):
            raise ValueError(f"cannot decide a request as {status}")
        keys = [self._key("request", request_id)]
        receipt_pairs: list[str] = []
        if receipt is not None:
            keys.append(self._key("receipt", receipt.receipt_id))
            receipt_pairs = _pairs(_fields(receipt))
        changed = self._run(
            self._decide,
            keys,
            request_id,
            now,
            _json(status.value),
            _json(now),
            _json(receipt.receipt_id if receipt else None),
            *receipt_pairs,
        )
        return bool(changed)

    def mark_issued(self, request_id: str, *, jti: str) -> bool:
        return bool(self._run(self._mark_issued, [self._key("request", request_id)], request_id, _json(jti), jti))

    def set_upstream(self, request_id: str, upstream: dict[str, Any]) -> None:
        self._update(request_id, upstream=upstream)

    def delete_request(self, request_id: str) -> None:
        self._run(self._delete_request, [self._key("request", request_id)], request_id)

    # the outbox ----------------------------------------------------------------------------
    def claim_outbox(self, request_id: str, *, now: int, lease: int) -> OutboxEntry | None:
        flat = self._run(self._claim_outbox, [self._key("outbox", request_id)], request_id, now, now + lease)
        if not flat:
            return None
        return _decode(OutboxEntry, dict(zip(flat[::2], flat[1::2], strict=True)))

    def mark_outbox_delivered(self, request_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key("outbox", request_id))
        pipe.zrem(self._prefix + "outbox", request_id)
        pipe.execute()

    def outbox_due(self, *, now: int, limit: int) -> list[OutboxEntry]:
        key = self._prefix + "outbox"
        ids: list[str] = self._redis.zrangebyscore(key, "-inf", now, start=0, num=limit)
        found: list[OutboxEntry] = []
        gone: list[str] = []
        for request_id, raw in zip(ids, self._get_records([self._key("outbox", i) for i in ids]), strict=True):
            entry = _decode(OutboxEntry, raw)
            if entry is None:
                gone.append(request_id)  # Redis expired it (TTL): only the index was left
            else:
                found.append(entry)
        if gone:
            self._redis.zrem(key, *gone)
        return found

    def get_receipt(self, receipt_id: str) -> ApprovalReceipt | None:
        return _decode(ApprovalReceipt, self._redis.hgetall(self._key("receipt", receipt_id)))

    def revoke_request(self, request_id: str) -> None:
        self._update(request_id, revoked=True)

    def _requests_due(self, zset: str, now: int) -> list[BackchannelRequest]:
        """Requests of ``zset`` scored at most ``now``; entries whose record Redis has expired
        are pruned on the way."""
        key = self._prefix + zset
        ids: list[str] = self._redis.zrangebyscore(key, "-inf", now)
        found: list[BackchannelRequest] = []
        gone: list[str] = []
        for request_id, request in zip(ids, self._get_requests(ids), strict=True):
            if request is None:
                gone.append(request_id)
            else:
                found.append(request)
        if gone:
            self._redis.zrem(key, *gone)
        return found

    def expired_pending(self, *, now: int) -> list[BackchannelRequest]:
        return [
            r
            for r in self._requests_due("pending", now)
            if r.status is RequestStatus.PENDING and r.expires_at <= now and r.callback_state is CallbackState.NONE
        ]

    def count_pending(self, *, now: int) -> int:
        # The pending index holds exactly the pending requests (scripts keep it so), scored by
        # expiry: those scored after now have not expired.
        return int(self._redis.zcount(self._prefix + "pending", f"({now}", "+inf"))

    def pending_notifications(self, *, now: int) -> list[BackchannelRequest]:
        # The same condition as the SQLite query, checked on the current record.
        return [
            r
            for r in self._requests_due("notify", now)
            if r.callback_state is CallbackState.NONE
            and r.upstream.get("delivery") in ("ping", "push")
            and (r.status in (RequestStatus.APPROVED, RequestStatus.DENIED) or r.expires_at <= now)
        ]

    # keycloak mode ------------------------------------------------------------------------
    def upsert_user(self, user: User) -> None:
        fields = _fields(user)
        self._run(
            self._upsert_user,
            [self._key("user", user.user_id), self._key("username", user.username)],
            user.user_id,
            user.created_at,
            fields["username"],
            fields["display_name"],
            fields["enabled"],
            *_pairs(fields),
        )

    def _write_passkeys(self, user_id: str, passkeys: list[Passkey], *, replace: bool) -> None:
        args: list[str | int] = ["1" if replace else "0"]
        for passkey in passkeys:
            fields = _fields(passkey)
            args += [
                b64url_encode(passkey.credential_id),
                passkey.user_id,
                passkey.created_at,
                fields["public_key"],
                fields["sign_count"],
                _json(fields),
            ]
        self._run(self._upsert_passkeys, [self._key("passkeys", user_id)], *args)

    def upsert_passkey(self, passkey: Passkey) -> None:
        self._write_passkeys(passkey.user_id, [passkey], replace=False)

    def replace_passkeys(self, user_id: str, passkeys: list[Passkey]) -> None:
        self._write_passkeys(user_id, passkeys, replace=True)

    def add_intent(self, intent: Intent) -> None:
        self._run(
            self._add_intent,
            [self._key("intent", intent.intent_id)],
            self._ttl_ms(intent.expires_at, extra=self._retain),
            *_pairs(_fields(intent)),
        )

    def take_intent(self, intent_id: str, *, now: int) -> Intent | None:
        flat = self._run(self._take_intent, [self._key("intent", intent_id)], now)
        if not flat:
            return None
        return _decode(Intent, dict(zip(flat[::2], flat[1::2], strict=True)))

    def delete_intent(self, intent_id: str) -> None:
        self._redis.delete(self._key("intent", intent_id))

    def keep_refusal(self, refusal: ChannelRefusal, *, now: int) -> None:
        # One key per intent with a TTL: Redis forgets it past its expiry (plus clock skew).
        ttl = max(1, (refusal.expires_at - now + _CLOCK_SKEW) * 1000)
        self._redis.set(self._key("refusal", refusal.intent_id), _json(asdict(refusal)), px=ttl)

    def take_refusal(self, intent_id: str, *, now: int) -> ChannelRefusal | None:
        # GETDEL: read and delete in one command, so a refusal is reported once.
        raw: str | None = self._redis.getdel(self._key("refusal", intent_id))
        if raw is None:
            return None
        refusal = ChannelRefusal(**json.loads(raw))
        return refusal if refusal.expires_at > now else None

    def claim_callback(self, request_id: str) -> bool:
        return bool(self._run(self._claim_callback, [self._key("request", request_id)], request_id))

    def set_callback_state(self, request_id: str, state: CallbackState) -> None:
        self._update(request_id, callback_state=state.value)

    # single use, user codes -----------------------------------------------------------------
    def use_once(self, key: str, *, expires_at: int, now: int) -> bool:
        ttl = max(1, (expires_at - now + _CLOCK_SKEW) * 1000)
        return bool(self._run(self._use_once, [self._key("once", key)], expires_at, now, ttl))

    def reserve_attempt(self, key: str, *, attempt_id: str, now: int, window: int, limit: int) -> bool:
        attempts = self._key("attempts", key)
        return bool(self._run(self._reserve_attempt, [attempts], attempt_id, now, window, limit, _CLOCK_SKEW))

    def cancel_attempt(self, key: str, *, attempt_id: str) -> None:
        self._redis.zrem(self._key("attempts", key), attempt_id)

    def set_user_code(self, user_id: str, code_hash: str | None) -> None:
        if code_hash is None:
            self._redis.delete(self._key("user_code", user_id))
        else:
            self._redis.set(self._key("user_code", user_id), code_hash)

    def get_user_code(self, user_id: str) -> str | None:
        code: str | None = self._redis.get(self._key("user_code", user_id))
        return code

    # operators' actions: enable/disable a user, revoke a passkey, the audit ------------------
    def set_user_enabled(self, user_id: str, *, enabled: bool, audit: AuditRecord) -> bool:
        return bool(
            self._run(
                self._set_user_enabled,
                [self._key("user", user_id), self._key("audit", audit.record_id)],
                _json(enabled),
                audit.record_id,
                *_pairs(_fields(audit)),
            )
        )

    def revoke_passkey(self, credential_id: bytes, *, user_id: str, audit: AuditRecord) -> bool:
        cred = b64url_encode(credential_id)
        return bool(
            self._run(
                self._revoke_passkey,
                [self._key("passkey", cred), self._key("audit", audit.record_id)],
                user_id,
                cred,
                audit.record_id,
                *_pairs(_fields(audit)),
            )
        )

    def add_audit(self, record: AuditRecord) -> None:
        self._run(self._add_audit, [self._key("audit", record.record_id)], record.record_id, *_pairs(_fields(record)))

    def audit_records(self, *, limit: int, subject: str | None = None) -> list[AuditRecord]:
        key = self._prefix + "audit"
        found: list[AuditRecord] = []
        start = 0
        page = max(limit, 100)
        # Newest first; with a subject, pages are read until enough of its records are found.
        while len(found) < limit:
            ids: list[str] = self._redis.zrevrange(key, start, start + page - 1)
            if not ids:
                break
            for raw in self._hgetall_many([self._key("audit", i) for i in ids]):
                record = _decode(AuditRecord, raw)
                if record is not None and (subject is None or record.subject == subject):
                    found.append(record)
            start += page
        return found[:limit]
