# Types of the C fast path of digest auth-param parsing (_digest_speedups.c).

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

def params(text: str, /) -> dict[str, str] | None: ...
def challenge_head(
    data: bytes, host: str, port: int, /,
) -> tuple[str, str, str | None, str, bytes, bytes] | None: ...
def challenge_answer(
    data: bytes, host: str, port: int, ready: dict[str, tuple[bytes, ...]], /,
) -> bytes | str | None: ...
def credentials(
    value: str,
    make: Callable[[str, str, str, str, str, str, str | None, int | None, str | None,
                    str | None], T], /,
) -> T | None: ...
