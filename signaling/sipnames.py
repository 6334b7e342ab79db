"""Names of the SIP methods and extensions this server knows: the Allow and Supported it
answers with (RFC 3261 §20.5, §20.37) and the bounded metric labels of methods."""

from __future__ import annotations

__all__ = ["ALLOW", "KNOWN_METHODS", "METHOD_LABELS", "SUPPORTED_EXTENSIONS", "MethodLabels"]

#: Methods this server knows (RFC 3261 §27.4 plus common extensions); metric labels use
#: "other" for the rest so a storm of invented methods cannot explode label cardinality.
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
#: Option tags this server implements (Require/Proxy-Require, §8.2.2.3 and §16.3 step 5).
#: RFC 3327 Path, RFC 5626 outbound, RFC 5627 gruu (signaling/flows.py).
SUPPORTED_EXTENSIONS = frozenset({"gruu", "outbound", "path"})
ALLOW = ("INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, PRACK, SUBSCRIBE, NOTIFY, INFO, REFER, "
         "MESSAGE, UPDATE")


class MethodLabels(dict[str, str]):
    """The method as a metric label: unknown ones are "other" (bounded label values).  A
    dict read (``_method[m]``), not a function: ten labels per proxied call, each a Python
    call of its own before (cProfile, ``bench_call_legs --profile``)."""

    def __missing__(self, method: str) -> str:
        return "other"


#: The one table (``signaling.sipcore`` reads it as ``_method``).
METHOD_LABELS = MethodLabels((m, m) for m in KNOWN_METHODS)
