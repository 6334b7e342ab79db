# Types of SIP stream framing's clean-message scan in C (_framing.c).

from protocols.sip.framing import Framed

def whole_messages(data: bytes, max_size: int, max_line: int, out: list[Framed], /) -> int: ...
