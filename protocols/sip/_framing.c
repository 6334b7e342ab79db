/* The clean-message scan of SIP stream framing (protocols/sip/framing.py, RFC 3261 section 18.3)
 * in C: ``whole_messages(data, max_size, max_line, out)`` is ``framing._whole_messages_py``.
 *
 * Why: framing a REGISTER read over TCP or TLS cost ~24,000 instructions in Python (callgrind,
 * one message per read), a tenth of what the whole server spends on it: a regex for the opening,
 * three finds, a lower-case copy of the header section and a findall for Content-Length.  Here
 * one pass over the header section does the same.
 *
 * The contract (framing.py relies on it, tests/protocols/sip/test_framing.py holds the two equal
 * on generated input): append to ``out`` each message at the front of ``data`` that is complete
 * and frames without question, and return the octets they took.  A message is clean when
 *   - it opens like a start line: "SIP/", or 1..64 method-token characters and a space;
 *   - its first line ends (CRLF) within ``max_line`` octets of its start and holds "SIP/";
 *   - its header section ends (CRLF CRLF, searched from the first line's CRLF);
 *   - exactly one header line, the first line included, is a Content-Length: after an LF (or at
 *     the start), "content-length" or "l" in any case, blanks, a colon, blanks, then a value up
 *     to the line's CRLF with blanks around it trimmed; that value is 1..10 ASCII digits;
 *   - its length (header section, CRLF CRLF, body) is at most ``max_size`` and all in ``data``.
 * Anything else stops the scan: what is left goes through SipStream's own rules, which judge it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_METHOD 64

static int
is_token(unsigned char c)
{
    /* section 25.1 token characters, as framing.py's _TOKEN_CHARS */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return 1;
    }
    return c != 0 && strchr("-.!%*_+`'~", c) != NULL;
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Whether p[0..n) is "SIP/" or a method token and a space. */
static int
opens(const unsigned char *p, Py_ssize_t n)
{
    if (n >= 4 && memcmp(p, "SIP/", 4) == 0) {
        return 1;
    }
    Py_ssize_t i = 0;
    while (i < n && i < MAX_METHOD && is_token(p[i])) {
        i++;
    }
    return i >= 1 && i < n && p[i] == ' ';
}

static const unsigned char *
find(const unsigned char *p, Py_ssize_t n, const char *what, Py_ssize_t len)
{
    if (n < len) {
        return NULL;
    }
    return memmem(p, (size_t)n, what, (size_t)len);
}

/* The Content-Length header lines of the header section p[0..n) (every line ends in CRLF):
 * how many (0, 1, or 2 for "more than one") and, for the one, its digits in *value; -1 for
 * one whose value is not 1..10 digits.  A line with a CR other than before its LF is none (the
 * pattern's value and blanks exclude CR, so it does not match such a line). */
static int
content_length(const unsigned char *p, Py_ssize_t n, long long *value)
{
    int found = 0;
    Py_ssize_t line = 0;
    while (line < n) {
        const unsigned char *lf = memchr(p + line, '\n', (size_t)(n - line));
        Py_ssize_t end = lf ? (Py_ssize_t)(lf - p) : n;
        Py_ssize_t i = line;
        Py_ssize_t name_end = -1;
        if (end - i >= 14) {
            static const char name[] = "content-length";
            Py_ssize_t k = 0;
            while (k < 14 && lower(p[i + k]) == (unsigned char)name[k]) {
                k++;
            }
            if (k == 14) {
                name_end = i + 14;
            }
        }
        if (name_end < 0 && end - i >= 1 && lower(p[i]) == 'l') {
            name_end = i + 1;
        }
        if (name_end >= 0) {
            i = name_end;
            while (i < end && is_blank(p[i])) {
                i++;
            }
            if (i < end && p[i] == ':') {
                /* a Content-Length line: its value, blanks trimmed, up to CR LF */
                i++;
                Py_ssize_t stop = end;
                if (stop > i && p[stop - 1] == '\r') {
                    stop--;
                }
                if (memchr(p + i, '\r', (size_t)(stop - i)) != NULL) {
                    /* a CR inside the line: the pattern does not take it for one */
                    line = end + 1;
                    continue;
                }
                while (i < stop && is_blank(p[i])) {
                    i++;
                }
                while (stop > i && is_blank(p[stop - 1])) {
                    stop--;
                }
                if (++found > 1) {
                    return 2;
                }
                if (stop - i < 1 || stop - i > 10) {
                    return -1;
                }
                long long v = 0;
                for (Py_ssize_t d = i; d < stop; d++) {
                    if (p[d] < '0' || p[d] > '9') {
                        return -1;
                    }
                    v = v * 10 + (p[d] - '0');
                }
                *value = v;
            }
        }
        line = end + 1;
    }
    return found;
}

/* The length of the clean message at p[0..n), or 0. */
static Py_ssize_t
clean_message(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_size, Py_ssize_t max_line)
{
    if (!opens(p, n < MAX_METHOD + 1 ? n : MAX_METHOD + 1)) {
        return 0;
    }
    const unsigned char *crlf = find(p, n < max_line ? n : max_line, "\r\n", 2);
    if (crlf == NULL) {
        return 0;
    }
    Py_ssize_t line_end = crlf - p;
    if (find(p, line_end, "SIP/", 4) == NULL) {
        return 0;
    }
    const unsigned char *blank = find(p + line_end, n - line_end, "\r\n\r\n", 4);
    if (blank == NULL) {
        return 0;
    }
    Py_ssize_t head_end = blank - p;
    long long body = 0;
    if (content_length(p, head_end + 2, &body) != 1) {
        return 0;
    }
    long long total = (long long)head_end + 4 + body;
    if (total > max_size || total > n) {
        return 0;
    }
    return (Py_ssize_t)total;
}

static PyObject *
whole_messages(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_CheckExact(args[0]) || !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "whole_messages(data: bytes, max_size: int, max_line: int, out: list)");
        return NULL;
    }
    PyObject *data = args[0];
    Py_ssize_t max_size = PyLong_AsSsize_t(args[1]);
    if (max_size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t max_line = PyLong_AsSsize_t(args[2]);
    if (max_line == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    Py_ssize_t pos = 0;
    while (pos < n) {
        Py_ssize_t total = clean_message(p + pos, n - pos, max_size, max_line);
        if (total == 0) {
            break;
        }
        PyObject *msg;
        if (total == n) {
            Py_INCREF(data);
            msg = data;
        } else {
            msg = PyBytes_FromStringAndSize((const char *)p + pos, total);
            if (msg == NULL) {
                return NULL;
            }
        }
        int failed = PyList_Append(args[3], msg);
        Py_DECREF(msg);
        if (failed) {
            return NULL;
        }
        pos += total;
    }
    return PyLong_FromSsize_t(pos);
}

static PyMethodDef methods[] = {
    {"whole_messages", (PyCFunction)(void (*)(void))whole_messages, METH_FASTCALL,
     "The clean messages at the front of a stream's bytes (see framing.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_framing", "SIP stream framing's clean-message scan in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__framing(void)
{
    return PyModule_Create(&module);
}
