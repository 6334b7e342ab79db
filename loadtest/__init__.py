"""The storm injector: trace replay and signaling storms for capacity tests (``storm`` CLI).

Modules: ``trace`` (the versioned JSON Lines format, docs/trace-format.md), ``synth`` (storm
models), ``pcapimport`` (captures to traces), ``engine`` (the asyncio/uvloop replay engine and
its UAs), ``clienttxn`` (the client transaction table), ``sipmsg`` (pre-rendered requests and
the hot-path response scan), ``diameter`` (the Credit-Control client peer), ``metrics`` and
``report`` (HDR histograms, goodput, knee; JSON and HTML reports), ``responder`` (a trivial
SIP responder to measure the injector itself) and ``cli``.
"""
