/* C fast path of the SIP parser (protocols/sip/parser.py).
 *
 * What it is for: a distinct INVITE costs ~20 us in the pure-Python parser, nearly all of it
 * interpreter overhead per object built (see benchmarks/bench_sip_parser.py).  This module
 * parses the *common, clean* shape of a SIP message in one C pass and builds the very same
 * model objects (protocols/sip/message.py) the Python parser would.
 *
 * What it is not: a second parser with its own acceptance rules.  It never rejects anything.
 * For every input outside the subset below, valid or not, ``parse`` returns None and the
 * caller runs the pure-Python parser, which stays the only judge of errors, their status codes
 * and reasons, and of every RFC 4475 policy.  So this code only has to be exactly right on
 * what it accepts: the same objects, the same ``raw`` texts, equal field by field
 * (tests/protocols/sip/test_speedups.py checks that differentially over the RFC 4475 and
 * PROTOS corpora, generated messages and mutations of them).
 *
 * The subset (anything else: None):
 * - the header section is printable ASCII (0x20-0x7e) lines separated by CRLF: no folding
 *   (RFC 3261 section 7.3.1), no tabs, no bare CR or LF, no UTF-8;
 * - header names are tokens; typed headers are matched case-insensitively with their compact
 *   forms (section 7.3.3); one-letter names of untyped headers are left to Python (it maps
 *   some of them to canonical names);
 * - Via: ``SIP/2.0/TRANSPORT host[:port];params`` values, one or several per line, parameters
 *   without whitespace, values tokens or quoted strings without backslash (section 20.42;
 *   RFC 7339's ``oc-algo="loss"``); parser.py's regex fast path, or its general path for the
 *   quoted values;
 * - From, To, Contact, Route, Record-Route: ``[display] <sip:...>;params`` values (a
 *   comma-separated list of them for the last three), display a token list or a quoted string
 *   without backslash escapes, parameter values tokens or such quoted strings (WebRTC
 *   clients' ``+sip.instance="<urn:...>"``), lower-case sip/sips scheme (section 20.10, 25.1);
 *   Contact ``*``;
 * - the Request-URI is a lower-case sip: or sips: URI (section 19.1.1);
 * - CSeq ``digits SP method``; numbers in the ranges parser.py accepts.
 *
 * A message also gets ``wire`` (message.py): the bytes and the offsets of what a proxy
 * changes in them (its top Via; for a request its Request-URI, Max-Forwards, first Route and
 * Record-Route lines), noted while its lines are read, so a proxy relays a response by
 * cutting that Via out and forwards a request by a few splices (edit.py) instead of
 * rebuilding it; parser.py leaves ``wire`` None and such messages are rebuilt.
 *
 * Objects are built without running the dataclasses' Python ``__init__``: the instance is
 * allocated with the type's tp_alloc and every slot is stored at the offset its member
 * descriptor gives (what ``object.__new__`` + ``setattr`` would do, minus the interpreter).
 * ``setup`` looks the offsets up once and checks each field is a plain object slot; parser.py
 * checks the field lists here against ``dataclasses.fields`` so a model change cannot go
 * unnoticed.
 *
 * The code is in three files: this one reads the message (header lines, start lines,
 * framing) and defines the module; _speedups_values.c builds header values (parameters, URIs,
 * name-addrs, Via, CSeq, lists); _speedups_model.c holds the character classes and the model
 * classes.  _speedups.h declares what they share.
 *
 * Memory safety: every scan is bounded by an end pointer computed from the bytes object's
 * length; no scan reads past it.  Return convention of the helpers: 1 parsed, 0 not in the
 * subset (the caller returns None), -1 a Python exception is set (MemoryError).
 */

#include "_speedups.h"

/* ---- header dispatch ---- */

typedef enum {
    H_EXTRA, H_BAIL, H_VIA, H_FROM, H_TO, H_CALL_ID, H_CSEQ, H_MAX_FORWARDS, H_EXPIRES,
    H_CONTENT_LENGTH, H_CONTENT_TYPE, H_ROUTE, H_RECORD_ROUTE, H_CONTACT, H_REQUIRE,
    H_PROXY_REQUIRE
} HeaderKind;

static int
eq_lower(const char *p, const char *lower, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c + 32);
        }
        if (c != lower[i]) {
            return 0;
        }
    }
    return 1;
}

/* The typed header a (token) name denotes, case-insensitively, compact forms included
 * (section 7.3.3); other one-letter names are left to parser.py, which gives some of them
 * canonical names. */
