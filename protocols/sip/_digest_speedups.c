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

#define _GNU_SOURCE  /* memmem */
#include "_digest_speedups.h"

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

/* The classes ``next_item`` scans by, one table look-up per character instead of four or five
 * comparisons (the scan was ~1.9k of the ~5.8k instructions per Authorization value,
 * callgrind): NAME, a name's characters (visible but ``=``, ``,``, ``"``); TOKEN, a token
 * value's (visible but ``,``, ``"``); QUOTED, what a quoted value may hold without leaving the
 * subset (tab, space and visible characters but ``"`` and ``\``). */
enum { C_NAME = 1, C_TOKEN = 2, C_QUOTED = 4 };
static unsigned char classes[256];

static void
init_classes(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if (is_visible((Py_UCS1)c) && c != ',' && c != '"') {
            k |= C_TOKEN;
            if (c != '=') {
                k |= C_NAME;
            }
        }
        if ((c == '\t' || (c >= 0x20 && c < 0x7f)) && c != '"' && c != '\\') {
            k |= C_QUOTED;
        }
        classes[c] = k;
    }
}

/* One auth-param (RFC 7616 section 3.4, name=token or name="quoted") at s[*pos]: the spans
 * of its name and its value (quotes stripped), with *pos moved past the separator that follows
 * ([ \t]* "," [ \t,]*, or the end).  -1 for anything the fast path leaves to the Python loop
 * (an escape or a control character in a quoted value, no "=", garbage before the comma). */
typedef struct {
    Py_ssize_t name, name_len, value, value_len;
} item_t;

