"""The kernel shed with memory: an eBPF socket filter that remembers what it dropped (issue 13).

Why: the classic filter (``udpshed``) tells a transaction by a hash of its bytes and has no
memory, so it can only drop a share of *all* REGISTERs by hash, new ones and retransmissions
alike.  After a storm the transactions it dropped keep retransmitting, byte for byte, until
their Timer F (RFC 3261 §17.1.2.2: Timer E re-sends the request at 0.5, 1, 2, 4, 4... s, for
64*T1 = 32 s): 120,000-190,000 datagrams/s measured (benchmarks/README.md, bench_recovery,
fourth run).  While the share is up, 92-95% of the *new* REGISTERs are dropped with them;
once it comes down, their retransmissions reach the server, and the drain's band of 503s
(``_udpband.c``) took a quarter core for ~9 s: normal service came back ~24 s after the storm.
A new REGISTER cannot be told from a retransmission by its hash alone, but it can by whether
its hash was dropped before.

What this filter does (a ``BPF_PROG_TYPE_SOCKET_FILTER``, ``SO_ATTACH_BPF``): the same hash of
the same bytes as the classic program (``udpshed.transaction_hash``, ``_udpband.c``), then

* a REGISTER whose hash is in the map of dropped hashes (an LRU hash map) is dropped: a
  retransmission of a transaction dropped before;
* a REGISTER whose hash is under the threshold (and, with sources named, from one of them) is
  added to the map and dropped: a new transaction shed;
* everything else passes: responses, other methods, datagrams too short for ``REGISTER``
  (the length is checked before every load: a legacy load past the end ends the program with
  0, which would drop it), REGISTERs over the threshold.

The threshold, the mode (all sources, or the named ones) and the sources live in maps that
user space updates: revising the share reloads nothing.  The share is revised as
``udpshed``'s, but not held after the storm (``_held_share``): lowering it releases nothing.
When the share comes down (to 0 as soon as the admission limit stops binding) new REGISTERs
pass at once, while the dropped transactions' retransmissions
stay dropped in the kernel until their Timer F, costing the server nothing: no band of 503s
is needed (``band`` is 0), and a new REGISTER that hashes where the storm's were is served,
not refused.  The program stays attached for ``MEMORY`` (Timer F) after the share came to 0,
then comes off with its maps: by then every transaction it dropped has given up (§17.1.2.2).

The map's bound: ``ENTRIES`` (2**20).  It must hold every transaction dropped and still alive,
i.e. dropped in the last 32 s.  At the fourth run's 120,000-190,000 retransmissions/s, with
11 sends per transaction over Timer F (0, 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5 s) each alive
transaction sends ~0.34 times a second: ~350,000-560,000 alive.  2**20 holds that with
room; past it the LRU evicts the oldest first, the transactions nearest their Timer F, whose
next retransmission then passes (served late, as with the classic filter's share lowered):
a graceful limit, not a failure.  LRU maps are preallocated: 80 octets an entry, 84 MB of
kernel memory per socket (its ``memlock``) while the filter is on, created at a storm's first
share (0.03 s, and 0.012 s to load the program: once per storm) and freed when it comes
off.  Keys are the 32-bit hashes: a new REGISTER that collides with one of N held is
dropped, with probability N/2**32 (0.02% at 10**6).  The program counts the transactions it
added and the retransmissions it dropped (``counts``); what the map holds is at most the
first, and at most ``ENTRIES`` (``held`` walks it, for tests and diagnostics).

Loaded with a log buffer: a verifier rejection is logged with the verifier's own words.  If
eBPF cannot load (no permission, an old kernel, not Linux) the classic filter is used, with
one log line.  Only Linux on x86-64 and arm64 (the ``bpf`` system call's number) is tried.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import platform
import socket
import struct
from collections.abc import Iterable

from signaling.transports.udpshed import (
    FINAL_1,
    FINAL_2,
    HOLD,
    M32,
    MAX_SOURCES,
    MIX,
    PAYLOAD,
    SKF_NET_OFF,
    WORDS,
    KernelShed,
    label_positions,
    payload_word,
    threshold,
)

__all__ = ["ENTRIES", "MEMORY", "EbpfShed", "Maps", "assemble", "load", "program"]

log = logging.getLogger(__name__)

#: Dropped transactions remembered at most (see the module docstring).
ENTRIES = 1 << 20
#: Seconds the program stays attached after the share came to 0: Timer F, 64*T1
#: (RFC 3261 §17.1.2.2), the longest a transaction it dropped retransmits.
MEMORY = HOLD

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), -1)
_LIBC = ctypes.CDLL(None, use_errno=True)
# linux/bpf.h
_MAP_CREATE, _MAP_LOOKUP, _MAP_UPDATE, _MAP_DELETE, _MAP_NEXT_KEY, _PROG_LOAD = 0, 1, 2, 3, 4, 5
_ARRAY, _HASH, _LRU_HASH = 2, 1, 9
_SOCKET_FILTER = 1
_SO_ATTACH_BPF = getattr(socket, "SO_ATTACH_BPF", 50)
_SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)
_ATTR = 128  # the bpf_attr passed: zero past the fields each command reads
_LOG = 1 << 20  # the verifier's log, when it rejects
# Opcodes (class | op | source): ALU (32-bit), ALU64, JMP32, JMP, loads and stores.
_MOV32_K, _MOV32_X, _XOR32_X, _MUL32_K, _RSH32_K = 0xB4, 0xBC, 0xAC, 0x24, 0x74
_MOV64_X, _ADD64_K, _MOV64_K = 0xBF, 0x07, 0xB7
_JNE32_K, _JGE32_K, _JEQ64_K, _JNE64_K, _JGE64_X, _JA = 0x56, 0x36, 0x15, 0x55, 0x3D, 0x05
_LD_ABS_W, _LDX_W, _STX_W, _ST_W, _LD_IMM64 = 0x20, 0x61, 0x63, 0x62, 0x18
_XADD_DW = 0xDB  # BPF_STX | BPF_ATOMIC | BPF_DW, imm BPF_ADD
_CALL, _EXIT = 0x85, 0x95
_LOOKUP, _UPDATE = 1, 2  # helpers: bpf_map_lookup_elem, bpf_map_update_elem
_PSEUDO_MAP_FD = 1
_INSN = struct.Struct("<BBhi")
#: The config map's value: threshold (hashes under it are new drops), mode (1: named
#: sources only).
_CONFIG = struct.Struct("<II")
#: The counts map: 0, transactions added to the memory; 1, retransmissions dropped by it.
_ADDED, _REMEMBERED = 0, 1

#: (code, dst, src, off, imm): off may be a label to jump to; a map's imm is its fd.
_Op = tuple[int, int, int, int | str, int]


class Maps:
    """The program's maps: the memory of dropped hashes (LRU), its config, the named sources
    and its counts.  Closed with the program's detach."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self.fds: list[int] = []
        try:
            self.dropped = self._create(_LRU_HASH, 4, 4, entries)
            self.config = self._create(_ARRAY, 4, _CONFIG.size, 1)
            self.sources = self._create(_HASH, 4, 4, MAX_SOURCES)
            self.counts = self._create(_ARRAY, 4, 8, 2)
        except OSError:
            self.close()
            raise

    def _create(self, kind: int, key: int, value: int, entries: int) -> int:
        fd = _bpf(_MAP_CREATE, struct.pack("<IIIII", kind, key, value, entries, 0))
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    def set(self, fd: int, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value,
                                                                                        len(value))
        _bpf(_MAP_UPDATE, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k),
                                      ctypes.addressof(v), 0))

    def get(self, fd: int, key: bytes, size: int) -> bytes | None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(size)
        try:
            _bpf(_MAP_LOOKUP, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k),
                                          ctypes.addressof(v), 0))
        except FileNotFoundError:
            return None
        return v.raw

    def delete(self, fd: int, key: bytes) -> None:
        k = ctypes.create_string_buffer(key, len(key))
        with contextlib.suppress(FileNotFoundError):
            _bpf(_MAP_DELETE, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k), 0, 0))

    def keys(self, fd: int) -> list[bytes]:
        """Every key of a hash map (one system call each)."""
        out: list[bytes] = []
        key, nxt = ctypes.create_string_buffer(4), ctypes.create_string_buffer(4)
        first = True
        while True:
            try:
                _bpf(_MAP_NEXT_KEY, struct.pack("<IIQQ", fd, 0,
                                                0 if first else ctypes.addressof(key),
                                                ctypes.addressof(nxt)))
            except FileNotFoundError:
                return out
            first = False
            out.append(nxt.raw)
            ctypes.memmove(key, nxt, 4)


