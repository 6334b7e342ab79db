# Types of the C fast path of digest auth-param parsing (_digest_speedups.c).

def params(text: str, /) -> dict[str, str] | None: ...
def challenge_head(
    data: bytes, host: str, port: int, /,
) -> tuple[str, str, str | None, str, bytes, bytes] | None: ...
def challenge_answer(
    data: bytes, host: str, port: int, ready: dict[str, tuple[bytes, ...]], /,
) -> bytes | str | None: ...
def credentials(
    value: str, /,
) -> tuple[str, str, str, str, str, str, str | None, int | None, str | None, str | None] | None:
    ...
def md5_response(
    ha1: str, method: str, uri: str, nonce: str, nc: int | None, cnonce: str | None,
    qop: str | None, response: str, body: bytes, /,
) -> bool | None: ...
