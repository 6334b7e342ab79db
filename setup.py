"""Build of the optional C fast paths of the SIP parser (protocols/sip/_speedups*.c), of SIP
stream framing's scan (protocols/sip/_framing.c), of digest auth-param parsing and the stateless
401 (protocols/sip/_digest_speedups.c, _challenge.c), of the registry journals' records
(signaling/registry/_pending_speedups.c), and of the listening UDP socket's excess under a
storm (signaling/transports/_udpexcess.c: read and refused in C).

Everything else is in pyproject.toml.  The extension is optional: without a C compiler the
install still succeeds and the pure-Python parser runs alone (slower, same results).  The test
command sets SIGNALING_REQUIRE_SPEEDUPS=1 so a build failure there is an error, not a silent
fallback, since the tests compare the two parsers.
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "protocols.sip._speedups",
            [
                "protocols/sip/_speedups.c",
                "protocols/sip/_speedups_values.c",
                "protocols/sip/_speedups_model.c",
                "protocols/sip/_speedups_edit.c",
            ],
            depends=["protocols/sip/_speedups.h"],
            # hidden: the files share functions by name; only PyInit__speedups is exported
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-missing-field-initializers",
                "-fvisibility=hidden",
            ],
            optional=os.environ.get("SIGNALING_REQUIRE_SPEEDUPS") != "1",
        ),
        Extension(
            "protocols.sip._digest_speedups",
            ["protocols/sip/_digest_speedups.c", "protocols/sip/_challenge.c"],
            depends=["protocols/sip/_digest_speedups.h"],
            # hidden: the two files share functions by name; only the PyInit is exported
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
            optional=os.environ.get("SIGNALING_REQUIRE_SPEEDUPS") != "1",
        ),
        Extension(
            "protocols.sip._framing",
            ["protocols/sip/_framing.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=os.environ.get("SIGNALING_REQUIRE_SPEEDUPS") != "1",
        ),
        Extension(
            "signaling.registry._pending_speedups",
            ["signaling/registry/_pending_speedups.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=os.environ.get("SIGNALING_REQUIRE_SPEEDUPS") != "1",
        ),
        Extension(
            "signaling.transports._udpexcess",
            ["signaling/transports/_udpexcess.c", "signaling/transports/_udpband.c",
             "signaling/transports/_udprecv.c"],
            depends=["signaling/transports/_udpband.h", "signaling/transports/_udprecv.h"],
            # hidden: the files share functions by name; only PyInit__udpexcess is exported
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
            optional=os.environ.get("SIGNALING_REQUIRE_SPEEDUPS") != "1",
        ),
    ]
)
