"""The cyclic garbage collector's tuning for a server holding many live objects (``tune``).

Message objects are freed by reference counting (the hot path forms no reference cycles: the
proxy breaks its one cycle when a request completes); what the collector would walk are the
long-lived tables (transactions held until Timer J, dialogs, bindings), over and over.  What
was measured in a REGISTER storm (``benchmarks/bench_overload`` at 2x, the server at a quarter
of a core, CPython 3.11): every young collection found nothing (0 collected), and all it had
walked moved on to the middle generation: ~30,000 objects, mostly compacted non-INVITE server
transactions and their timer dicts and heap entries, 16 ms of CPU, 66-79 ms of wall time at
the quota.  The middle generation then accumulates every survivor until its own pass walks
them all at once: in a sustained storm the ~32 s of transactions alive (Timer J), hundreds of
thousands of objects, a pause of a large fraction of a second that makes every client
retransmit.

So the survivors of each young collection are frozen (``gc.freeze``, a list splice) at once:
no collection walks them again, the middle and oldest generations stay empty, and what a
collection walks is bounded by what was allocated since the previous one.  A frozen object
still dies by reference counting when its table lets go of it (Timer J, an unbinding); only
a reference cycle formed among frozen objects would outlive its use, so once an hour
``thaw`` returns them all to the collector for one full collection (the rate of full
collections the earlier thresholds gave).
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["GC_GEN0_THRESHOLD", "GC_GEN1_THRESHOLD", "GC_GEN2_THRESHOLD", "THAW_INTERVAL",
           "YOUNG_INTERVAL", "collect_young", "thaw", "tune"]

#: Net allocations of tracked objects between young collections (default 700: at tens of
#: thousands of messages per second it runs thousands of times a second).  A young pass walks
#: what was allocated since the last one and is still alive: in a REGISTER storm everything
#: (0 collected).  Measured there (bench_overload, SIPp REGISTERs at 2x, a quarter core):
#: 50,000 took 15-32 ms of CPU, 60-138 ms of wall time; 20,000 took 9-14 ms (33-60 ms wall),
#: 10,000 6.4 ms on average (~2 ms a pass plus ~0.44 us an object, ~18% more in all).  But
#: the admission control reads each pause over its 50 ms target as a standing queue and cuts
#: its limit, so more frequent shorter pauses cost goodput: 20,000 against 50,000 back to back,
#: 2,825/2,629 against 3,471/2,789, 2,238/2,253 against 2,464/2,281 REGISTERs/s (2x/10x) and
#: 2,014 against 2,535 over 20 s.  Hence 50,000 kept; freezing removes the larger pause.
GC_GEN0_THRESHOLD = 50_000
#: Young collections between middle-generation ones (CPython's default): survivors are frozen
#: after each young pass, so the middle generation is empty and its pass costs nothing.
GC_GEN1_THRESHOLD = 50
#: Middle-generation collections before a full one is considered; with the survivors frozen
#: there is nothing for it to find either: full collections come from ``thaw``.
GC_GEN2_THRESHOLD = 1000
#: Seconds between young collections run on a timer (``collect_young``), besides the threshold.
#: The threshold counts allocations net of deallocations, old objects' included: in a sustained
#: REGISTER storm (180 s at 2x, a quarter core) the transactions that Timer J ends cancel the
#: count of the new ones, so from 32 s on young passes came every 5-15 s and walked everything
#: born meanwhile, 35-103 ms of CPU (134-418 ms of wall time) against 16-27 ms in the first
#: 30 s.  On a timer, what a pass walks is bounded by the births of one interval.
YOUNG_INTERVAL = 2.0
#: Seconds between ``thaw``s: the full collection that reclaims any cycle formed among frozen
#: objects.  It walks every live object: after 20 s of a REGISTER storm at 2x, 194-204 ms of
#: CPU (most of a second at a quarter core) and no cycle found, hence rare.
THAW_INTERVAL = 3600.0


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    """``gc.callbacks`` entry: after a young or middle collection, freeze what survived it.

    Not after a full one: that is ``thaw``'s, and the next young pass freezes its survivors."""
    if phase == "stop" and info["generation"] < 2:
        gc.freeze()


def tune() -> None:
    """Collect and freeze what is alive at start, set the thresholds, freeze survivors from now
    on.  Idempotent (the callback is installed once)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def collect_young() -> None:
    """A young collection now (its survivors frozen by the callback ``tune`` installed)."""
    gc.collect(0)


def thaw() -> int:
    """Return every frozen object to the collector and collect fully once; the survivors are
    frozen again by the next young collection.  Returns what the full collection found."""
    gc.unfreeze()
    return gc.collect()
