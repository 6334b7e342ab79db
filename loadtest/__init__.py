"""The storm injector: trace replay and signaling storms for capacity tests (``storm`` CLI).

Its libraries (hdrhistogram, dpkt, matplotlib, tqdm) are the project's ``storm`` extra: the
server installs without them.  docs/storm.md says how to run a test and read its answer.

Modules: ``trace`` (the versioned JSON Lines format, docs/trace-format.md), ``synth`` (storm
models), ``pcapimport`` (captures to traces); the replay engine: ``engine`` (the schedule, the
tick and the run), ``links`` (UDP sockets, WebSocket connections), ``agents`` (UA, transaction
and caller records; dialogs are ``protocols.sip.dialog``'s, the project's one model),
``uac`` (requests, answers, retries), ``uas`` (our UAs as callees),
``timers`` (retransmissions, Timers B/F, delayed actions), ``timeline`` (per-second series,
lateness), ``clienttxn`` (the client transaction table), ``sipmsg`` (pre-rendered requests and
the hot-path response scan), ``diameter`` (the Credit-Control client peer); judging and
reporting: ``metrics`` (HDR histograms, goodput, knee), ``thresholds`` (k6-like pass/fail),
``diagnose`` (warnings), ``live`` (per-second CSV, live view), ``report`` (the JSON report) and
``reporthtml`` (its HTML page); ``responder`` (a trivial SIP responder to measure the injector
itself), ``replay`` and ``cli`` (the command).
"""
