"""The Redis registry: shared state for many nodes, one Redis or a Redis Cluster.

Key design (``P`` is the key prefix, ``N`` = crc32(aor) mod ``NBUCKETS``)::

    {P:N}:b:<aor>    hash   binding key -> binding (JSON, read by the Lua scripts with cjson)
    {P:N}:exp        zset   "<aor>\\0<key>" scored by expires_at: the sweeper's index
    {P:N}:aors       zset   AORs with bindings (score 0, read with ZRANGEBYLEX): admin listing
    {P:N}:k:<aor>    string "had bindings" (404 vs 480): set when the last binding goes away
    {P:c:<conn>}     set    "<aor>\\0<key>" registered over a WebSocket connection
    P:d:<dialog>     string dialog state;   P:s:<session>  Diameter session state

Why buckets rather than one ``{aor}`` tag per AOR: a Lua script may only touch keys of one
Cluster slot, and ``register`` must update the AOR's hash *and* the expiry index atomically.  With
the hash tag ``{P:N}`` every AOR of bucket N and that bucket's indexes share one slot, so the
script is atomic on Redis Cluster too, one AOR still lives in exactly one slot, and the sweeper
reads NBUCKETS sorted sets instead of scanning keys (no KEYS/SCAN anywhere).

The connection index lives in the connection's own slot, so it is updated by a separate command
sent in the same round trip; it is a superset (stale members are checked against the binding's
``connection_id`` before removal) and expires with the longest binding it lists.

Throughput: one REGISTER is one EVALSHA, and every command goes through a link
(``registry/redislink.py``) that writes the calls made during one event-loop tick together
(auto-pipelining), so N concurrent REGISTERs cost one round trip rather than N.  The script
returns only the bindings this REGISTER did not write: the ones it wrote are the ``Binding``
objects already built here, never decoded back.  Every call is bounded by ``CALL_TIMEOUT`` and
raises ``RegistryUnavailable`` when Redis is down or slow; a broken connection is dropped and
re-opened on the next call, so the registry recovers by itself when Redis returns.
"""

from __future__ import annotations

import hashlib
import heapq
import zlib
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar

import hiredis
import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from signaling.registry.base import (
    MAX_BINDINGS_PER_AOR,
    MAX_LIST_WINDOW,
    MAX_STATE_BYTES,
    Binding,
    ContactChange,
    OutOfOrder,
    RegistryFull,
    binding_key,
    make_binding,
    sort_bindings,
)
from signaling.registry.redislink import (
    MAX_INFLIGHT_BATCHES,
    Batcher,
    HiredisConnection,
    Link,
    Pipe,
    parse_url,
)

__all__ = [
    "CALL_TIMEOUT",
    "KNOWN_USER_TTL",
    "NBUCKETS",
    "RedisRegistry",
]

# Slot buckets.  Fixed for the life of a deployment (changing it orphans keys).  256 spreads
# evenly over any realistic Cluster (a few per master even at 64 masters) while keeping the
# sweeper's and the admin API's per-bucket reads to 256 commands, one pipeline.
NBUCKETS = 256

# Bound on every Redis call.  Loopback/LAN round trips are < 1 ms and a pipelined batch a few
# ms; half a second means Redis is in trouble, and a SIP client's Timer E retransmission (500 ms,
# RFC 3261 §17.1.2.2) is due: better a 503 + Retry-After than a hanging transaction.
CALL_TIMEOUT = 0.5

# Connections per Redis node through redis-py (Cluster, TLS): the in-flight pipelines plus
# ping / close.
MAX_CONNECTIONS = MAX_INFLIGHT_BATCHES + 4

# How long "this user had bindings" is remembered after its last binding went away (404 vs
# 480).  30 days outlives a holiday with the phone off; Redis's maxmemory bounds the rest.
KNOWN_USER_TTL = 30 * 24 * 3600

# Separator inside "<aor>\0<key>" index members: NUL cannot appear in SIP text (RFC 3261 §25).
_SEP = "\x00"

