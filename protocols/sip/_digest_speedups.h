/* What the two C files of the _digest_speedups module share (setup.py builds both into it):
 * _digest_speedups.c (auth-param and credentials parsing, the module) and _challenge.c (the
 * stateless 401 to a REGISTER, from its bytes). */

#ifndef SIGNALING_DIGEST_SPEEDUPS_H
#define SIGNALING_DIGEST_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* ``s[:n]`` equals the lower-case ``lit`` ignoring ASCII case. */
static inline int
lower_eq(const char *s, Py_ssize_t n, const char *lit)
{
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (lit[i] == '\0' || lit[i] != c) {
            return 0;
        }
    }
    return lit[i] == '\0';
}

/* _challenge.c's tables, filled once at import. */
void challenge_init(void);
PyObject *challenge_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *challenge_answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
