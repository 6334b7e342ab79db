r"""SIP dialog state, sans-I/O (RFC 3261 §12, with §13.2.2.4 and §15).

A dialog is the peer-to-peer relationship an INVITE (or another dialog-creating request) sets
up.  This module keeps one dialog's state: its id (Call-ID, local tag, remote tag), the route
set, the remote target, the local and remote CSeq numbers and the secure flag, and moves it
through one table, like the transaction machines: a ``(DialogState, DialogInput)`` pair
outside ``TABLE`` raises ``DialogError`` and changes nothing.

    INITIAL --1xx with To tag--> EARLY --2xx--> WAIT_ACK --ACK--> CONFIRMED --BYE--> TERMINATED
       \________________ non-2xx final, timeout, 408/481 ____________________/

The table is the one dialog model of the project: the UAs here (and the injector's) and the
proxy's per-call record (``signaling/dialogs.py``) move through it.  "Waiting for the ACK" is a
state of its own because both sides act on it: the UAS retransmits its 2xx until the ACK
(§13.3.1.4), the UAC must send the ACK (§13.2.2.4), and a proxy sees the ACK pass (§16.11).
INITIAL (a dialog-creating request sent on, nothing back yet) is where a proxy's record starts;
a UA's dialog starts at EARLY or WAIT_ACK, from the response that creates it (§12.1).

The same object serves both sides.  ``Dialog.as_uac`` builds it from the request we sent and
a response we received (§12.1.2: route set from Record-Route *reversed*); ``Dialog.as_uas``
from the request we received and the response we send (§12.1.1: Record-Route *in order*).
Inputs carry the remote party's message when it teaches the dialog something (its Contact,
its Record-Route); our own responses teach nothing, so the UAS passes none.

In-dialog requests are built by ``build_request`` (§12.2.1.1), including the strict-router
case where the first route lacks ``lr``; incoming ones are ordered by ``check_remote_cseq``
(§12.2.2), which returns the status to answer with when the request is out of order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import ClassVar, NamedTuple

from .errors import LocalProtocolError, RemoteProtocolError
from .message import URI, CSeq, NameAddr, Request, Response, SipURI, Via

__all__ = [
    "MAX_CSEQ",
    "TABLE",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogAction",
    "DialogError",
    "DialogId",
    "DialogInput",
    "DialogState",
    "advance",
]

#: §8.1.1.5: the CSeq sequence number MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1

#: Requests whose 2xx replaces the remote target: re-INVITE (§12.2), UPDATE (RFC 3311 §5.1),
#: SUBSCRIBE and NOTIFY (RFC 6665 §4.1.2.1, §4.2.2.1).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})

#: URI parameters not allowed in a Request-URI (§19.1.1 table 1): stripped when a strict
#: router's URI becomes the Request-URI (§12.2.1.1).
_NOT_IN_REQUEST_URI = frozenset({"method"})


class DialogError(LocalProtocolError):
    """A dialog input or operation the dialog's state does not allow."""


class DialogState(IntEnum):
    INITIAL = 0  # the dialog-creating request went on; no response with a To tag yet
    EARLY = 1  # a 101-199 with a To tag created it (§12.1)
    WAIT_ACK = 2  # a 2xx created or confirmed it; its ACK has not been seen yet
    CONFIRMED = 3  # the ACK for the 2xx was sent or received
    TERMINATED = 4  # absorbs late retransmissions until the dialog is dropped


class DialogInput(IntEnum):
    PROVISIONAL = 1  # 101-199 to the dialog-creating request
    SUCCESS = 2  # 2xx to the dialog-creating request (or a retransmission of it)
    FAILURE = 3  # 300-699 to the dialog-creating request: early dialogs end (§12.3)
    ACK = 4  # the ACK for the 2xx (§13.2.2.4 sent, §13.3.1.4 received)
    TARGET_REFRESH = 5  # an accepted target refresh request (§12.2)
    BYE = 6  # BYE sent or received (§15)
    GONE = 7  # 481 or 408 to an in-dialog request (§12.2.1.2)
    TIMEOUT = 8  # no answer in time, or a maximum duration passed (a proxy's policy)


class DialogAction(IntEnum):
    UPDATE_TARGET = 1  # remote target := the remote message's Contact
    RECOMPUTE_ROUTES = 2  # §13.2.2.4: the 2xx recomputes an early dialog's route set


class DialogId(NamedTuple):
    """§12: Call-ID, local tag and remote tag.  A missing tag (RFC 2543 peer) is ``""``.

    A named tuple rather than a frozen dataclass: one is built for every in-dialog request a
    UA matches, and a tuple is built several times faster (the injector's UAS does it at
    thousands of calls per second).
    """

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_incoming_request(cls, request: Request) -> DialogId:
        """The id of the dialog an in-dialog request we received belongs to (§12.2.2)."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def of_incoming_response(cls, response: Response) -> DialogId:
        """The id of the dialog a response to our request belongs to (§12.1.2)."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