# Returns {'OK', <binding>...} with the live bindings this REGISTER left untouched (the caller
# has the ones it wrote), or {'OOO', key, cseq} / {'FULL', count} having written nothing.
# ARGV[1] is one MessagePack array: aor, call_id, cseq, now, max_bindings, known_ttl, then per
# contact key, expires_at (0: remove) and the binding's JSON.  One argument packed by msgspec
# instead of a dozen: hiredis formats each argument with sprintf and Python's repr of a float
# runs a bignum dtoa, together ~40k instructions per REGISTER (callgrind); floats travel as
# IEEE doubles, and a Lua number given to redis.call is written back exactly (ZADD's score).
_REGISTER_LUA = """
local a = cmsgpack.unpack(ARGV[1])
local aor, call_id, cseq, now = a[1], a[2], a[3], a[4]
local max_bindings, known_ttl, n = a[5], a[6], (#a - 6) / 3
local mine = {}
for j = 0, n - 1 do mine[a[7 + 3 * j]] = a[8 + 3 * j] ~= 0 end
local flat = redis.call('HGETALL', KEYS[1])
local out, count, stale = {'OK'}, 0, {}
for i = 1, #flat, 2 do
  local key = flat[i]
  local b = cjson.decode(flat[i + 1])
  if b.expires_at <= now then
    if mine[key] == nil then stale[#stale + 1] = key end
  elseif mine[key] == nil then
    count = count + 1
    out[#out + 1] = flat[i + 1]
  elseif b.call_id == call_id and b.cseq >= cseq then
    -- RFC 3261 10.3 step 7: same Call-ID needs a higher CSeq, else nothing is applied.
    return {'OOO', key, tostring(b.cseq)}
  end
end
for _, kept in pairs(mine) do
  if kept then count = count + 1 end
end
if count > max_bindings then return {'FULL', tostring(count)} end
if n == 0 then return out end
for _, key in ipairs(stale) do
  redis.call('HDEL', KEYS[1], key)
  redis.call('ZREM', KEYS[2], aor .. '\\0' .. key)
end
for j = 0, n - 1 do
  local key, expires_at = a[7 + 3 * j], a[8 + 3 * j]
  if expires_at ~= 0 then
    redis.call('HSET', KEYS[1], key, a[9 + 3 * j])
    redis.call('ZADD', KEYS[2], expires_at, aor .. '\\0' .. key)
  else
    redis.call('HDEL', KEYS[1], key)
    redis.call('ZREM', KEYS[2], aor .. '\\0' .. key)
  end
end
if count == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], aor)
  redis.call('SET', KEYS[4], '1', 'EX', known_ttl)
elseif #flat == 0 then
  redis.call('ZADD', KEYS[3], 0, aor)
end
return out
"""

_REMOVE_ALL_LUA = """
local aor, call_id = ARGV[1], ARGV[2]
local cseq, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local flat = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #flat, 2 do
  local b = cjson.decode(flat[i + 1])
  if b.expires_at > now then
    live = live + 1
    if b.call_id == call_id and b.cseq >= cseq then
      return {'OOO', flat[i], tostring(b.cseq)}
    end
  end
end
for i = 1, #flat, 2 do redis.call('ZREM', KEYS[2], aor .. '\\0' .. flat[i]) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], aor)
if #flat > 0 then redis.call('SET', KEYS[4], '1', 'EX', ARGV[5]) end
return {'OK', tostring(live)}
"""

# ARGV[3]: only remove if the binding was registered over this connection ('' = always).
_REMOVE_ONE_LUA = """
local aor, key, conn = ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('HGET', KEYS[1], key)
if not v then return 0 end
if conn ~= '' and cjson.decode(v).connection_id ~= conn then return 0 end
redis.call('HDEL', KEYS[1], key)
redis.call('ZREM', KEYS[2], aor .. '\\0' .. key)
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], aor)
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[4])
end
return 1
"""