static HeaderKind
header_kind(const char *p, Py_ssize_t n)
{
#define IS_NAME(lit) eq_lower(p, lit, n)
    switch (n) {
    case 1:
        switch (p[0] | 0x20) {
        case 'v': return H_VIA;
        case 'f': return H_FROM;
        case 't': return H_TO;
        case 'i': return H_CALL_ID;
        case 'm': return H_CONTACT;
        case 'l': return H_CONTENT_LENGTH;
        case 'c': return H_CONTENT_TYPE;
        default: return H_BAIL;
        }
    case 2: return IS_NAME("to") ? H_TO : H_EXTRA;
    case 3: return IS_NAME("via") ? H_VIA : H_EXTRA;
    case 4:
        if (IS_NAME("from")) return H_FROM;
        return IS_NAME("cseq") ? H_CSEQ : H_EXTRA;
    case 5: return IS_NAME("route") ? H_ROUTE : H_EXTRA;
    case 7:
        if (IS_NAME("call-id")) return H_CALL_ID;
        if (IS_NAME("contact")) return H_CONTACT;
        if (IS_NAME("expires")) return H_EXPIRES;
        return IS_NAME("require") ? H_REQUIRE : H_EXTRA;
    case 12:
        if (IS_NAME("max-forwards")) return H_MAX_FORWARDS;
        if (IS_NAME("content-type")) return H_CONTENT_TYPE;
        return IS_NAME("record-route") ? H_RECORD_ROUTE : H_EXTRA;
    case 13: return IS_NAME("proxy-require") ? H_PROXY_REQUIRE : H_EXTRA;
    case 14: return IS_NAME("content-length") ? H_CONTENT_LENGTH : H_EXTRA;
    default: return H_EXTRA;
    }
#undef IS_NAME
}

/* The layout (``Fields.at``, edit.py's ``Layout``): the ``L_*`` indices, _speedups.h. */

/* Every field of the message being built; NULL until its header is seen. */
typedef struct {
    PyObject *f[M_N];
    long long content_length;  /* -1: no Content-Length header */
    Py_ssize_t nvias;
    const char *data;          /* the start of the bytes, for the offsets in ``at`` */
    Py_ssize_t at[L_N];
} Fields;

/* A typed header whose value is one scalar: a second one is an error in parser.py. */
#define ONCE(slot) do { if (fs->f[slot] != NULL) return BAIL; } while (0)

static int
set_uint(Fields *fs, int slot, const char *p, const char *e, unsigned long long limit)
{
    unsigned long long n;
    ONCE(slot);
    if (uint_of(p, e, 10, limit, &n) != OK) {
        return BAIL;
    }
    fs->f[slot] = PyLong_FromUnsignedLongLong(n);
    return fs->f[slot] == NULL ? ERR : OK;
}