def _bpf(cmd: int, attr: bytes) -> int:
    """The ``bpf`` system call; OSError with its errno when it fails."""
    if _SYS_BPF < 0:
        raise OSError(38, "bpf: no system call number for " + platform.machine())
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR, b"\0"), _ATTR)
    rc = int(_LIBC.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_long(cmd), buf,
                          ctypes.c_long(_ATTR)))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return rc


def program(maps: Maps, salt: int, words: int = WORDS) -> list[bytes]:
    """The filter (see the module docstring): r6 the packet (legacy loads need it there), r7
    the hash, r8 the datagram's length, r9 the config; the stack holds the key (-4), a value
    (-8) and the source address (-12)."""
    accept: _Op = (_MOV32_K, 0, 0, 0, -1)  # keep all of it, as the classic program's 0xFFFFFFFF
    ops: list[_Op | str] = [
        (_MOV64_X, 6, 1, 0, 0),
        (_LDX_W, 8, 6, 0, 0),  # __sk_buff.len: the UDP length, as classic BPF's BPF_LEN
        (_JGE32_K, 8, 0, 1, PAYLOAD + 8),
        (_JA, 0, 0, "accept", 0),  # too short for "REGISTER": never loaded past
        (_LD_ABS_W, 0, 0, 0, PAYLOAD),
        (_JNE32_K, 0, 0, "accept", payload_word(b"REGI")),
        (_LD_ABS_W, 0, 0, 0, PAYLOAD + 4),
        (_JNE32_K, 0, 0, "accept", payload_word(b"STER")),
        (_MOV32_K, 7, 0, 0, _s32(salt)),
    ]
    # As the classic program: the longest run of words the datagram holds is found first, then
    # entered where it starts (each load within the datagram), the last word first.
    for j in range(words - 1, -1, -1):
        ops.append((_JGE32_K, 8, 0, f"w{j}", PAYLOAD + 12 + 4 * j))
    ops.append((_JA, 0, 0, "final", 0))
    for j in range(words - 1, -1, -1):
        ops += [f"w{j}", (_LD_ABS_W, 0, 0, 0, PAYLOAD + 8 + 4 * j), (_XOR32_X, 7, 0, 0, 0),
                (_MUL32_K, 7, 0, 0, _s32(MIX)), (_MOV32_X, 0, 7, 0, 0),
                (_RSH32_K, 0, 0, 0, 15), (_XOR32_X, 7, 0, 0, 0)]
    ops += ["final"]
    for shift, factor in ((16, FINAL_1), (13, FINAL_2), (16, 0)):
        ops += [(_MOV32_X, 0, 7, 0, 0), (_RSH32_K, 0, 0, 0, shift), (_XOR32_X, 7, 0, 0, 0)]
        if factor:
            ops.append((_MUL32_K, 7, 0, 0, _s32(factor)))
    ops += [
        (_STX_W, 10, 7, -4, 0),
        # Remembered: a retransmission of a transaction dropped before (§17.1.2.2).
        (_LD_IMM64, 1, _PSEUDO_MAP_FD, 0, maps.dropped),
        (_MOV64_X, 2, 10, 0, 0), (_ADD64_K, 2, 0, 0, -4),
        (_CALL, 0, 0, 0, _LOOKUP),
        (_JNE64_K, 0, 0, "remembered", 0),
        (_ST_W, 10, 0, -8, 0),
        (_LD_IMM64, 1, _PSEUDO_MAP_FD, 0, maps.config),
        (_MOV64_X, 2, 10, 0, 0), (_ADD64_K, 2, 0, 0, -8),
        (_CALL, 0, 0, 0, _LOOKUP),
        (_JEQ64_K, 0, 0, "accept", 0),
        (_MOV64_X, 9, 0, 0, 0),
        (_LDX_W, 1, 9, 0, 0),  # the threshold
        (_JGE64_X, 7, 1, "accept", 0),
        (_LDX_W, 1, 9, 4, 0),  # the mode
        (_JEQ64_K, 1, 0, "add", 0),
        (_LD_ABS_W, 0, 0, 0, SKF_NET_OFF + 12),  # IPv4 source (RFC 791)
        (_STX_W, 10, 0, -12, 0),
        (_LD_IMM64, 1, _PSEUDO_MAP_FD, 0, maps.sources),
        (_MOV64_X, 2, 10, 0, 0), (_ADD64_K, 2, 0, 0, -12),
        (_CALL, 0, 0, 0, _LOOKUP),
        (_JEQ64_K, 0, 0, "accept", 0),
        "add",  # a new transaction shed: remembered, dropped
        (_ST_W, 10, 0, -8, 0),
        (_LD_IMM64, 1, _PSEUDO_MAP_FD, 0, maps.dropped),
        (_MOV64_X, 2, 10, 0, 0), (_ADD64_K, 2, 0, 0, -4),
        (_MOV64_X, 3, 10, 0, 0), (_ADD64_K, 3, 0, 0, -8),
        (_MOV64_K, 4, 0, 0, 0),  # BPF_ANY
        (_CALL, 0, 0, 0, _UPDATE),
        (_ST_W, 10, 0, -8, _ADDED),
        (_JA, 0, 0, "count", 0),
        "remembered",
        (_ST_W, 10, 0, -8, _REMEMBERED),
        "count",
        (_LD_IMM64, 1, _PSEUDO_MAP_FD, 0, maps.counts),
        (_MOV64_X, 2, 10, 0, 0), (_ADD64_K, 2, 0, 0, -8),
        (_CALL, 0, 0, 0, _LOOKUP),
        (_JEQ64_K, 0, 0, "drop", 0),
        (_MOV64_K, 1, 0, 0, 1),
        (_XADD_DW, 0, 1, 0, 0),
        "drop", (_MOV32_K, 0, 0, 0, 0), (_EXIT, 0, 0, 0, 0),
        "accept", accept, (_EXIT, 0, 0, 0, 0),
    ]
    return assemble(ops)