# Keys of the AOR hashes are built here from ARGV[1] (the bucket's hash prefix): they share the
# bucket's hash tag, hence its slot, which Redis Cluster requires of a script's keys.  The
# bucket's own arguments come first, the sweep's (now, limit) last: see ``_sweep_command``.
_EXPIRE_BUCKET_LUA = """
local now = tonumber(ARGV[4])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0,
                           tonumber(ARGV[5]))
local removed = 0
for _, m in ipairs(members) do
  local i = string.find(m, '\\0', 1, true)
  local aor, key = string.sub(m, 1, i - 1), string.sub(m, i + 1)
  local h = ARGV[1] .. aor
  redis.call('ZREM', KEYS[1], m)
  local v = redis.call('HGET', h, key)
  if v and cjson.decode(v).expires_at <= now then
    redis.call('HDEL', h, key)
    removed = removed + 1
    if redis.call('HLEN', h) == 0 then
      redis.call('ZREM', KEYS[2], aor)
      redis.call('SET', ARGV[2] .. aor, '1', 'EX', ARGV[3])
    end
  end
end
return removed
"""

_CONN_INDEX_LUA = """
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


# Loaded by each new connection of the pipe (``redislink._hello``), so a restarted Redis never
# answers the first REGISTERs NOSCRIPT.
_SCRIPTS = (_REGISTER_LUA, _REMOVE_ALL_LUA, _REMOVE_ONE_LUA, _EXPIRE_BUCKET_LUA, _CONN_INDEX_LUA)


class _Script:
    """A Lua script called by SHA (EVALSHA), falling back to EVAL after a Redis restart."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisRegistry:
    """``Registry`` on Redis or Redis Cluster (see ``signaling.registry.base.Registry``)."""

    #: ``register`` waits only on its script's reply, whose time and how many wait for one
    #: the link bounds (``signaling.registry.redislink``), as the worker queues did: the
    #: REGISTER is answered from the reply's callback (``signaling.eager``).
    registers_at_once: ClassVar[bool] = True

    def __init__(
        self,
        link: Link,
        *,
        prefix: str = "sig",
        timeout: float = CALL_TIMEOUT,
        max_bindings_per_aor: int = MAX_BINDINGS_PER_AOR,
    ) -> None:
        self._link = link
        self._prefix = prefix
        self._timeout = timeout
        self._max_per_aor = max_bindings_per_aor
        self._tags = [f"{{{prefix}:{i}}}" for i in range(NBUCKETS)]
        self._sweep_cursor = 0
        self._encoder = msgspec.json.Encoder()
        self._packer = msgspec.msgpack.Encoder()
        #: The pipe when there is one: REGISTER is then written in RESP here (``_send_register``).
        self._pipe = link if isinstance(link, Pipe) else None
        self._decoder = msgspec.json.Decoder(Binding)
        self._register = _Script(_REGISTER_LUA)
        self._remove_all = _Script(_REMOVE_ALL_LUA)
        self._remove_one = _Script(_REMOVE_ONE_LUA)
        self._expire_bucket = _Script(_EXPIRE_BUCKET_LUA)
        self._conn_index = _Script(_CONN_INDEX_LUA)
        #: REGISTER's EVALSHA in RESP up to its keys, and per bucket the pieces of its keys.
        self._register_head = b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n4\r\n" % (
            self._register.sha.encode())
        self._register_keys = [_bucket_wire(tag.encode()) for tag in self._tags]
        #: Per bucket, its sweep's arguments but the sweep's own two: 256 script calls a
        #: second, each packed by hiredis with a repr(now) cost ~24k instructions (callgrind).
        self._sweep_args = [
            (f"{tag}:exp", f"{tag}:aors", f"{tag}:b:", f"{tag}:k:", KNOWN_USER_TTL)
            for tag in self._tags
        ]
        self._sweep_heads = [
            b"*10\r\n" + _bulk(("EVALSHA", self._expire_bucket.sha, 2, *args))
            for args in self._sweep_args
        ]

    @classmethod
    def from_url(cls, url: str, *, timeout: float = CALL_TIMEOUT, **kw: Any) -> RedisRegistry:
        """Build from ``redis://``, ``redis+cluster://`` or ``redis://...?cluster=1`` (lazy)."""
        plain, cluster, prefix = parse_url(url)
        if not cluster and plain.startswith("redis://") and "?" not in plain:
            return cls(Pipe(plain, timeout, _SCRIPTS), prefix=prefix, timeout=timeout, **kw)
        client: Redis | RedisCluster
        common: dict[str, Any] = {
            "socket_timeout": timeout, "socket_connect_timeout": timeout,
            "max_connections": MAX_CONNECTIONS,
        }
        if cluster:
            client = RedisCluster.from_url(plain, **common)
        else:
            # No retries inside redis-py: the caller's bound is the whole budget, and a failed
            # call is answered 503 while the broken connection is replaced for the next call.
            if plain.startswith("redis://"):
                common["connection_class"] = HiredisConnection
            client = Redis.from_url(plain, retry=Retry(NoBackoff(), 0), **common)
        return cls(Batcher(client, timeout, _SCRIPTS), prefix=prefix, timeout=timeout, **kw)

    # -- keys -----------------------------------------------------------------------------------

    def _tag(self, aor: str) -> str:
        return self._tags[zlib.crc32(aor.encode()) % NBUCKETS]

    def _aor_keys(self, aor: str) -> list[str]:
        tag = self._tag(aor)
        return [f"{tag}:b:{aor}", f"{tag}:exp", f"{tag}:aors", f"{tag}:k:{aor}"]

    def _conn_key(self, connection_id: str) -> str:
        return f"{{{self._prefix}:c:{connection_id}}}"

    # -- plumbing -------------------------------------------------------------------------------

    def _call(self, *args: Any) -> Awaitable[Any]:
        """Send one command now (it joins this tick's round trip); await its reply."""
        return self._link.submit(args)

    def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        """Send the script now (it joins this tick's round trip); await its reply.  A Redis
        whose script cache is empty answers NOSCRIPT; the link sends it again as EVAL."""
        return self._link.submit(("EVALSHA", script.sha, len(keys), *keys, *args))

    def _send_register(self, aor: str, payload: bytes) -> Awaitable[Any]:
        """The register script for ``aor`` with its one packed argument, sent now.  On the pipe
        the command is written here from pieces made once per bucket: hiredis' generic packer
        took ~3.6 us for it (sprintf per argument), this ~1 us (timeit, the same bytes:
        test_redis holds them equal)."""
        if self._pipe is None:
            return self._eval(self._register, self._aor_keys(aor), [payload])
        return self._pipe.send(self.register_command(aor, payload))

    def register_command(self, aor: str, payload: bytes) -> bytes:
        """The register script's EVALSHA in RESP, as ``hiredis.pack_command`` writes it."""
        name = aor.encode()
        hash_prefix, middle, known_prefix = self._register_keys[zlib.crc32(name) % NBUCKETS]
        size = b"%d" % (len(hash_prefix) + len(name))
        return b"".join((
            self._register_head,
            b"$", size, b"\r\n", hash_prefix, name, b"\r\n",            # KEYS[1] {P:N}:b:<aor>
            middle,                                                       # {P:N}:exp, {P:N}:aors
            b"$", size, b"\r\n", known_prefix, name, b"\r\n",           # KEYS[4] {P:N}:k:<aor>
            b"$%d\r\n" % len(payload), payload, b"\r\n",                 # ARGV[1]
        ))

    def _check(self, aor: str, reply: list[bytes], cseq: int) -> list[bytes]:
        status = reply[0]
        if status == b"OOO":
            raise OutOfOrder(aor, reply[1].decode(), int(reply[2]), cseq)
        if status == b"FULL":
            raise RegistryFull(f"{aor}: more than {self._max_per_aor} bindings", "per_aor")
        return reply[1:]

    # -- bindings -------------------------------------------------------------------------------

    async def register(
        self, aor: str, call_id: str, cseq: int, changes: Sequence[ContactChange], now: float
    ) -> list[Binding]:
        items: list[Any] = [aor, call_id, cseq, now, self._max_per_aor, KNOWN_USER_TTL]
        by_conn: dict[str, tuple[list[str], int]] = {}
        #: What this REGISTER writes, by key (the last change of a key wins, as in the script).
        own: dict[str, Binding | None] = {}
        for change in changes:
            key = binding_key(change)
            if change.expires > 0:
                binding = own[key] = make_binding(aor, change, call_id, cseq, now)
                items += (key, binding.expires_at, self._encoder.encode(binding).decode())
                if change.connection_id is not None and change.reg_id is None:  # see base.py
                    members, ttl = by_conn.get(change.connection_id, ([], 0))
                    members.append(aor + _SEP + key)
                    by_conn[change.connection_id] = (members, max(ttl, change.expires + 1))
            else:
                own[key] = None
                items += (key, 0, "")
        # Everything is sent before the first await: one round trip for all of it.
        indexes = [
            self._eval(self._conn_index, [self._conn_key(conn)], [ttl, *members])
            for conn, (members, ttl) in by_conn.items()
        ]
        script = self._send_register(aor, self._packer.encode(items))
        if indexes:  # a WebSocket / TCP binding
            *_, reply = await _all([*indexes, script])
        else:
            reply = await script
        others = self._check(aor, reply, cseq)
        bindings = [b for b in own.values() if b is not None]
        if others:
            bindings += [self._decoder.decode(v) for v in others]
        return sort_bindings(bindings)

    async def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> int:
        reply = await self._eval(
            self._remove_all, self._aor_keys(aor), [aor, call_id, cseq, repr(now), KNOWN_USER_TTL]
        )
        return int(self._check(aor, reply, cseq)[0])

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        values = await self._call("HVALS", self._aor_keys(aor)[0])
        bindings = [self._decoder.decode(v) for v in values]
        return sort_bindings([b for b in bindings if b.expires_at > now])

    async def remove_binding(self, aor: str, key: str) -> bool:
        return await self._remove(aor, key, "") == 1

    async def _remove(self, aor: str, key: str, connection_id: str) -> int:
        return int(await self._remove_sent(aor, key, connection_id))

    def _remove_sent(self, aor: str, key: str, connection_id: str) -> Awaitable[Any]:
        return self._eval(
            self._remove_one, self._aor_keys(aor), [aor, key, connection_id, KNOWN_USER_TTL]
        )

    async def remove_connection(self, connection_id: str) -> int:
        conn_key = self._conn_key(connection_id)
        members: list[bytes] = await self._call("SMEMBERS", conn_key)
        removals = []
        for member in members:
            aor, _, key = member.decode().partition(_SEP)
            removals.append(self._remove_sent(aor, key, connection_id))
        removed = await _all([*removals, self._call("DEL", conn_key)])
        return sum(int(r) for r in removed[:-1])

    async def expire(self, now: float, limit: int) -> int:
        """Visit the buckets round-robin from a cursor, never removing more than ``limit``."""
        remaining, visited = limit, 0
        while remaining > 0 and visited < NBUCKETS:
            group = min(64, remaining, NBUCKETS - visited)
            per_bucket = remaining // group
            buckets = [(self._sweep_cursor + i) % NBUCKETS for i in range(group)]
            if self._pipe is None:
                calls = [self._link.submit(self.sweep_args(b, now, per_bucket)) for b in buckets]
            else:
                tail, send = _bulk((repr(now), per_bucket)), self._pipe.send
                calls = [send(self._sweep_heads[b] + tail) for b in buckets]  # sweep_command
            counts = await _all(calls)
            self._sweep_cursor = (self._sweep_cursor + group) % NBUCKETS
            visited += group
            remaining -= sum(int(c) for c in counts)
        return limit - remaining

    def sweep_args(self, bucket: int, now: float, limit: int) -> tuple[Any, ...]:
        """The expiry script's EVALSHA for one bucket, as arguments."""
        exp, aors, *args = self._sweep_args[bucket]
        return ("EVALSHA", self._expire_bucket.sha, 2, exp, aors, *args, repr(now), limit)

    def sweep_command(self, bucket: int, now: float, limit: int) -> bytes:
        """``sweep_args`` in RESP: the bucket's part made once, the sweep's two joined."""
        return self._sweep_heads[bucket] + _bulk((repr(now), limit))

    async def list_aors(self, offset: int = 0, limit: int = 100, prefix: str = "") -> list[str]:
        if offset < 0 or limit < 0 or offset + limit > MAX_LIST_WINDOW:
            raise ValueError(f"offset + limit must be within 0..{MAX_LIST_WINDOW}")
        # 0xFF never occurs in UTF-8, so "[prefix" .. "[prefix\xff" is exactly the prefix range.
        lo: str | bytes = "[" + prefix if prefix else "-"
        hi: str | bytes = ("[" + prefix).encode() + b"\xff" if prefix else "+"
        pages = await _all([
            self._call("ZRANGEBYLEX", f"{tag}:aors", lo, hi, "LIMIT", 0, offset + limit)
            for tag in self._tags
        ])
        merged = heapq.merge(*([m.decode() for m in page] for page in pages))
        return list(merged)[offset : offset + limit]

    async def count_aors(self) -> int:
        return await self._sum_card("aors")

    async def count_bindings(self) -> int:
        return await self._sum_card("exp")

    async def _sum_card(self, name: str) -> int:
        cards = await _all([self._call("ZCARD", f"{t}:{name}") for t in self._tags])
        return sum(int(c) for c in cards)

    async def known_user(self, aor: str) -> bool:
        # Registered now (the hash exists) or within KNOWN_USER_TTL of its last binding going
        # away (the marker is written when an AOR's last binding is removed or expires).
        hash_key, _, _, known_key = self._aor_keys(aor)
        return int(await self._call("EXISTS", hash_key, known_key)) > 0

    # -- dialogs and sessions -------------------------------------------------------------------

    async def _put(self, key: str, data: bytes, ttl: float) -> None:
        if len(data) > MAX_STATE_BYTES:
            raise RegistryFull(f"state blob of {len(data)} bytes > {MAX_STATE_BYTES}")
        await self._call("SET", key, data, "PX", max(1, int(ttl * 1000)))

    async def put_dialog(self, dialog_id: str, data: bytes, ttl: float) -> None:
        await self._put(f"{self._prefix}:d:{dialog_id}", data, ttl)

    async def get_dialog(self, dialog_id: str) -> bytes | None:
        value: bytes | None = await self._call("GET", f"{self._prefix}:d:{dialog_id}")
        return value

    async def delete_dialog(self, dialog_id: str) -> bool:
        return int(await self._call("DEL", f"{self._prefix}:d:{dialog_id}")) == 1

    async def claim(self, key: str, ttl: float) -> bool:
        # SET NX: one atomic command, whichever node asks first gets True.
        done = await self._call("SET", f"{self._prefix}:c:{key}", b"1", "NX", "PX",
                                max(1, int(ttl * 1000)))
        return bool(done)

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        await self._put(f"{self._prefix}:s:{session_id}", data, ttl)

    async def get_session(self, session_id: str) -> bytes | None:
        value: bytes | None = await self._call("GET", f"{self._prefix}:s:{session_id}")
        return value

    async def delete_session(self, session_id: str) -> bool:
        return int(await self._call("DEL", f"{self._prefix}:s:{session_id}")) == 1

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("PING")

    async def close(self) -> None:
        await self._link.close()

    @property
    def pipeline_stats(self) -> tuple[int, int]:
        """(pipelines sent, commands sent): commands / pipelines is the batching factor."""
        return self._link.batches, self._link.commands


def _bulk(args: tuple[Any, ...]) -> bytes:
    """``args`` as RESP bulk strings, without the command's ``*<count>`` line: a part of a
    command written in parts."""
    wire: bytes = hiredis.pack_command(args)
    return wire[wire.index(b"\r\n") + 2 :]


def _bucket_wire(tag: bytes) -> tuple[bytes, bytes, bytes]:
    """A bucket's pieces of the register script's keys: the prefix of the AOR's hash key, the
    two index keys in RESP, the prefix of its "had bindings" key."""
    exp, aors = tag + b":exp", tag + b":aors"
    middle = b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(exp), exp, len(aors), aors)
    return tag + b":b:", middle, tag + b":k:"


async def _all(calls: Sequence[Awaitable[Any]]) -> list[Any]:
    """The replies of calls already sent (so one round trip for all): ``asyncio.gather`` would
    make a task of each.  Every call is awaited even after one failed; the first error is
    raised."""
    replies: list[Any] = []
    error: BaseException | None = None
    for call in calls:
        try:
            replies.append(await call)
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
    return replies
