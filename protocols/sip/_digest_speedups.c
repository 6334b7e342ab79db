/* C fast path of digest auth-param parsing (protocols/sip/digest.py, ``_params``).
 *
 * What it is for: every authenticated request parses one Authorization value of ~10
 * ``name=value`` pairs; the regular expression loop in digest.py costs ~72k instructions for
 * it (callgrind), an eighth of a whole authenticated registration.  This does the same in one
 * C pass.
 *
 * What it is not: a second parser with its own acceptance rules.  It never rejects anything.
 * For every input outside the subset below, well-formed or not, ``params`` returns None and
 * the caller runs the Python loop, which stays the only judge of errors.  So this code only
 * has to be exactly right on what it accepts: the same dict the Python loop returns
 * (tests/protocols/sip/test_digest.py checks that differentially, over valid values, the
 * malformed ones and mutations of them).
 *
 * The subset (anything else: None):
 * - ASCII only; control characters other than tab (and CR/LF at the very end) are left out;
 * - ``[ \t,]*`` then pairs ``name [ \t]* = [ \t]* value`` separated by ``[ \t]* , [ \t,]*``,
 *   then ``[ \t\r\n,]*`` to the end;
 * - a name is 1+ printable characters but ``=``, ``,`` and ``"`` (lower-cased here, as the
 *   Python loop does);
 * - a value is a quoted string without backslash (its text between the quotes) or a token of
 *   printable characters but ``,`` and ``"`` (possibly empty, as in the regular expression);
 * - no name twice (the Python loop raises for it).
 *
 * Memory safety: every scan is bounded by the string's length.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int
is_blank(Py_UCS1 c)
{
    return c == ' ' || c == '\t';
}

/* Printable ASCII but space: what names and tokens are made of (minus their own stops). */
static int
is_visible(Py_UCS1 c)
{
    return c > 0x20 && c < 0x7f;
}

static PyObject *
params(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyUnicode_Check(arg) || !PyUnicode_IS_ASCII(arg)) {
        Py_RETURN_NONE;
    }
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(arg);
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    Py_ssize_t end = n;
    /* The tail the Python loop strips before it starts: [ \t\r\n,]*. */
    while (end > 0 && (is_blank(s[end - 1]) || s[end - 1] == '\r' || s[end - 1] == '\n' ||
                       s[end - 1] == ',')) {
        end--;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    char name[64];
    Py_ssize_t i = 0;
    while (i < end && (is_blank(s[i]) || s[i] == ',')) {
        i++;
    }
    while (i < end) {
        Py_ssize_t start = i;
        while (i < end && is_visible(s[i]) && s[i] != '=' && s[i] != ',' && s[i] != '"') {
            i++;
        }
        Py_ssize_t len = i - start;
        if (len == 0 || len >= (Py_ssize_t)sizeof(name)) {
            goto fallback;
        }
        for (Py_ssize_t k = 0; k < len; k++) {
            Py_UCS1 c = s[start + k];
            name[k] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
        }
        name[len] = '\0';
        while (i < end && is_blank(s[i])) {
            i++;
        }
        if (i >= end || s[i] != '=') {
            goto fallback;
        }
        i++;
        while (i < end && is_blank(s[i])) {
            i++;
        }
        Py_ssize_t vstart, vlen;
        if (i < end && s[i] == '"') {
            vstart = ++i;
            while (i < end && s[i] != '"') {
                if (s[i] == '\\' || (s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f) {
                    goto fallback;
                }
                i++;
            }
            if (i >= end) {
                goto fallback;
            }
            vlen = i - vstart;
            i++;
        } else {
            vstart = i;
            while (i < end && is_visible(s[i]) && s[i] != ',' && s[i] != '"') {
                i++;
            }
            vlen = i - vstart;
        }
        /* Then the separator: [ \t]* "," [ \t,]*, or the end. */
        while (i < end && is_blank(s[i])) {
            i++;
        }
        if (i < end) {
            if (s[i] != ',') {
                goto fallback;
            }
            while (i < end && (is_blank(s[i]) || s[i] == ',')) {
                i++;
            }
        }
        PyObject *key = PyUnicode_FromStringAndSize(name, len);
        if (key == NULL) {
            goto error;
        }
        int seen = PyDict_Contains(out, key);
        if (seen != 0) {
            Py_DECREF(key);
            if (seen < 0) {
                goto error;
            }
            goto fallback;  /* a repeated name: the Python loop raises */
        }
        PyObject *value = PyUnicode_Substring(arg, vstart, vstart + vlen);
        if (value == NULL) {
            Py_DECREF(key);
            goto error;
        }
        int rc = PyDict_SetItem(out, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0) {
            goto error;
        }
    }
    /* What lies past ``end`` was stripped: only [ \t\r\n,]. */
    return out;
fallback:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"params", params, METH_O,
     "The auth-params of a digest value as a dict, or None when the Python loop must judge."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "protocols.sip._digest_speedups",
    "C fast path of digest auth-param parsing (see _digest_speedups.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__digest_speedups(void)
{
    return PyModule_Create(&module_def);
}