_S, _I, _A = DialogState, DialogInput, DialogAction
_Table = dict[tuple[DialogState, DialogInput], tuple[tuple[DialogAction, ...], DialogState]]
_NONE: tuple[DialogAction, ...] = ()

#: (state, input) -> (actions, next state).  A pair that is not listed is an error.
TABLE: _Table = {
    (_S.INITIAL, _I.PROVISIONAL): ((_A.UPDATE_TARGET,), _S.EARLY),
    (_S.INITIAL, _I.SUCCESS): ((_A.UPDATE_TARGET,), _S.WAIT_ACK),
    (_S.INITIAL, _I.FAILURE): (_NONE, _S.TERMINATED),
    (_S.INITIAL, _I.TIMEOUT): (_NONE, _S.TERMINATED),
    # §12.1.2: later provisionals may carry a new Contact; RFC 3311 UPDATE refreshes an
    # early dialog's target too.
    (_S.EARLY, _I.PROVISIONAL): ((_A.UPDATE_TARGET,), _S.EARLY),
    (_S.EARLY, _I.SUCCESS): ((_A.RECOMPUTE_ROUTES, _A.UPDATE_TARGET), _S.WAIT_ACK),
    (_S.EARLY, _I.FAILURE): (_NONE, _S.TERMINATED),
    (_S.EARLY, _I.TARGET_REFRESH): ((_A.UPDATE_TARGET,), _S.EARLY),
    (_S.EARLY, _I.BYE): (_NONE, _S.TERMINATED),  # §15: the caller may BYE an early dialog
    (_S.EARLY, _I.GONE): (_NONE, _S.TERMINATED),
    (_S.EARLY, _I.TIMEOUT): (_NONE, _S.TERMINATED),
    # A 2xx retransmission or a second fork's 2xx (§13.2.2.4), a late 1xx overtaken by the
    # 2xx, another fork's failure after the 2xx: none changes the dialog (the route set MUST
    # NOT change once confirmed, §12.2).
    (_S.WAIT_ACK, _I.SUCCESS): (_NONE, _S.WAIT_ACK),
    (_S.WAIT_ACK, _I.PROVISIONAL): (_NONE, _S.WAIT_ACK),
    (_S.WAIT_ACK, _I.FAILURE): (_NONE, _S.WAIT_ACK),
    (_S.WAIT_ACK, _I.ACK): (_NONE, _S.CONFIRMED),
    (_S.WAIT_ACK, _I.BYE): (_NONE, _S.TERMINATED),
    (_S.WAIT_ACK, _I.GONE): (_NONE, _S.TERMINATED),
    (_S.WAIT_ACK, _I.TIMEOUT): (_NONE, _S.TERMINATED),
    (_S.CONFIRMED, _I.PROVISIONAL): (_NONE, _S.CONFIRMED),
    (_S.CONFIRMED, _I.SUCCESS): (_NONE, _S.CONFIRMED),  # 2xx retransmission
    (_S.CONFIRMED, _I.FAILURE): (_NONE, _S.CONFIRMED),  # §14.1: a refused re-INVITE
    (_S.CONFIRMED, _I.ACK): (_NONE, _S.CONFIRMED),  # ACK retransmission
    (_S.CONFIRMED, _I.TARGET_REFRESH): ((_A.UPDATE_TARGET,), _S.CONFIRMED),
    (_S.CONFIRMED, _I.BYE): (_NONE, _S.TERMINATED),
    (_S.CONFIRMED, _I.GONE): (_NONE, _S.TERMINATED),
    (_S.CONFIRMED, _I.TIMEOUT): (_NONE, _S.TERMINATED),
    # Terminated absorbs late retransmissions (2xx, ACK, BYE) until the dialog is dropped.
    **{(_S.TERMINATED, i): (_NONE, _S.TERMINATED)
       for i in (_I.PROVISIONAL, _I.SUCCESS, _I.FAILURE, _I.ACK, _I.BYE, _I.GONE, _I.TIMEOUT)},
}


def advance(state: DialogState, inp: DialogInput) -> DialogState:
    """The state ``inp`` leads to from ``state`` (``TABLE``), for records that keep no route
    set (the proxy's); ``DialogError`` if the pair is not allowed."""
    row = TABLE.get((state, inp))
    if row is None:
        raise DialogError(f"dialog input {inp.name} not allowed in state {state.name}")
    return row[1]


