"""Sans-I/O Diameter (RFC 6733) with Credit-Control (RFC 4006 / RFC 8506).

Modules, bottom up:

- ``constants``: header/AVP flags, command codes, application ids, Result-Codes.
- ``datatypes``: the §4.2/§4.3 data formats and their value codecs.
- ``codec``: header and AVP wire codec (``Message``, ``Avp``).
- ``dictionary``: AVP/command/application definitions, extensible by the user.
- ``validation``: request checks that raise the §7 errors with Failed-AVP.
- ``framer``: TCP stream framing with a maximum message size.
- ``builders``: answers (E bit, Failed-AVP, Session-Id echo) and requests.
- ``capabilities``: CER/CEA content and application negotiation (§5.3).
- ``watchdog``: RFC 3539 DWR/DWA watchdog table.
- ``peer``: the §5.6 peer state machine table, as responder and initiator, with election.
- ``creditcontrol``: the RFC 4006 §7 server session table and a replaceable credit policy.

Nothing here opens a socket, starts a task or reads a clock: every entry point takes ``now``.
"""