def _s32(value: int) -> int:
    """A 32-bit constant as the signed immediate of an instruction (ALU32 uses its 32 bits)."""
    value &= M32
    return value - (1 << 32) if value >= 1 << 31 else value


def assemble(ops: list[_Op | str]) -> list[bytes]:
    """Labels resolved to eBPF's relative jumps (16 bits, from the next instruction); a
    64-bit load takes two slots."""
    at = label_positions(ops, lambda op: 2 if op[0] == _LD_IMM64 else 1)
    out: list[bytes] = []
    for op in ops:
        if isinstance(op, str):
            continue
        code, dst, src, off, imm = op
        target = at[off] - (len(out) + 1) if isinstance(off, str) else off
        assert -(1 << 15) <= target < 1 << 15, op
        out.append(_INSN.pack(code, dst | src << 4, target, imm))
        if code == _LD_IMM64:
            out.append(_INSN.pack(0, 0, 0, 0))
    return out


def load(insns: list[bytes]) -> int:
    """The program's fd; OSError with the verifier's log when it is rejected.  Loaded without
    a log first (the verifier's trace of a program accepted costs it most of its time: 0.10
    against 0.012 s for 940 instructions here, 2026-12-06), again with one only to report a
    rejection."""
    code = b"".join(insns)
    buf = ctypes.create_string_buffer(code, len(code))
    licence = ctypes.create_string_buffer(b"Apache-2.0")  # no GPL-only helper is called
    logbuf = ctypes.create_string_buffer(_LOG)

    def attempt(level: int) -> int:
        attr = struct.pack("<IIQQIIQII16s", _SOCKET_FILTER, len(insns), ctypes.addressof(buf),
                           ctypes.addressof(licence), level, _LOG if level else 0,
                           ctypes.addressof(logbuf) if level else 0, 0, 0, b"sip_shed")
        return _bpf(_PROG_LOAD, attr)

    try:
        return attempt(0)
    except OSError:
        pass
    try:
        return attempt(1)
    except OSError as exc:
        words = logbuf.value.decode("utf-8", "replace").strip()
        if words:
            raise OSError(exc.errno, f"{exc.strerror}; verifier: {words[-2000:]}") from exc
        raise


