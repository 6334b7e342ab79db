# Sourced by scripts/test and scripts/serve.  Prints the Debian packages missing to build the C
# fast path of the SIP parser (protocols/sip/_speedups.c): a C compiler, the C library headers
# and the headers of the Python that builds the virtual environment ($1).
build_deps() {
  command -v gcc >/dev/null || echo gcc
  [ -f /usr/include/stdio.h ] || echo libc6-dev
  "$1" -c "import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    2>/dev/null || echo python3-dev
}
