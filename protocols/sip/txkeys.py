"""Matching SIP messages to transactions, sans-I/O (RFC 3261 §17.1.3, §17.2.3).

The keys a ``TransactionTable`` (txtable.py) files transactions under: a server transaction by
its top Via's branch, sent-by and method (with the RFC 2543 fallback for branches without the
magic cookie), a client transaction by the branch and CSeq method of the request it sent.
"""

from __future__ import annotations

from .errors import TransactionError
from .message import Request, Response, Via

__all__ = ["MAGIC_COOKIE", "TransactionKey", "cancel_target_key", "client_key",
           "client_key_of_request", "server_key"]

#: RFC 3261 §8.1.1.7: a branch starting with this cookie was built by an RFC 3261 element and is
#: unique per transaction, so it alone (with sent-by and method) identifies the transaction.
MAGIC_COOKIE = "z9hG4bK"
_COOKIE_LEN = len(MAGIC_COOKIE)


#: A hashable tuple; RFC 3261 keys start with the branch, RFC 2543 fallback keys with "2543".
TransactionKey = tuple[object, ...]


def _has_cookie(branch: str | None) -> bool:
    # RFC 4475 §3.1.2.? "badbranch": a branch that is exactly the cookie carries no unique
    # part, so it is not trusted as an RFC 3261 branch; the 2543 fallback matches instead.
    return branch is not None and len(branch) > _COOKIE_LEN and branch.startswith(MAGIC_COOKIE)


def _via_key(via: Via) -> tuple[object, ...]:
    return (via.transport, via.host.lower(), via.port, tuple(sorted(via.params.items())))


def _server_key(request: Request, method: str) -> TransactionKey | None:
    vias = request.vias
    if not vias:
        return None
    via = vias[0]
    branch = via.params.get("branch")
    if _has_cookie(branch):
        # §17.2.3: branch, sent-by and method (ACK matches its INVITE).
        return (branch, via.host.lower(), via.port, method)
    # §17.2.3 RFC 2543 fallback: Request-URI, From tag, Call-ID, CSeq number, top Via and the
    # method; the To tag is checked after the lookup (ServerTransaction.matches_to_tag) because
    # an ACK carries the response's tag, not the INVITE's.  URIs compare by their text, which a
    # retransmission or the ACK for a non-2xx repeats exactly (§17.1.1.3).
    return ("2543", str(request.uri), request.from_.tag, request.call_id, request.cseq.seq,
            method, _via_key(via))


def server_key(request: Request) -> TransactionKey | None:
    """The server transaction key of ``request`` (§17.2.3); ``None`` without a Via."""
    method = request.method
    return _server_key(request, "INVITE" if method == "ACK" else method)


def cancel_target_key(cancel: Request) -> TransactionKey | None:
    """The key of the INVITE server transaction a CANCEL refers to (§9.2)."""
    return _server_key(cancel, "INVITE")


def client_key(response: Response) -> TransactionKey | None:
    """The client transaction key of ``response`` (§17.1.3): top Via branch and CSeq method."""
    vias = response.vias
    if not vias:
        return None
    branch = vias[0].params.get("branch")
    if branch is None:
        return None
    return (branch, response.cseq.method)


def client_key_of_request(request: Request) -> TransactionKey:
    branch = request.vias[0].params.get("branch") if request.vias else None
    if not _has_cookie(branch):
        raise TransactionError("a client transaction needs an RFC 3261 branch (§8.1.1.7)")
    return (branch, request.method)
