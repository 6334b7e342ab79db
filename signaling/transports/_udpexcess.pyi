# Types of the listening UDP socket's excess drain (_udpexcess.c).

def drain(
    fd: int, passes: int, answers: int, most: int, retry_low: int, retry_high: int,
    extra: bytes, passed: list[tuple[bytes, tuple[str, int] | tuple[str, int, int, int], float]],
    late: float, salt: int, band: int, sources: bytes, /,
) -> tuple[int, int, float, int | None, int, int, int, int, int, int, int, int, int, int,
           int]: ...
def refusal_tag(call_id: bytes, /) -> str: ...
def set_key(key: bytes, /) -> None: ...
def receive(
    fd: int, most: int,
    got: list[tuple[bytes, tuple[str, int] | tuple[str, int, int, int], float]], /,
) -> tuple[int, int, float, float, int | None, int]: ...