static int
next_item(const Py_UCS1 *s, Py_ssize_t *pos, Py_ssize_t end, item_t *it)
{
    Py_ssize_t i = *pos;
    it->name = i;
    while (i < end && (classes[s[i]] & C_NAME)) {
        i++;
    }
    it->name_len = i - it->name;
    while (i < end && is_blank(s[i])) {
        i++;
    }
    if (i >= end || s[i] != '=') {
        return -1;
    }
    i++;
    while (i < end && is_blank(s[i])) {
        i++;
    }
    if (i < end && s[i] == '"') {
        it->value = ++i;
        while (i < end && (classes[s[i]] & C_QUOTED)) {
            i++;
        }
        if (i >= end || s[i] != '"') {
            return -1;  /* no closing quote, an escape or a control character */
        }
        it->value_len = i - it->value;
        i++;
    } else {
        it->value = i;
        while (i < end && (classes[s[i]] & C_TOKEN)) {
            i++;
        }
        it->value_len = i - it->value;
    }
    while (i < end && is_blank(s[i])) {
        i++;
    }
    if (i < end) {
        if (s[i] != ',') {
            return -1;
        }
        while (i < end && (is_blank(s[i]) || s[i] == ',')) {
            i++;
        }
    }
    *pos = i;
    return 0;
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
        item_t it;
        if (next_item(s, &i, end, &it) < 0) {
            goto fallback;
        }
        Py_ssize_t len = it.name_len;
        if (len == 0 || len >= (Py_ssize_t)sizeof(name)) {
            goto fallback;
        }
        for (Py_ssize_t k = 0; k < len; k++) {
            Py_UCS1 c = s[it.name + k];
            name[k] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
        }
        name[len] = '\0';
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
        PyObject *value = PyUnicode_Substring(arg, it.value, it.value + it.value_len);
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

/* -- credentials: a whole Authorization value, for ``digest.parse_credentials`` -------------
 *
 * ``params`` builds a dict (ten keys made and hashed) that parse_credentials then reads and
 * checks field by field: ~32k instructions per authenticated request (callgrind).  This
 * checks the fields as parse_credentials checks them, with no dict, and calls ``make``
 * (digest.Credentials) with them in order: no tuple of them to unpack in Python.  Its subset is ``params``'s, with the scheme ``Digest`` and one space first,
 * and only the ten names parse_credentials reads (another name, repeated or not, goes to the
 * Python loop, as does every error: this never raises for a value).  test_digest.py holds it
 * to parse_credentials differentially. */

enum { F_USERNAME, F_REALM, F_NONCE, F_URI, F_RESPONSE, F_ALGORITHM, F_QOP, F_NC, F_CNONCE,
       F_OPAQUE, F_COUNT };
static const char *const field_names[F_COUNT] = {
    "username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce",
    "opaque"};
static const Py_ssize_t field_lens[F_COUNT] = {8, 5, 5, 3, 8, 9, 3, 2, 6, 6};
/* Canonical algorithm names (digest.ALGORITHMS) and qop values, made once. */
static PyObject *md5_name, *sha256_name, *sha512_256_name, *qop_auth, *qop_auth_int;

static PyObject *
credentials(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "credentials(value: str, make)");
        return NULL;
    }
    PyObject *arg = args[0], *make = args[1];
    if (!PyUnicode_Check(arg) || !PyUnicode_IS_ASCII(arg)) {
        Py_RETURN_NONE;
    }
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(arg);
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    Py_ssize_t i = 0;
    while (i < n && (is_blank(s[i]) || s[i] == '\r' || s[i] == '\n')) {
        i++;
    }
    if (n - i < 7 || !lower_eq((const char *)s + i, 6, "digest") || s[i + 6] != ' ') {
        Py_RETURN_NONE;
    }
    i += 7;
    Py_ssize_t end = n;
    while (end > i && (is_blank(s[end - 1]) || s[end - 1] == '\r' || s[end - 1] == '\n' ||
                       s[end - 1] == ',')) {
        end--;
    }
    Py_ssize_t vs[F_COUNT], vl[F_COUNT];
    for (int f = 0; f < F_COUNT; f++) {
        vs[f] = -1;
        vl[f] = 0;
    }
    while (i < end && (is_blank(s[i]) || s[i] == ',')) {
        i++;
    }
    while (i < end) {
        item_t it;
        if (next_item(s, &i, end, &it) < 0) {
            Py_RETURN_NONE;
        }
        int field = -1;
        for (int f = 0; f < F_COUNT; f++) {
            if (it.name_len == field_lens[f] &&
                lower_eq((const char *)s + it.name, it.name_len, field_names[f])) {
                field = f;
                break;
            }
        }
        if (field < 0 || vs[field] >= 0) {
            Py_RETURN_NONE;  /* another name, or one twice: the Python loop */
        }
        vs[field] = it.value;
        vl[field] = it.value_len;
    }
    for (int f = F_USERNAME; f <= F_RESPONSE; f++) {
        if (vs[f] < 0) {
            Py_RETURN_NONE;  /* missing: parse_credentials says which */
        }
    }
    PyObject *algorithm = md5_name;  /* RFC 7616 §3.3: the default */
    if (vs[F_ALGORITHM] >= 0) {
        const char *a = (const char *)s + vs[F_ALGORITHM];
        Py_ssize_t al = vl[F_ALGORITHM];
        algorithm = lower_eq(a, al, "md5") ? md5_name
                    : lower_eq(a, al, "sha-256") ? sha256_name
                    : lower_eq(a, al, "sha-512-256") ? sha512_256_name : NULL;
        if (algorithm == NULL) {
            Py_RETURN_NONE;
        }
    }
    PyObject *qop = Py_None;
    unsigned long nc = 0;
    if (vs[F_QOP] >= 0) {
        const char *q = (const char *)s + vs[F_QOP];
        Py_ssize_t ql = vl[F_QOP];
        qop = lower_eq(q, ql, "auth") ? qop_auth : lower_eq(q, ql, "auth-int") ? qop_auth_int
                                                                               : NULL;
        if (qop == NULL || vl[F_NC] != 8 || vs[F_CNONCE] < 0 || vl[F_CNONCE] == 0) {
            Py_RETURN_NONE;  /* RFC 7616 §3.4: qop needs nc (8 hex digits) and cnonce */
        }
        for (Py_ssize_t k = 0; k < 8; k++) {
            Py_UCS1 c = s[vs[F_NC] + k];
            int d = (c >= '0' && c <= '9') ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (d < 0) {
                Py_RETURN_NONE;
            }
            nc = nc * 16 + (unsigned long)d;
        }
    }
    /* The fields, in order, handed to ``make`` (digest.Credentials) without a tuple. */
    PyObject *fields[F_COUNT] = {NULL};
    PyObject *out = NULL;
    for (int f = F_USERNAME; f <= F_URI; f++) {
        if ((fields[f] = PyUnicode_Substring(arg, vs[f], vs[f] + vl[f])) == NULL) {
            goto done;
        }
    }
    if ((fields[F_RESPONSE] = PyUnicode_New(vl[F_RESPONSE], 127)) == NULL) {
        goto done;
    }
    Py_UCS1 *r = PyUnicode_1BYTE_DATA(fields[F_RESPONSE]);
    for (Py_ssize_t k = 0; k < vl[F_RESPONSE]; k++) {
        Py_UCS1 c = s[vs[F_RESPONSE] + k];
        r[k] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + ('a' - 'A')) : c;
    }
    fields[F_ALGORITHM] = Py_NewRef(algorithm);
    fields[F_QOP] = Py_NewRef(qop);
    if ((fields[F_NC] = qop == Py_None ? Py_NewRef(Py_None)
                                       : PyLong_FromUnsignedLong(nc)) == NULL) {
        goto done;
    }
    for (int f = F_CNONCE; f <= F_OPAQUE; f++) {
        fields[f] = vs[f] < 0 ? Py_NewRef(Py_None)
                              : PyUnicode_Substring(arg, vs[f], vs[f] + vl[f]);
        if (fields[f] == NULL) {
            goto done;
        }
    }
    out = PyObject_Vectorcall(make, fields, F_COUNT, NULL);
done:
    for (int f = 0; f < F_COUNT; f++) {
        Py_XDECREF(fields[f]);
    }
    return out;
}


static PyMethodDef methods[] = {
    {"params", params, METH_O,
     "The auth-params of a digest value as a dict, or None when the Python loop must judge."},
    {"credentials", (PyCFunction)(void (*)(void))credentials, METH_FASTCALL,
     "make(*fields of digest.Credentials) from an Authorization value, or None when the "
     "Python code must judge."},
    {"challenge_head", (PyCFunction)(void (*)(void))challenge_head, METH_FASTCALL,
     "(realm, Call-ID, From tag, branch, head to ';tag=', Call-ID and CSeq) of a stateless 401 "
     "to a REGISTER, or None when the request must go the full way."},
    {"challenge_answer", (PyCFunction)(void (*)(void))challenge_answer, METH_FASTCALL,
     "The whole stateless 401 to a REGISTER, the realm when ``ready`` lacks it, or None when "
     "the request must go the full way."},
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
    init_classes();
    challenge_init();
    md5_name = PyUnicode_InternFromString("MD5");
    sha256_name = PyUnicode_InternFromString("SHA-256");
    sha512_256_name = PyUnicode_InternFromString("SHA-512-256");
    qop_auth = PyUnicode_InternFromString("auth");
    qop_auth_int = PyUnicode_InternFromString("auth-int");
    if (md5_name == NULL || sha256_name == NULL || sha512_256_name == NULL ||
        qop_auth == NULL || qop_auth_int == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
