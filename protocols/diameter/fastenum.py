"""An ``Enum`` base whose members hash by identity.

``enum.Enum.__hash__`` is a Python function (``hash(self._name_)``); the state tables look up
``(state, input)`` tuples for every message, so that call showed up as the largest single cost
in the server's profile.  Members are singletons compared by identity, so the C-level
``object.__hash__`` is equally correct and an order of magnitude cheaper.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["FastEnum"]


class FastEnum(Enum):
    __hash__ = object.__hash__
