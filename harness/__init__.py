"""Process harness shared by the tests and the benchmarks (issue 12: benchmarks must not
import ``tests``): the server as a subprocess on private ports (``serverproc``), SIPp runs and
their verdicts (``sipp_runner``, our own scenarios in ``harness/sipp/``), and private Redis /
PostgreSQL instances in temporary directories (``services``)."""