static int
extra_header(Fields *fs, const char *name, const char *name_end, const char *p,
             const char *e)
{
    PyObject *k = str_of(name, name_end), *v = str_of(p, e), *pair;
    int rc;
    if (k == NULL || v == NULL) {
        Py_XDECREF(k);
        Py_XDECREF(v);
        return ERR;
    }
    pair = PyTuple_Pack(2, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    if (pair == NULL) {
        return ERR;
    }
    rc = PyList_Append(fs->f[M_EXTRA], pair);
    Py_DECREF(pair);
    return rc < 0 ? ERR : OK;
}

static int
typed_header(Fields *fs, HeaderKind kind, const char *p, const char *e)
{
    unsigned long long n;
    switch (kind) {
    case H_VIA:
        return via_values(p, e, &fs->f[M_VIAS], &fs->nvias);
    case H_FROM:
        ONCE(M_FROM);
        return name_addr(p, e, &fs->f[M_FROM]);
    case H_TO:
        ONCE(M_TO);
        return name_addr(p, e, &fs->f[M_TO]);
    case H_CALL_ID:
        ONCE(M_CALL_ID);
        if (p == e || memchr(p, ' ', (size_t)(e - p)) != NULL) {
            return BAIL;
        }
        fs->f[M_CALL_ID] = str_of(p, e);
        return fs->f[M_CALL_ID] == NULL ? ERR : OK;
    case H_CSEQ:
        ONCE(M_CSEQ);
        return cseq(p, e, &fs->f[M_CSEQ]);
    case H_MAX_FORWARDS:
        return set_uint(fs, M_MAX_FORWARDS, p, e, 255);
    case H_EXPIRES:
        return set_uint(fs, M_EXPIRES, p, e, 4294967295ULL);
    case H_CONTENT_LENGTH:
        if (fs->content_length >= 0 || uint_of(p, e, 10, 9999999999ULL, &n) != OK) {
            return BAIL;
        }
        fs->content_length = (long long)n;
        return OK;
    case H_CONTENT_TYPE:
        ONCE(M_CONTENT_TYPE);
        fs->f[M_CONTENT_TYPE] = str_of(p, e);
        return fs->f[M_CONTENT_TYPE] == NULL ? ERR : OK;
    case H_ROUTE:
        return name_addrs(p, e, &fs->f[M_ROUTES]);
    case H_RECORD_ROUTE:
        return name_addrs(p, e, &fs->f[M_RECORD_ROUTES]);
    case H_CONTACT:
        if (e - p == 1 && *p == '*') {
            Py_XSETREF(fs->f[M_CONTACT_STAR], Py_NewRef(Py_True));  /* section 10.2.2 */
            return OK;
        }
        return name_addrs(p, e, &fs->f[M_CONTACTS]);
    case H_REQUIRE:
        return tokens(p, e, &fs->f[M_REQUIRE]);
    case H_PROXY_REQUIRE:
        return tokens(p, e, &fs->f[M_PROXY_REQUIRE]);
    default:
        return BAIL;
    }
}

/* The layout offsets of the first Via (``at`` L_VIA_LINE) or Route (L_ROUTE_LINE) line
 * [line, line_e) whose value [v, e) parsed (``Fields.at``).  Its first value ends where
 * parser.py's list split ends it; removing it removes the line, or the value up to the next
 * one. */
static void
note_first_line(Fields *fs, Py_ssize_t *at, const char *line, const char *v, const char *e,
                const char *line_e)
{
    const char *q, *next;
    q = next = list_item_end(v, e);  /* not NULL: via_values took this line */
    while (q > v && q[-1] == ' ') {
        q--;
    }
    if (next < e) {
        next++;  /* the comma, then the spaces before the next value */
        while (next < e && *next == ' ') {
            next++;
        }
    }
    else {
        next = line_e + 2;
    }
    at[0] = line - fs->data;
    at[1] = v - fs->data;
    at[2] = q - fs->data;
    at[3] = next - fs->data;
}

/* One header line [p, line_e): ``name: value``, the value stripped of spaces. */
static int
header_line(Fields *fs, const char *p, const char *line_e)
{
    const char *e = line_e, *colon = memchr(p, ':', (size_t)(e - p)), *v;
    HeaderKind kind;
    int rc;
    if (colon == NULL || colon == p || run(p, colon, C_TOKEN) != colon) {
        return BAIL;
    }
    v = colon + 1;
    while (v < e && *v == ' ') {
        v++;
    }
    while (e > v && e[-1] == ' ') {
        e--;
    }
    kind = header_kind(p, colon - p);
    if (kind == H_EXTRA) {
        return extra_header(fs, p, colon, v, e);
    }
    rc = typed_header(fs, kind, v, e);
    if (rc != OK || fs->at[L_HEAD_END] < 0) {
        return rc;
    }
    if (kind == H_VIA && fs->at[L_VIA_LINE] < 0) {
        note_first_line(fs, &fs->at[L_VIA_LINE], p, v, e, line_e);
    }
    else if (kind == H_ROUTE && fs->at[L_ROUTE_LINE] < 0) {
        note_first_line(fs, &fs->at[L_ROUTE_LINE], p, v, e, line_e);
    }
    else if (kind == H_RECORD_ROUTE && fs->at[L_RR_LINE] < 0) {
        fs->at[L_RR_LINE] = p - fs->data;
    }
    else if (kind == H_MAX_FORWARDS) {  /* one only: a second bails (set_uint) */
        fs->at[L_MF_LINE] = p - fs->data;
        fs->at[L_MF_VALUE] = v - fs->data;
        fs->at[L_MF_END] = e - fs->data;
    }
    return rc;
}

/* ---- start lines ---- */

/* ``Method SP Request-URI SP SIP/2.0`` (section 7.1), exactly two spaces. */
static int
request_line(Fields *fs, const char *p, const char *e)
{
    const char *sp1 = memchr(p, ' ', (size_t)(e - p)), *sp2;
    if (sp1 == NULL || sp1 == p || run(p, sp1, C_TOKEN) != sp1) {
        return BAIL;
    }
    sp2 = memchr(sp1 + 1, ' ', (size_t)(e - sp1 - 1));
    if (sp2 == NULL || e - sp2 != 8 || memcmp(sp2 + 1, "SIP/2.0", 7) != 0) {
        return BAIL;
    }
    if ((fs->f[M_FIRST] = str_of(p, sp1)) == NULL) {
        return ERR;
    }
    fs->at[L_URI] = sp1 + 1 - fs->data;
    fs->at[L_URI_END] = sp2 - fs->data;
    return any_sip_uri(sp1 + 1, sp2, 1, &fs->f[M_SECOND]);
}

/* ``SIP/2.0 SP 3DIGIT [SP reason]`` (section 7.2), status 100-699. */
static int
status_line(Fields *fs, const char *p, const char *e)
{
    unsigned long long code;
    if (e - p < 11 || memcmp(p, "SIP/2.0 ", 8) != 0 ||
        uint_of(p + 8, p + 11, 3, 699, &code) != OK || code < 100) {
        return BAIL;
    }
    p += 11;
    if (p < e) {
        if (*p != ' ') {
            return BAIL;
        }
        p++;
    }
    if ((fs->f[M_FIRST] = PyLong_FromUnsignedLongLong(code)) == NULL ||
        (fs->f[M_SECOND] = str_of(p, e)) == NULL) {
        return ERR;
    }
    return OK;
}

/* ---- the message ---- */

/* The end of the next line of the header section [p, head_end): every byte printable
 * ASCII, ended by CRLF or by head_end.  NULL: outside the subset. */
static const char *
line_end(const char *p, const char *head_end)
{
    const char *q = p;
    while (q < head_end && (unsigned char)*q >= 0x20 && (unsigned char)*q <= 0x7e) {
        q++;
    }
    if (q == head_end) {
        return q;
    }
    if (*q != '\r' || head_end - q < 2 || q[1] != '\n') {
        return NULL;
    }
    return q;
}

static int
headers(Fields *fs, const char *p, const char *head_end)
{
    Py_ssize_t count = 0;
    while (p < head_end) {
        const char *e = line_end(p, head_end);
        int rc;
        if (e == NULL || e == p || e - p > max_header_line || ++count > max_headers) {
            return BAIL;
        }
        if ((rc = header_line(fs, p, e)) != OK) {
            return rc;
        }
        p = e + 2;
    }
    return OK;
}

/* The fields of a complete message, checks that parser.py makes on the whole message, and
 * the body (section 18.3 framing). */
static int
finish(Fields *fs, int is_request, const char *data, Py_ssize_t len, Py_ssize_t offset,
       int stream)
{
    static const int lists[] = {M_ROUTES, M_RECORD_ROUTES, M_CONTACTS, M_REQUIRE,
                                M_PROXY_REQUIRE};
    Py_ssize_t body_len = len - offset;
    if (fs->nvias == 0 || fs->f[M_FROM] == NULL || fs->f[M_TO] == NULL ||
        fs->f[M_CALL_ID] == NULL || fs->f[M_CSEQ] == NULL || fs->nvias > max_vias) {
        return BAIL;
    }
    if (is_request) {
        /* the CSeq method must be the request's (RFC 4475 mismatch01) */
        PyObject *m = ((PyObject **)((char *)fs->f[M_CSEQ] + k_cseq.offset[CS_METHOD]))[0];
        int same = PyUnicode_Compare(m, fs->f[M_FIRST]);
        if (same == -1 && PyErr_Occurred()) {
            return ERR;
        }
        if (same != 0) {
            return BAIL;
        }
    }
    if (fs->content_length >= 0) {
        if (body_len < fs->content_length) {
            return BAIL;
        }
        body_len = (Py_ssize_t)fs->content_length;  /* extra datagram octets are ignored */
    }
    else if (stream) {
        return BAIL;  /* a stream message must say its length (section 18.3) */
    }
    if ((fs->f[M_BODY] = PyBytes_FromStringAndSize(data + offset, body_len)) == NULL) {
        return ERR;
    }
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        if (fs->f[lists[i]] == NULL && (fs->f[lists[i]] = PyList_New(0)) == NULL) {
            return ERR;
        }
    }
    if (fs->f[M_CONTACT_STAR] == NULL) {
        fs->f[M_CONTACT_STAR] = Py_NewRef(Py_False);
    }
    if (fs->f[M_MAX_FORWARDS] == NULL) {
        fs->f[M_MAX_FORWARDS] = Py_NewRef(Py_None);
    }
    if (fs->f[M_EXPIRES] == NULL) {
        fs->f[M_EXPIRES] = Py_NewRef(Py_None);
    }
    if (fs->f[M_CONTENT_TYPE] == NULL) {
        fs->f[M_CONTENT_TYPE] = Py_NewRef(Py_None);
    }
    return OK;
}

