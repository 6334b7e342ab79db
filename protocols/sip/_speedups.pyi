# Types of the C fast path of the SIP parser (_speedups.c).
from typing import Any

from .message import Request, Response

FIELDS: dict[str, tuple[str, ...]]

def parse(data: bytes, stream: bool, /) -> Request | Response | None: ...
def setup(
    sip_uri: type[Any], name_addr: type[Any], via: type[Any], cseq: type[Any],
    request: type[Any], response: type[Any], limits: tuple[int, int, int, int, int], /,
) -> None: ...
def forward(
    wire: tuple[bytes, tuple[int, ...]], routes: int, via: str, top: str, max_forwards: int,
    record_routes: str | None, uri: str | None, body: bytes, /,
) -> bytes | None: ...
