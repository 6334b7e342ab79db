# Types of the C fast path of digest auth-param parsing (_digest_speedups.c).

def params(text: str, /) -> dict[str, str] | None: ...
def challenge_head(
    data: bytes, host: str, port: int, /,
) -> tuple[str, str, str | None, str, bytes, bytes] | None: ...
def credentials(
    value: str, /,
) -> tuple[str, str, str, str, str, str, str | None, int | None, str | None, str | None] | None:
    ...