/* The first CRLFCRLF in [p, end), or NULL. */
static const char *
find_crlfcrlf(const char *p, const char *end)
{
    while (end - p >= 4) {
        const char *cr = memchr(p, '\r', (size_t)(end - p - 3));
        if (cr == NULL) {
            return NULL;
        }
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n') {
            return cr;
        }
        p = cr + 1;
    }
    return NULL;
}

static int
parse_into(Fields *fs, const char *data, Py_ssize_t len, int stream, int *is_request)
{
    const char *p = data, *end = data + len, *head_end, *first_end;
    int rc;
    if (len > max_message_size) {
        return BAIL;
    }
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
        p += 2;  /* CRLFs before the start line are ignored (section 7.5) */
    }
    head_end = find_crlfcrlf(p, end);
    if (head_end == NULL) {
        return BAIL;
    }
    first_end = line_end(p, head_end);
    if (first_end == NULL || first_end - p > max_header_line) {
        return BAIL;
    }
    *is_request = !(first_end - p >= 4 && memcmp(p, "SIP/", 4) == 0);
    if (p == data) {
        /* a message without CRLFs before its start line: its layout is recorded */
        fs->at[L_HEAD_END] = head_end - data;
    }
    rc = *is_request ? request_line(fs, p, first_end) : status_line(fs, p, first_end);
    if (rc != OK) {
        return rc;
    }
    if ((fs->f[M_VIAS] = PyList_New(0)) == NULL || (fs->f[M_EXTRA] = PyList_New(0)) == NULL) {
        return ERR;
    }
    if (first_end < head_end &&
        (rc = headers(fs, first_end + 2, head_end)) != OK) {
        return rc;
    }
    return finish(fs, *is_request, data, len, (head_end - data) + 4, stream);
}