class EbpfShed(KernelShed):
    """``KernelShed`` with the eBPF filter (``--overload-kernel-shed ebpf``): the same share,
    revised the same way, but the dropped transactions stay dropped when it comes down, and
    no band is refused by the drain."""

    def __init__(self, sock: socket.socket, entries: int = ENTRIES) -> None:
        super().__init__(sock)
        self.entries = entries
        self.maps: Maps | None = None
        #: The classic filter is used (eBPF could not load; logged once).
        self.classic = False
        #: When the share came to 0 with the program attached; ``MEMORY`` (a test
        #: shortens it) after that it comes off.
        self._off_at = float("-inf")
        self.memory = MEMORY
        #: ``counts`` since this shed was made, over every program it loaded (the metrics'
        #: ``sip_overload_kernel_shed_memory``).
        self.totals = {"added": 0.0, "remembered": 0.0}
        self._counted = (0, 0)

    @property
    def filtering(self) -> bool:
        return self.maps is not None or self.share > 0.0

    @property
    def band(self) -> int:
        """None with memory: the retransmissions of what was dropped are still dropped."""
        return super().band if self.classic else 0

    def counts(self) -> tuple[int, int]:
        """Transactions added to the memory, retransmissions dropped by it, so far."""
        if self.maps is None:
            return 0, 0
        got = [self.maps.get(self.maps.counts, struct.pack("<I", i), 8) for i in (0, 1)]
        added, remembered = (struct.unpack("<Q", g)[0] if g else 0 for g in got)
        return added, remembered

    def held(self) -> int:
        """Hashes the memory holds now (walks the map: one system call each)."""
        return 0 if self.maps is None else len(self.maps.keys(self.maps.dropped))

    def revise(self, read_rate: float, served: float, binding: bool,
               heavy: Iterable[str], refused: float = 0.0, now: float = 0.0) -> None:
        super().revise(read_rate, served, binding, heavy, refused, now)
        self._tally()
        if self.maps is not None and not self.share and now - self._off_at >= self.memory:
            self._detach()  # every transaction dropped is past its Timer F

    def _held_share(self, want: float, storm: bool, starving: bool, since: float) -> float:
        """Lowered as soon as ``next_share`` wants it outside the storm's ticks, to 0 as soon
        as the limit stops binding: lowering releases nothing (the dropped transactions stay
        dropped), and a share held for Timer F after the storm dropped 92-95% of the *new*
        REGISTERs with the old ones' retransmissions (bench_recovery, fourth run).  Within
        a storm tick it is only raised, as the classic filter's."""
        if self.classic:
            return super()._held_share(want, storm, starving, since)
        return max(want, self.share) if storm else want

    def _lowered(self, old: float, now: float) -> None:
        if self.classic:
            super()._lowered(old, now)

    def _set(self, share: float, sources: tuple[str, ...]) -> bool:
        if not self.classic and self.maps is None and not self._load():
            self.classic = True
        if self.classic:
            return super()._set(share, sources)
        maps = self.maps
        assert maps is not None
        # As the program stores the address it loads: a number (loads are in network byte
        # order), in the host's order on the stack.
        named = {struct.pack("=I", int(ipaddress.IPv4Address(s))) for s in sources}
        for key in set(maps.keys(maps.sources)) - named:
            maps.delete(maps.sources, key)
        for key in named:
            maps.set(maps.sources, key, b"\0\0\0\0")
        maps.set(maps.config, b"\0\0\0\0", _CONFIG.pack(threshold(share), 1 if named else 0))
        return True

    def _off(self) -> None:
        if self.maps is None:
            super()._off()
            return
        # New REGISTERs pass; the remembered ones are still dropped (their Timer F).
        self.maps.set(self.maps.config, b"\0\0\0\0", _CONFIG.pack(0, 0))
        self.share, self.sources = 0.0, ()
        self._off_at = self._now

    def _load(self) -> bool:
        """The program loaded and attached, with its maps (threshold 0: nothing new dropped
        yet); else one log line, and the classic filter from now on."""
        maps = None
        try:
            maps = Maps(self.entries)
            fd = load(program(maps, self.salt))
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_BPF, struct.pack("i", fd))
            finally:
                os.close(fd)  # the socket holds the program, the program its maps
        except OSError as exc:
            if maps is not None:
                maps.close()
            log.warning("eBPF socket filter not loaded (%s): the classic filter sheds instead",
                        exc)
            return False
        self.maps = maps
        return True

    def _tally(self) -> None:
        added, remembered = self.counts()
        self.totals["added"] += added - self._counted[0]
        self.totals["remembered"] += remembered - self._counted[1]
        self._counted = (added, remembered)

    def _detach(self) -> None:
        super()._detach()
        if self.maps is not None:
            self._tally()
            self.maps.close()
            self.maps = None
        self._counted = (0, 0)
        self._off_at = float("-inf")
