/* The kernel shed's transaction hash in C (see _udpband.c). */
#ifndef SIGNALING_UDPBAND_H
#define SIGNALING_UDPBAND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

uint32_t udpband_hash(const char *s, Py_ssize_t n, uint32_t salt);

#endif