/* ``Message.wire``: (the bytes, their layout), so a proxy relays a response by cutting its
 * top Via out and forwards a request by a few splices (edit.py); None without Content-Length
 * (a relayed message needs one, section 18.3) or with CRLFs before the start line (the
 * offsets would have to skip them). */
static PyObject *
wire_of(Fields *fs, PyObject *data)
{
    PyObject *layout, *wire;
    if (fs->content_length < 0 || fs->at[L_VIA_LINE] < 0) {  /* CRLF-led */
        return Py_NewRef(Py_None);
    }
    fs->at[L_ROUTES] = PyList_GET_SIZE(fs->f[M_ROUTES]);
    if ((layout = PyTuple_New(L_N)) == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < L_N; i++) {
        PyObject *n = PyLong_FromSsize_t(fs->at[i]);
        if (n == NULL) {
            Py_DECREF(layout);
            return NULL;
        }
        PyTuple_SET_ITEM(layout, i, n);
    }
    wire = PyTuple_Pack(2, data, layout);
    Py_DECREF(layout);
    return wire;
}

static PyObject *
parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Fields fs;
    int is_request = 0, stream, rc;
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(data: bytes, stream: bool)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse() needs bytes");
        return NULL;
    }
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.setup() was not called");
        return NULL;
    }
    if ((stream = PyObject_IsTrue(args[1])) < 0) {
        return NULL;
    }
    memset(&fs, 0, sizeof fs);
    fs.content_length = -1;
    fs.data = PyBytes_AS_STRING(args[0]);
    for (int i = 0; i < L_N; i++) {
        fs.at[i] = -1;
    }
    rc = parse_into(&fs, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), stream,
                    &is_request);
    if (rc != OK) {
        release(fs.f, M_N);
        if (rc == ERR) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if ((fs.f[M_WIRE] = wire_of(&fs, args[0])) == NULL) {
        release(fs.f, M_N);
        return NULL;
    }
    return build(is_request ? &k_req : &k_resp, fs.f);
}

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(data: bytes, stream: bool) -> Request | Response | None\n\n"
     "The message when it is in the common subset this module handles, else None: the\n"
     "caller then runs the pure-Python parser, the only judge of errors."},
    {"forward", (PyCFunction)(void (*)(void))forward, METH_FASTCALL,
     "forward(wire, routes, via, top, max_forwards, record_routes, uri, body) -> bytes | None\n\n"
     "A received request's bytes as a proxy forwards them (see _speedups_edit.c)."},
    {"setup", setup, METH_VARARGS,
     "setup(SipURI, NameAddr, Via, CSeq, Request, Response, limits) -> None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "protocols.sip._speedups",
    "C fast path of the SIP parser (see _speedups.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m, *fields;
    if (init_model() < 0 || (m = PyModule_Create(&module_def)) == NULL) {
        return NULL;
    }
    fields = model_fields();
    if (fields == NULL || PyModule_AddObject(m, "FIELDS", fields) < 0) {
        Py_XDECREF(fields);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
