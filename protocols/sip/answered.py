"""Final answers kept for the retransmissions of their request, without a transaction, sans-I/O.

A non-INVITE server transaction over UDP that has sent its final response has one thing left to
do (RFC 3261 §17.2.2, Completed): answer each retransmission of the request with that response
again, until Timer J (64*T1) ends it.  No other input can reach it then: a second final
response from the TU is discarded, and a UDP send does not fail as a transport error here.  For
a request its TU answered at once, before any transaction would have been made (a REGISTER
against the in-memory registry: ``signaling.sipcore``), the whole machine is that one state.

``AnsweredRequests`` is that state for all of them at once: the answer's bytes by transaction
key (``txkeys.server_key``), for Timer J each.  Every entry lives the same time, so they expire
in the order they came: a dict for the look-up and a FIFO of deadlines, with no timer, heap
entry, state table or transaction object per request.  With the answer at once, this took a
REGISTER from 299,106 to 218,436 instructions (``bench_auth_legs --legs PLAIN``, callgrind;
the answer at once alone: 303,301 to 258,677), and it leaves nothing to fire at Timer J.

Bounded like the transaction table: ``has_room`` is asked before the request is handled (a
request that cannot be remembered is refused 503 then, since handling its retransmission anew
would answer it differently: §10.3 step 7 refuses a CSeq already seen).
"""

from __future__ import annotations

from collections import deque

from .txkeys import TransactionKey

__all__ = ["AnsweredRequests"]


class AnsweredRequests:
    """Answers' bytes by server transaction key, each kept ``lifetime`` seconds (Timer J)."""

    __slots__ = ("_deadlines", "answers", "lifetime", "max_size")

    def __init__(self, lifetime: float, max_size: int) -> None:
        self.lifetime = lifetime
        self.max_size = max_size
        #: Read by ``SipCore`` for each new request (empty unless it answers at once).
        self.answers: dict[TransactionKey, bytes] = {}
        #: (deadline, key) in the order remembered, which is the order they end in.
        self._deadlines: deque[tuple[float, TransactionKey]] = deque()

    def __len__(self) -> int:
        return len(self.answers)

    def has_room(self, now: float) -> bool:
        """Whether one more answer can be remembered (what has ended is forgotten first)."""
        if len(self.answers) < self.max_size:
            return True
        self._expire(now)
        return len(self.answers) < self.max_size

    def remember(self, key: TransactionKey, data: bytes, now: float) -> None:
        """Keep ``data``, the final answer to the request of ``key``, until Timer J."""
        self._expire(now)
        if key not in self.answers:  # a second final answer is discarded (§17.2.2)
            self._deadlines.append((now + self.lifetime, key))
            self.answers[key] = data

    def find(self, key: TransactionKey, now: float) -> bytes | None:
        """The answer to resend for a retransmission of the request of ``key``, if any."""
        data = self.answers.get(key)
        if data is not None and self._deadlines[0][0] <= now:
            self._expire(now)
            data = self.answers.get(key)
        return data

    def _expire(self, now: float) -> None:
        deadlines, answers = self._deadlines, self.answers
        while deadlines and deadlines[0][0] <= now:
            del answers[deadlines.popleft()[1]]
