from typing import Any

class Entry:
    """The pending records of one AOR (``pending._Entry`` in C); read-only attributes."""

    bodies: list[bytes]
    token: bytes
    cseq: int
    bindings: int
    aors: int
    size: int
    latest: float

def absorb(pending: Any, data: bytes, start: int, merges: list[tuple[str, bytes]]) -> None: ...
def write_record(map: Any, head: int, ring: int, aor: str, token: bytes | tuple[str, str],
                 cseq: int, bindings: int, aors: int, latest: float,
                 body: bytes | bytearray) -> int: ...