class Dialog:
    """One dialog's state (§12.1) and its transitions."""

    TABLE: ClassVar[_Table] = TABLE

    __slots__ = (
        "id",
        "is_uac",
        "local",
        "local_seq",
        "remote",
        "remote_seq",
        "remote_target",
        "route_set",
        "secure",
        "state",
    )

    def __init__(self, *, id: DialogId, state: DialogState, is_uac: bool, local: NameAddr,
                 remote: NameAddr, remote_target: URI, route_set: list[NameAddr],
                 local_seq: int | None, remote_seq: int | None, secure: bool) -> None:
        self.id = id
        self.state = state
        self.is_uac = is_uac
        #: Our From (as UAC) or To (as UAS) value, tag included: the local URI (§12.1).
        self.local = local
        #: The peer's: the remote URI and remote tag.
        self.remote = remote
        self.remote_target = remote_target
        #: Route values to put on in-dialog requests, in sending order.
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure

    def __repr__(self) -> str:
        return f"<Dialog {self.state.name} {self.id}>"

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def as_uac(cls, request: Request, response: Response, *, over_tls: bool = False) -> Dialog:
        """The dialog a 101-299 response to our ``request`` creates (§12.1.2)."""
        return cls.as_uac_of(request.from_, request.uri, request.cseq.seq, response,
                             over_tls=over_tls)

    @classmethod
    def as_uac_of(cls, local: NameAddr, request_uri: URI, seq: int, response: Response, *,
                  over_tls: bool = False) -> Dialog:
        """``as_uac`` from the parts of our request the dialog keeps: the From value we sent
        (local URI and tag), the Request-URI and the CSeq number.  For a UA that renders its
        requests from byte templates and keeps no ``Request`` of them (the injector)."""
        status = response.status
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response creates no dialog (§12.1)")
        if status < 200 and response.to.tag is None:
            raise DialogError("a provisional response without To tag creates no dialog (§12.1)")
        return cls(
            id=DialogId.of_incoming_response(response),
            state=DialogState.EARLY if status < 200 else DialogState.WAIT_ACK,
            is_uac=True,
            local=local,
            remote=response.to,
            # A 1xx may lack Contact; until one is seen the Request-URI is the best target.
            remote_target=response.contacts[0].uri if response.contacts else request_uri,
            route_set=_routes(reversed(response.record_routes)),
            local_seq=seq,
            remote_seq=None,
            secure=over_tls and request_uri.scheme == "sips",
        )

    @classmethod
    def as_uas(cls, request: Request, response: Response, *, over_tls: bool = False) -> Dialog:
        """The dialog our 101-299 ``response`` (with its To tag) to ``request`` creates (§12.1.1).

        Raises ``RemoteProtocolError`` (400) when the request has no Contact (§8.1.1.8).
        """
        status = response.status
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response creates no dialog (§12.1)")
        if response.to.tag is None:
            raise DialogError("a dialog-creating response needs a To tag (§12.1.1)")
        if not request.contacts or request.contact_star:
            raise RemoteProtocolError("Missing Contact in dialog-creating request", 400)
        return cls(
            id=DialogId(request.call_id, response.to.tag, request.from_.tag or ""),
            state=DialogState.EARLY if status < 200 else DialogState.WAIT_ACK,
            is_uac=False,
            local=response.to,
            remote=request.from_,
            remote_target=request.contacts[0].uri,
            route_set=_routes(request.record_routes),
            local_seq=None,
            remote_seq=request.cseq.seq,
            secure=over_tls and request.uri.scheme == "sips",
        )

    # -- the table ---------------------------------------------------------------------------

    def handle(self, inp: DialogInput, msg: Request | Response | None = None) -> DialogState:
        """Apply one input; ``msg`` is the remote party's message, if it brought one."""
        row = self.TABLE.get((self.state, inp))
        if row is None:
            raise DialogError(f"dialog input {inp.name} not allowed in state {self.state.name}")
        actions, nxt = row
        for action in actions:
            _ACTIONS[action](self, msg)
        self.state = nxt
        return nxt

    def on_response(self, response: Response) -> DialogState:
        """UAC: another response to the dialog-creating request (§12.1.2, §13.2.2.4)."""
        return self.handle(_classify(response.status), response)

    def on_response_sent(self, response: Response) -> DialogState:
        """UAS: we sent another response to the dialog-creating request."""
        return self.handle(_classify(response.status))

    def on_in_dialog_response(self, response: Response) -> DialogState:
        """UAC: a final response to a request we sent within the dialog (§12.2.1.2)."""
        status = response.status
        if status in (408, 481):
            return self.handle(DialogInput.GONE)
        if 200 <= status < 300 and response.cseq.method in TARGET_REFRESH_METHODS:
            return self.handle(DialogInput.TARGET_REFRESH, response)
        if response.cseq.method == "BYE" and status >= 200:
            return self.handle(DialogInput.BYE)
        return self.state

    def refresh_target(self, request: Request) -> DialogState:
        """UAS: we accepted a target refresh request (re-INVITE, UPDATE ...) (§12.2.2)."""
        return self.handle(DialogInput.TARGET_REFRESH, request)

    def on_ack(self) -> DialogState:
        """The ACK for the 2xx was sent (UAC, §13.2.2.4) or received (UAS, §13.3.1.4)."""
        return self.handle(DialogInput.ACK)

    def on_bye(self) -> DialogState:
        """A BYE was sent or received (§15): the dialog ends."""
        return self.handle(DialogInput.BYE)

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    # -- CSeq (§12.2.1.1, §12.2.2) ------------------------------------------------------------

    def next_local_cseq(self, initial: int = 1) -> int:
        """The next local sequence number, incremented (§12.2.1.1).

        A UAS dialog starts empty; ``initial`` is its first value (§8.1.1.5 leaves the choice
        to us).
        """
        seq = initial if self.local_seq is None else self.local_seq + 1
        if not 0 <= seq <= MAX_CSEQ:
            raise DialogError(f"local CSeq {seq} out of range (§8.1.1.5)")
        self.local_seq = seq
        return seq

    def check_remote_cseq(self, request: Request) -> int | None:
        """§12.2.2: ``None`` if ``request`` is in order (remote CSeq updated), else 500.

        ACK and CANCEL carry the number of the request they refer to and are never rejected
        (an ACK cannot be answered at all), nor do they move the remote sequence number.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return 500
        self.remote_seq = seq
        return None

    # -- in-dialog requests (§12.2.1.1) --------------------------------------------------------

    def request_target(self) -> tuple[URI, list[NameAddr]]:
        """Request-URI and Route values for the next request (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0].uri
        if isinstance(first, SipURI) and first.lr:
            return self.remote_target, list(self.route_set)
        # Strict router (RFC 2543): its URI becomes the Request-URI, and the remote target
        # travels as the last Route value.
        return (_as_request_uri(first),
                [*self.route_set[1:], NameAddr(self.remote_target)])

    def build_request(
        self,
        method: str,
        *,
        via: Via,
        contact: NameAddr | None = None,
        seq: int | None = None,
        max_forwards: int = 70,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request within this dialog (§12.2.1.1).

        ``seq`` is required for ACK and CANCEL (the number of the request they refer to) and
        otherwise taken from ``next_local_cseq()``.  ``contact`` is the local target, required
        in target refresh requests.
        """
        if self.state is DialogState.TERMINATED:
            raise DialogError("no requests in a terminated dialog")
        if seq is None:
            if method in ("ACK", "CANCEL"):
                raise DialogError(f"{method} reuses its request's CSeq number: pass seq")
            seq = self.next_local_cseq()
        uri, routes = self.request_target()
        return Request(
            method=method,
            uri=uri,
            vias=[via],
            from_=self.local,
            to=self.remote,
            call_id=self.id.call_id,
            cseq=CSeq(seq, method),
            max_forwards=max_forwards,
            routes=routes,
            contacts=[contact] if contact is not None else [],
            content_type=content_type,
            extra=list(extra),
            body=body,
        )


def _classify(status: int) -> DialogInput:
    if status < 200:
        return DialogInput.PROVISIONAL
    return DialogInput.SUCCESS if status < 300 else DialogInput.FAILURE


def _routes(values: Iterable[NameAddr]) -> list[NameAddr]:
    # §12.1.1: the route set is the list of URIs, with all URI parameters; the Record-Route
    # header parameters are not part of it.
    return [NameAddr(v.uri) for v in values]


def _as_request_uri(uri: URI) -> URI:
    """``uri`` without what a Request-URI may not carry (§19.1.1): headers, ``method``."""
    if not isinstance(uri, SipURI):
        return uri
    if uri.headers is None and not any(k in uri.params for k in _NOT_IN_REQUEST_URI):
        return uri
    params = {k: v for k, v in uri.params.items() if k not in _NOT_IN_REQUEST_URI}
    return SipURI(uri.scheme, uri.host, uri.user, uri.password, uri.port, params)


def _update_target(dialog: Dialog, msg: Request | Response | None) -> None:
    if msg is not None and msg.contacts and not msg.contact_star:
        dialog.remote_target = msg.contacts[0].uri


def _recompute_routes(dialog: Dialog, msg: Request | Response | None) -> None:
    # §13.2.2.4: only the UAC recomputes, from the 2xx it received.
    if dialog.is_uac and isinstance(msg, Response):
        dialog.route_set = _routes(reversed(msg.record_routes))


_ACTIONS: dict[DialogAction, Callable[[Dialog, Request | Response | None], None]] = {
    DialogAction.UPDATE_TARGET: _update_target,
    DialogAction.RECOMPUTE_ROUTES: _recompute_routes,
}
