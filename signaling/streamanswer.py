"""Answering a request that came over a connection without a server transaction, and absorbing
its duplicates.

Over a reliable transport a non-INVITE server transaction has nothing to do (RFC 3261 §17.2.2:
no retransmission to absorb, Timer E being for unreliable transports, §17.1.2.2; Timer J zero),
and the answer goes over the request's connection anyway (§18.2.2).  So a request the TU
answers itself (the registrar's REGISTERs, ``TransactionUser.answers_itself``) that came over
TCP, TLS, WS or WSS gets a ``StreamAnswer`` in place of a transaction: making, filing, running
and removing a transaction was 12 % of a REGISTER over TLS (callgrind, ``bench_instructions
--kinds REGISTER_TLS``: 268,913 instructions with, 236,649 without).

What a transaction would still have done: absorb a duplicate (§17.2: a client does not
retransmit over a reliable transport, but a buggy one, or an edge proxy relaying a UDP
client's retransmission over its connection, may send the same request again).  Without it the
duplicate was a new request: processed a second time, and the registrar answered it 500 (§10.3
step 7: its CSeq is not higher than the binding's).  ``StreamAnswers`` keeps each
``StreamAnswer`` by its transaction key (§17.2.3) for ``LINGER`` to twice that from its
request's arrival (``MAX_KEPT`` at most); a duplicate in that time is answered
with the last response sent (§17.2.2: Trying discards it, Proceeding and Completed resend),
never worked on.
"""

from __future__ import annotations

from protocols.sip.message import Response
from protocols.sip.summary import ResponseSummary
from protocols.sip.txkeys import TransactionKey
from signaling.transports.base import Peer

__all__ = ["LINGER", "MAX_KEPT", "StreamAnswer", "StreamAnswers"]

#: Seconds a ``StreamAnswer`` is kept at least, from its request's arrival (at most twice
#: that, see ``StreamAnswers``): T2 (§17.1.2.2), the longest a UDP client waits between
#: retransmissions; a duplicate relayed over a connection was sent before the client heard the
#: answer, so it arrives within about that after the request.
LINGER = 4.0
#: ``StreamAnswer``s kept at most (answered or not), about 0.8 kB each (the answer's bytes, the
#: key, the object): under a megabyte, and no more than that left behind in an idle server
#: (they are forgotten as new ones come, not by a timer).  At more REGISTERs over connections
#: than half of this per LINGER (128/s) they are kept less long, and a duplicate of one
#: forgotten is worked on again, as before this existed: bounded memory wins.
MAX_KEPT = 1024


class StreamAnswer:
    """In ``Work.txn`` of a request answered without a transaction (see the module's doc).  Of
    two final answers (a 500 after a bug) the first only is sent, as the transaction would."""

    __slots__ = ("data", "key", "last_response", "peer")

    def __init__(self, peer: Peer, key: TransactionKey | None = None) -> None:
        self.peer = peer
        self.key = key
        self.last_response: Response | ResponseSummary | None = None
        #: The wire form of ``last_response``: what a duplicate gets.
        self.data: bytes | None = None


class StreamAnswers:
    """The ``StreamAnswer``s a duplicate may still match, in two generations: new ones go to
    ``recent``; when ``linger`` seconds have passed since it began, or it holds half of
    ``max_kept``, ``recent`` becomes ``older`` and the older one is forgotten whole.  So each is
    kept ``linger`` to twice that (less only past ``max_kept / 2`` per ``linger``), and keeping
    one costs a comparison and a dict insert: no per-entry clock, no scan (a REGISTER over TLS
    is 230k instructions; see the module's doc).  Clock values are passed in (``now``)."""

    __slots__ = ("_rotate_at", "linger", "max_kept", "older", "recent")

    def __init__(self, linger: float = LINGER, max_kept: int = MAX_KEPT) -> None:
        self.linger = linger
        self.max_kept = max_kept
        #: Read by ``SipCore`` on each new request (empty unless requests come over
        #: connections): ``find``'s two dicts.
        self.recent: dict[TransactionKey, StreamAnswer] = {}
        self.older: dict[TransactionKey, StreamAnswer] = {}
        self._rotate_at = -1.0  # the first ``add`` starts a generation

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)

    def add(self, answer: StreamAnswer, now: float) -> None:
        """Keep ``answer`` (if it has a key) to absorb its duplicates."""
        if now >= self._rotate_at or len(self.recent) * 2 >= self.max_kept:
            self.older, self.recent = self.recent, {}
            self._rotate_at = now + self.linger
        if answer.key is not None:
            self.recent[answer.key] = answer

    def find(self, key: TransactionKey) -> StreamAnswer | None:
        """The ``StreamAnswer`` a request with ``key`` duplicates, if kept."""
        return self.recent.get(key) or self.older.get(key)
