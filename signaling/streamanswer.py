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
``StreamAnswer`` by its transaction key (§17.2.3) while it is worked on and for ``LINGER``
seconds after its final answer (``MAX_KEPT`` at most); a duplicate in that time is answered
with the last response sent (§17.2.2: Trying discards it, Proceeding and Completed resend),
never worked on.
"""

from __future__ import annotations

from protocols.sip.message import Response
from protocols.sip.summary import ResponseSummary
from protocols.sip.txkeys import TransactionKey
from signaling.transports.base import Peer

__all__ = ["LINGER", "MAX_KEPT", "StreamAnswer", "StreamAnswers"]

#: Seconds an answered ``StreamAnswer`` is kept to absorb a late duplicate: T2 (§17.1.2.2), the
#: longest a UDP client waits between retransmissions; a duplicate relayed over a connection
#: was sent before the client heard the answer, so it arrives within about that.
LINGER = 4.0
#: ``StreamAnswer``s kept at most (answered or not), about 0.8 kB each (the answer's bytes, the
#: key, the object): under a megabyte, and no more than that left behind in an idle server
#: (they are forgotten as new ones come, not by a timer).  At more REGISTERs over connections
#: than this per LINGER (256/s) the oldest go first, and a duplicate of one that went is worked
#: on again, as before this existed: bounded memory wins.
MAX_KEPT = 1024


class StreamAnswer:
    """In ``Work.txn`` of a request answered without a transaction (see the module's doc).  Of
    two final answers (a 500 after a bug) the first only is sent, as the transaction would."""

    __slots__ = ("answered_at", "data", "key", "last_response", "peer")

    def __init__(self, peer: Peer, key: TransactionKey | None = None) -> None:
        self.peer = peer
        self.key = key
        self.last_response: Response | ResponseSummary | None = None
        #: The wire form of ``last_response``: what a duplicate gets.
        self.data: bytes | None = None
        #: When the final answer went (clock of ``StreamAnswers``), None before.
        self.answered_at: float | None = None


class StreamAnswers:
    """The ``StreamAnswer``s a duplicate may still match: at most ``max_kept``, each for
    ``linger`` seconds after its final answer.  Clock values are passed in (``now``)."""

    def __init__(self, linger: float = LINGER, max_kept: int = MAX_KEPT) -> None:
        self.linger = linger
        self.max_kept = max_kept
        # Insertion order is arrival order: the oldest are at the front.
        self._kept: dict[TransactionKey, StreamAnswer] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, answer: StreamAnswer, now: float) -> None:
        """Keep ``answer`` (if it has a key) to absorb its duplicates; forget the oldest ones
        answered more than ``linger`` ago, and any beyond ``max_kept``."""
        kept = self._kept
        if kept:
            self._expire(now)
        if answer.key is not None:
            kept[answer.key] = answer

    def find(self, key: TransactionKey) -> StreamAnswer | None:
        """The ``StreamAnswer`` a request with ``key`` duplicates, if kept."""
        return self._kept.get(key)

    def _expire(self, now: float) -> None:
        kept = self._kept
        horizon = now - self.linger
        while kept:
            key = next(iter(kept))
            first = kept[key]
            if len(kept) < self.max_kept and (first.answered_at is None
                                              or first.answered_at > horizon):
                return  # the oldest is still worked on, or answered too recently
            del kept[key]
