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
 * A response also gets ``wire`` (message.py): the bytes and the offsets of its top Via, noted
 * while its lines are read, so a proxy relays it by cutting that Via out (edit.py) instead of
 * rebuilding it; parser.py leaves ``wire`` None and such responses are rebuilt.
 *
 * Objects are built without running the dataclasses' Python ``__init__``: the instance is
 * allocated with the type's tp_alloc and every slot is stored at the offset its member
 * descriptor gives (what ``object.__new__`` + ``setattr`` would do, minus the interpreter).
 * ``setup`` looks the offsets up once and checks each field is a plain object slot; parser.py
 * checks the field lists here against ``dataclasses.fields`` so a model change cannot go
 * unnoticed.
 *
 * Memory safety: every scan is bounded by an end pointer computed from the bytes object's
 * length; no scan reads past it.  Return convention of the helpers: 1 parsed, 0 not in the
 * subset (the caller returns None), -1 a Python exception is set (MemoryError).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define OK 1
#define BAIL 0
#define ERR (-1)

/* ---- character classes (RFC 3261 section 25.1), mirrored from parser.py / uri.py ---- */

enum {
    C_TOKEN = 1,   /* token */
    C_USER = 2,    /* user: unreserved / escaped / user-unreserved */
    C_PASS = 4,    /* password */
    C_UPARAM = 8,  /* paramchar of a URI parameter */
    C_UHDR = 16,   /* hname / hvalue characters and the "=" "&" separators */
    C_HOST = 32,   /* hostname characters */
    C_PVAL = 64,   /* generic-param value without quotes: token / host */
    C_HEX = 128,
};

static unsigned char cls_tab[256];

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define UNRESERVED ALNUM "-_.!~*'()"

static void
set_chars(const char *chars, unsigned char bit)
{
    for (; *chars; chars++) {
        cls_tab[(unsigned char)*chars] |= bit;
    }
}

static void
init_classes(void)
{
    set_chars(ALNUM "-.!%*_+`'~", C_TOKEN);
    set_chars(UNRESERVED "&=+$,;?/", C_USER);
    set_chars(UNRESERVED "&=+$,", C_PASS);
    set_chars(UNRESERVED "[]/:&+$", C_UPARAM);
    set_chars(UNRESERVED "[]/?:+$&=", C_UHDR);
    set_chars(ALNUM "-.", C_HOST);
    set_chars(ALNUM "-.!%*_+`'~:[]", C_PVAL);
    set_chars("0123456789ABCDEFabcdef", C_HEX);
}

#define IS(c, bit) (cls_tab[(unsigned char)(c)] & (bit))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALNUM(c) \
    (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))

/* The longest prefix of [p, e) made of class ``bit`` characters. */
static const char *
run(const char *p, const char *e, unsigned char bit)
{
    while (p < e && IS(*p, bit)) {
        p++;
    }
    return p;
}

/* The same where a "%HH" escape also counts as one character (uri.py's unrolled runs: a "%"
 * not followed by two hex digits ends the run). */
static const char *
run_esc(const char *p, const char *e, unsigned char bit)
{
    while (p < e) {
        if (IS(*p, bit)) {
            p++;
        }
        else if (*p == '%' && e - p >= 3 && IS(p[1], C_HEX) && IS(p[2], C_HEX)) {
            p += 3;
        }
        else {
            break;
        }
    }
    return p;
}

/* An unsigned decimal of 1..maxlen ASCII digits spanning [p, e) exactly, at most ``limit``. */
static int
uint_of(const char *p, const char *e, Py_ssize_t maxlen, unsigned long long limit,
        unsigned long long *out)
{
    unsigned long long n = 0;
    if (p == e || e - p > maxlen) {
        return BAIL;
    }
    for (; p < e; p++) {
        if (!IS_DIGIT(*p)) {
            return BAIL;
        }
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    if (n > limit) {
        return BAIL;
    }
    *out = n;
    return OK;
}

/* ---- Python objects ---- */

/* [p, e) is known to be ASCII: build the str without a decoder. */
static PyObject *
str_of(const char *p, const char *e)
{
    Py_ssize_t n = e - p;
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL && n > 0) {
        memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    }
    return s;
}

static PyObject *
upper_of(const char *p, const char *e)
{
    Py_ssize_t n = e - p;
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) {
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
        for (Py_ssize_t i = 0; i < n; i++) {
            char c = p[i];
            out[i] = (Py_UCS1)((c >= 'a' && c <= 'z') ? c - 32 : c);
        }
    }
    return s;
}

/* Interned constants: values every message repeats. */
static PyObject *s_sip, *s_sips, *s_sip20, *s_udp;

/* The model classes and the slot offsets of their fields, in the order of these names.
 * parser.py compares each list with dataclasses.fields() of the class. */
static const char *const uri_fields[] = {
    "scheme", "host", "user", "password", "port", "params", "headers", "raw", NULL};
enum { U_SCHEME, U_HOST, U_USER, U_PASSWORD, U_PORT, U_PARAMS, U_HEADERS, U_RAW, U_N };

static const char *const na_fields[] = {"uri", "display", "params", "raw", NULL};
enum { NA_URI, NA_DISPLAY, NA_PARAMS, NA_RAW, NA_N };

static const char *const via_fields[] = {
    "transport", "host", "port", "params", "protocol", "raw", NULL};
enum { V_TRANSPORT, V_HOST, V_PORT, V_PARAMS, V_PROTOCOL, V_RAW, V_N };

static const char *const cseq_fields[] = {"seq", "method", NULL};
enum { CS_SEQ, CS_METHOD, CS_N };

/* Message fields first, then the two of Request or Response. */
static const char *const req_fields[] = {
    "vias", "from_", "to", "call_id", "cseq", "max_forwards", "routes", "record_routes",
    "contacts", "contact_star", "expires", "require", "proxy_require", "content_type",
    "extra", "body", "wire", "method", "uri", NULL};
static const char *const resp_fields[] = {
    "vias", "from_", "to", "call_id", "cseq", "max_forwards", "routes", "record_routes",
    "contacts", "contact_star", "expires", "require", "proxy_require", "content_type",
    "extra", "body", "wire", "status", "reason", NULL};
enum {
    M_VIAS, M_FROM, M_TO, M_CALL_ID, M_CSEQ, M_MAX_FORWARDS, M_ROUTES, M_RECORD_ROUTES,
    M_CONTACTS, M_CONTACT_STAR, M_EXPIRES, M_REQUIRE, M_PROXY_REQUIRE, M_CONTENT_TYPE,
    M_EXTRA, M_BODY, M_WIRE, M_FIRST, M_SECOND, M_N
};

#define MAX_FIELDS 19

typedef struct {
    PyTypeObject *type;
    Py_ssize_t nfields;
    Py_ssize_t offset[MAX_FIELDS];
} ModelClass;

static ModelClass k_uri, k_na, k_via, k_cseq, k_req, k_resp;
static int ready = 0;

/* Limits of parser.py, handed over by setup() so they are defined once. */
static Py_ssize_t max_message_size, max_headers, max_header_line, max_vias, max_uri_length;

/* A new instance with every field set from ``values`` (references stolen, all non-NULL). */
static PyObject *
build(ModelClass *k, PyObject **values)
{
    PyObject *obj = k->type->tp_alloc(k->type, 0);
    if (obj == NULL) {
        for (Py_ssize_t i = 0; i < k->nfields; i++) {
            Py_DECREF(values[i]);
        }
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k->nfields; i++) {
        *(PyObject **)((char *)obj + k->offset[i]) = values[i];
    }
    return obj;
}

static void
release(PyObject **values, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(values[i]);
    }
}

/* Fields still NULL become None, then the instance: what every value builder ends with. */
static int
build_into(ModelClass *k, PyObject **values, PyObject **out)
{
    for (Py_ssize_t i = 0; i < k->nfields; i++) {
        if (values[i] == NULL) {
            values[i] = Py_NewRef(Py_None);
        }
    }
    *out = build(k, values);
    return *out == NULL ? ERR : OK;
}

/* ---- parameters ---- */

typedef const char *(*Run)(const char *, const char *, unsigned char);

/* The end of a quoted-string starting at p (section 25.1), or NULL; one with a quoted-pair
 * (backslash) is left to parser.py. */
static const char *
quoted_end(const char *p, const char *e)
{
    const char *q = p + 1;
    while (q < e && *q != '"' && *q != '\\') {
        q++;
    }
    return (q < e && *q == '"') ? q + 1 : NULL;
}

/* ``(;name(=value)?)*`` from *pp, stopping at the first character that cannot continue it, as
 * an ordered dict (a parameter without "=" maps to None).  Names and values are runs of
 * ``name_bit`` / ``value_bit`` characters scanned by ``scan``; both must be non-empty.
 * ``quoted``: a value may also be a quoted-string, kept with its quotes (generic-param). */
static int
param_list(const char **pp, const char *e, Run scan, unsigned char name_bit,
           unsigned char value_bit, int quoted, PyObject **out)
{
    const char *p = *pp;
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return ERR;
    }
    while (p < e && *p == ';') {
        const char *name = p + 1, *name_end = scan(name, e, name_bit);
        PyObject *key, *value;
        if (name_end == name) {
            Py_DECREF(d);
            return BAIL;
        }
        p = name_end;
        if (p < e && *p == '=') {
            const char *v = p + 1;
            p = (quoted && v < e && *v == '"') ? quoted_end(v, e) : scan(v, e, value_bit);
            if (p == NULL || p == v) {
                Py_DECREF(d);
                return BAIL;
            }
            value = str_of(v, p);
        }
        else {
            value = Py_NewRef(Py_None);
        }
        key = str_of(name, name_end);
        if (key == NULL || value == NULL || PyDict_SetItem(d, key, value) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(d);
            return ERR;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    *pp = p;
    *out = d;
    return OK;
}

/* Header parameters of Via and name-addr values spanning [p, e) exactly: token names, token /
 * host values, no whitespace (parser.py _SIMPLE_PARAMS).  ``quoted``: quoted-string values
 * without backslashes too, kept with their quotes, as parser.py's general paths read them
 * (uri.parse_params, for name-addrs and Vias alike). */
static int
simple_params(const char *p, const char *e, int quoted, PyObject **out)
{
    int rc = param_list(&p, e, run, C_TOKEN, C_PVAL, quoted, out);
    if (rc == OK && p != e) {
        Py_CLEAR(*out);
        return BAIL;
    }
    return rc;
}

/* URI parameters (uri.py _HOSTPORT): paramchar runs with escapes, from *pp. */
static int
uri_params(const char **pp, const char *e, PyObject **out)
{
    return param_list(pp, e, run_esc, C_UPARAM, C_UPARAM, 0, out);
}

/* ---- URIs ---- */

/* ``[hex:.]+`` in brackets (an IPv6 reference, section 25.1), from p; the end or NULL. */
static const char *
ipv6_ref(const char *p, const char *e)
{
    const char *q = p + 1;
    while (q < e && (IS(*q, C_HEX) || *q == ':' || *q == '.')) {
        q++;
    }
    if (q == p + 1 || q >= e || *q != ']') {
        return NULL;
    }
    return q + 1;
}

/* A SIP URI's host (uri.py _HOSTPORT: a hostname that starts with an alphanumeric and does
 * not end in "-", or an IPv6 reference); the end or NULL. */
static const char *
uri_host(const char *p, const char *e)
{
    const char *q;
    if (p < e && *p == '[') {
        return ipv6_ref(p, e);
    }
    if (p >= e || !IS_ALNUM(*p)) {
        return NULL;
    }
    q = run(p, e, C_HOST);
    if (q[-1] == '-') {
        return NULL;
    }
    return q;
}

/* ":" 1..5 digits at p, at most 65535, when p is at ":"; *port stays None otherwise. */
static int
port_at(const char **pp, const char *e, PyObject **port)
{
    const char *p = *pp, *d;
    unsigned long long n;
    *port = NULL;
    if (p >= e || *p != ':') {
        return OK;
    }
    d = p + 1;
    p = d;
    while (p < e && IS_DIGIT(*p)) {
        p++;
    }
    if (uint_of(d, p, 5, 65535, &n) != OK) {
        return BAIL;
    }
    *port = PyLong_FromUnsignedLongLong(n);
    if (*port == NULL) {
        return ERR;
    }
    *pp = p;
    return OK;
}

/* A sip: or sips: URI spanning [start, e) exactly, ``p`` just after "scheme:" (uri.py
 * SIP_URI_PATTERN).  ``request_uri``: headers are not allowed (section 19.1.1). */
static int
sip_uri(const char *start, const char *p, const char *e, PyObject *scheme, int request_uri,
        PyObject **out)
{
    PyObject *v[U_N] = {NULL};
    const char *u_end, *host, *h_end;
    int rc;

    if (e - start > max_uri_length) {
        return BAIL;
    }
    /* userinfo: the longest user run, then "@" or ":" password "@"; neither run can contain
     * "@", so no shorter split could succeed where this one fails. */
    host = p;
    u_end = run_esc(p, e, C_USER);
    if (u_end > p && u_end < e && *u_end == '@') {
        host = u_end + 1;
    }
    else if (u_end > p && u_end < e && *u_end == ':') {
        const char *pw = u_end + 1, *pw_end = run_esc(pw, e, C_PASS);
        if (pw_end < e && *pw_end == '@') {
            host = pw_end + 1;
            if ((v[U_PASSWORD] = str_of(pw, pw_end)) == NULL) {
                goto error;
            }
        }
    }
    if (host != p && (v[U_USER] = str_of(p, u_end)) == NULL) {
        goto error;
    }
    h_end = uri_host(host, e);
    if (h_end == NULL) {
        goto bail;
    }
    if ((v[U_HOST] = str_of(host, h_end)) == NULL) {
        goto error;
    }
    p = h_end;
    if ((rc = port_at(&p, e, &v[U_PORT])) != OK) {
        goto fail;
    }
    if ((rc = uri_params(&p, e, &v[U_PARAMS])) != OK) {
        goto fail;
    }
    if (p < e && *p == '?') {
        const char *hs = p + 1;
        if (request_uri) {
            goto bail;
        }
        p = run_esc(hs, e, C_UHDR);
        if ((v[U_HEADERS] = str_of(hs, p)) == NULL) {
            goto error;
        }
    }
    if (p != e) {
        goto bail;
    }
    if ((v[U_RAW] = str_of(start, e)) == NULL) {
        goto error;
    }
    v[U_SCHEME] = Py_NewRef(scheme);
    return build_into(&k_uri, v, out);

bail:
    rc = BAIL;
    goto fail;
error:
    rc = ERR;
fail:
    release(v, U_N);
    return rc;
}

/* "sip:" or "sips:" at [p, e) (lower case only; parser.py lower-cases other spellings in its
 * general path): the URI, from its first character. */
static int
any_sip_uri(const char *p, const char *e, int request_uri, PyObject **out)
{
    if (e - p > 4 && memcmp(p, "sip:", 4) == 0) {
        return sip_uri(p, p + 4, e, s_sip, request_uri, out);
    }
    if (e - p > 5 && memcmp(p, "sips:", 5) == 0) {
        return sip_uri(p, p + 5, e, s_sips, request_uri, out);
    }
    return BAIL;
}

/* ---- header values ---- */

/* ``[display] <sip-uri>;params`` spanning [p, e) exactly (parser.py _NAME_ADDR_FAST). */
static int
name_addr(const char *p, const char *e, PyObject **out)
{
    PyObject *v[NA_N] = {NULL};
    const char *start = p, *lt, *gt;
    int rc;

    if (p >= e) {
        return BAIL;
    }
    if (*p == '"') {
        const char *q = quoted_end(p, e);
        if (q == NULL) {
            return BAIL;
        }
        if ((v[NA_DISPLAY] = str_of(p, q)) == NULL) {
            return ERR;
        }
        lt = q;
    }
    else if (*p == '<') {
        lt = p;
    }
    else {
        /* token *(LWS token): the display name ends with its last token */
        const char *tok_end = run(p, e, C_TOKEN), *q;
        if (tok_end == p) {
            return BAIL;
        }
        for (;;) {
            q = tok_end;
            while (q < e && *q == ' ') {
                q++;
            }
            if (q == tok_end || q >= e || !IS(*q, C_TOKEN)) {
                break;
            }
            tok_end = run(q, e, C_TOKEN);
        }
        if ((v[NA_DISPLAY] = str_of(p, tok_end)) == NULL) {
            return ERR;
        }
        lt = tok_end;
    }
    while (lt < e && *lt == ' ') {
        lt++;
    }
    if (lt >= e || *lt != '<') {
        goto bail;
    }
    gt = memchr(lt + 1, '>', (size_t)(e - lt - 1));
    if (gt == NULL) {
        goto bail;
    }
    if ((rc = any_sip_uri(lt + 1, gt, 0, &v[NA_URI])) != OK) {
        goto fail;
    }
    if ((rc = simple_params(gt + 1, e, 1, &v[NA_PARAMS])) != OK) {
        goto fail;
    }
    if ((v[NA_RAW] = str_of(start, e)) == NULL) {
        goto error;
    }
    return build_into(&k_na, v, out);

bail:
    rc = BAIL;
    goto fail;
error:
    rc = ERR;
fail:
    release(v, NA_N);
    return rc;
}

/* ``SIP/2.0/transport SP host[:port];params`` spanning [p, e) (parser.py
 * _VIA_FAST_FULLMATCH; section 20.42). */
static int
via(const char *p, const char *e, PyObject **out)
{
    PyObject *v[V_N] = {NULL};
    const char *start = p, *t, *t_end, *host, *h_end;
    int rc;

    if (e - p < 8 || memcmp(p, "SIP/2.0/", 8) != 0) {
        return BAIL;
    }
    t = p + 8;
    t_end = run(t, e, C_TOKEN);
    if (t_end == t) {
        return BAIL;
    }
    host = t_end;
    while (host < e && *host == ' ') {
        host++;
    }
    if (host == t_end || host >= e) {
        return BAIL;
    }
    if (*host == '[') {
        h_end = ipv6_ref(host, e);
        if (h_end == NULL) {
            return BAIL;
        }
    }
    else {
        h_end = run(host, e, C_HOST);
        if (h_end == host) {
            return BAIL;
        }
    }
    p = h_end;
    if ((rc = port_at(&p, e, &v[V_PORT])) != OK) {
        goto fail;
    }
    /* Quoted values too: every Via we add says ``oc-algo="loss"`` (RFC 7339 section 5.1), so
     * every response we relay carries one; the general path read them all. */
    if ((rc = simple_params(p, e, 1, &v[V_PARAMS])) != OK) {
        goto fail;
    }
    if (t_end - t == 3 && memcmp(t, "UDP", 3) == 0) {
        v[V_TRANSPORT] = Py_NewRef(s_udp);
    }
    else if ((v[V_TRANSPORT] = upper_of(t, t_end)) == NULL) {
        goto error;
    }
    if ((v[V_HOST] = str_of(host, h_end)) == NULL || (v[V_RAW] = str_of(start, e)) == NULL) {
        goto error;
    }
    v[V_PROTOCOL] = Py_NewRef(s_sip20);
    return build_into(&k_via, v, out);

error:
    rc = ERR;
fail:
    release(v, V_N);
    return rc;
}

/* ``digits SP method`` (section 20.16), the number at most 2**32 - 1. */
static int
cseq(const char *p, const char *e, PyObject **out)
{
    const char *sp = memchr(p, ' ', (size_t)(e - p));
    unsigned long long n;
    PyObject *v[CS_N];
    if (sp == NULL || uint_of(p, sp, 10, 4294967295ULL, &n) != OK || sp + 1 >= e ||
        run(sp + 1, e, C_TOKEN) != e) {
        return BAIL;
    }
    v[CS_SEQ] = PyLong_FromUnsignedLongLong(n);
    if (v[CS_SEQ] == NULL) {
        return ERR;
    }
    v[CS_METHOD] = str_of(sp + 1, e);
    if (v[CS_METHOD] == NULL) {
        Py_DECREF(v[CS_SEQ]);
        return ERR;
    }
    *out = build(&k_cseq, v);
    return *out == NULL ? ERR : OK;
}

/* A comma-separated token list (Require, Proxy-Require: section 20.32), appended to *list. */
static int
tokens(const char *p, const char *e, PyObject **list)
{
    if (*list == NULL && (*list = PyList_New(0)) == NULL) {
        return ERR;
    }
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(e - p));
        const char *item_end = comma ? comma : e, *q, *t_end;
        PyObject *s;
        int rc;
        while (p < item_end && *p == ' ') {
            p++;
        }
        q = item_end;
        while (q > p && q[-1] == ' ') {
            q--;
        }
        t_end = run(p, q, C_TOKEN);
        if (t_end == p || t_end != q) {
            return BAIL;
        }
        if ((s = str_of(p, q)) == NULL) {
            return ERR;
        }
        rc = PyList_Append(*list, s);
        Py_DECREF(s);
        if (rc < 0) {
            return ERR;
        }
        if (comma == NULL) {
            return OK;
        }
        p = comma + 1;
    }
}

/* Append one value parsed by ``fn`` to *list (created on first use). */
static int
append_parsed(int (*fn)(const char *, const char *, PyObject **), const char *p,
              const char *e, PyObject **list)
{
    PyObject *item;
    int rc;
    if (*list == NULL && (*list = PyList_New(0)) == NULL) {
        return ERR;
    }
    if ((rc = fn(p, e, &item)) != OK) {
        return rc;
    }
    rc = PyList_Append(*list, item);
    Py_DECREF(item);
    return rc < 0 ? ERR : OK;
}

/* The end of the list element starting at p (parser.py split_list, section 7.3.1): the first
 * "," outside a quoted string and outside <...>.  NULL for a backslash or an unclosed quote or
 * bracket: parser.py decides those. */
static const char *
list_item_end(const char *p, const char *e)
{
    while (p < e) {
        if (*p == ',') {
            return p;
        }
        if (*p == '\\') {
            return NULL;
        }
        if (*p == '"' || *p == '<') {
            const char *close = memchr(p + 1, *p == '"' ? '"' : '>', (size_t)(e - p - 1));
            if (close == NULL) {
                return NULL;
            }
            p = close + 1;
        }
        else {
            p++;
        }
    }
    return e;
}

/* Comma-separated elements (section 7.3.1), each parsed by ``fn`` and appended, and counted
 * when ``count`` is not NULL.  An empty element bails: parser.py answers it 400. */
static int
list_values(int (*fn)(const char *, const char *, PyObject **), const char *p,
            const char *e, PyObject **list, Py_ssize_t *count)
{
    for (;;) {
        const char *item_end = list_item_end(p, e), *q;
        int rc;
        if (item_end == NULL) {
            return BAIL;
        }
        q = item_end;
        while (p < q && *p == ' ') {
            p++;
        }
        while (q > p && q[-1] == ' ') {
            q--;
        }
        if (p == q) {
            return BAIL;
        }
        if ((rc = append_parsed(fn, p, q, list)) != OK) {
            return rc;
        }
        if (count != NULL) {
            (*count)++;
        }
        if (item_end == e) {
            return OK;
        }
        p = item_end + 1;
    }
}

/* Route, Record-Route, Contact: one or more comma-separated name-addrs, each appended. */
static int
name_addrs(const char *p, const char *e, PyObject **list)
{
    return list_values(name_addr, p, e, list, NULL);
}

/* One Via header line: one or more comma-separated via-parms, each appended and counted.
 * Several in one line is what SIPp's [last_Via:] and some UAs copy into their responses
 * (section 20.42 allows both forms); parser.py's general Via path reads them the same way. */
static int
via_values(const char *p, const char *e, PyObject **list, Py_ssize_t *count)
{
    if (memchr(p, ',', (size_t)(e - p)) == NULL) {
        (*count)++;  /* one value, the common case: no scan for the list's commas */
        return append_parsed(via, p, e, list);
    }
    return list_values(via, p, e, list, count);
}

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

/* Where a relayed response's top Via is in the received bytes (protocols/sip/edit.py reads
 * them by these indices, ``L_*`` there): offsets from the start of the data, -1 unknown. */
enum {
    L_HEAD_END,       /* the CRLFCRLF ending the header section */
    L_VIA_LINE,       /* the first Via line's start */
    L_VIA_VALUE,      /* its first value's start */
    L_VIA_ITEM_END,   /* that value's end */
    L_VIA_CUT_END,    /* the next value's start in that line, or past the line's CRLF */
    L_N
};

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

/* The layout offsets of the first Via line [line, line_e) whose value [v, e) parsed
 * (``Fields.at``).  Its first value ends where parser.py's list split ends it; removing it
 * removes the line, or the value up to the next one. */
static void
note_via_line(Fields *fs, const char *line, const char *v, const char *e, const char *line_e)
{
    Py_ssize_t *at = fs->at;
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
    at[L_VIA_LINE] = line - fs->data;
    at[L_VIA_VALUE] = v - fs->data;
    at[L_VIA_ITEM_END] = q - fs->data;
    at[L_VIA_CUT_END] = next - fs->data;
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
    if (rc == OK && kind == H_VIA && fs->at[L_VIA_LINE] < 0 && fs->at[L_HEAD_END] >= 0) {
        note_via_line(fs, p, v, e, line_e);
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
    if (!*is_request && p == data) {
        /* a response without CRLFs before its start line: its layout is recorded */
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

/* ``Message.wire`` of a response: (the bytes, their layout), so a proxy relays it by cutting
 * its top Via out; None without Content-Length (a relayed message needs one, section 18.3) or
 * with CRLFs before the start line (the offsets would have to skip them), and for requests
 * (forwarding one changes too much for a splice in Python to beat ``serialize``). */
static PyObject *
wire_of(Fields *fs, PyObject *data)
{
    PyObject *layout, *wire;
    if (fs->content_length < 0 || fs->at[L_VIA_LINE] < 0) {  /* a request, or CRLF-led */
        return Py_NewRef(Py_None);
    }
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

/* ---- setup ---- */

static int
model_class(ModelClass *k, PyObject *type, const char *const *names)
{
    PyTypeObject *t;
    Py_ssize_t n = 0;
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "setup() needs the model classes");
        return -1;
    }
    t = (PyTypeObject *)type;
    if (t->tp_itemsize != 0) {
        PyErr_Format(PyExc_TypeError, "%s: variable-size instances", t->tp_name);
        return -1;
    }
    for (; names[n] != NULL; n++) {
        PyObject *d = PyObject_GetAttrString(type, names[n]);
        PyMemberDef *m;
        if (d == NULL) {
            return -1;
        }
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", t->tp_name, names[n]);
            return -1;
        }
        m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) ||
            m->offset < (Py_ssize_t)sizeof(PyObject) ||
            m->offset + (Py_ssize_t)sizeof(PyObject *) > t->tp_basicsize) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "%s.%s is not a plain object slot", t->tp_name,
                         names[n]);
            return -1;
        }
        k->offset[n] = m->offset;
        Py_DECREF(d);
    }
    Py_XSETREF(k->type, (PyTypeObject *)Py_NewRef(type));
    k->nfields = n;
    return 0;
}

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *uri, *na, *v, *cs, *req, *resp;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOOOOO(nnnnn):setup", &uri, &na, &v, &cs, &req, &resp,
                          &max_message_size, &max_headers, &max_header_line, &max_vias,
                          &max_uri_length)) {
        return NULL;
    }
    ready = 0;
    if (model_class(&k_uri, uri, uri_fields) < 0 || model_class(&k_na, na, na_fields) < 0 ||
        model_class(&k_via, v, via_fields) < 0 || model_class(&k_cseq, cs, cseq_fields) < 0 ||
        model_class(&k_req, req, req_fields) < 0 ||
        model_class(&k_resp, resp, resp_fields) < 0) {
        return NULL;
    }
    ready = 1;
    Py_RETURN_NONE;
}

static PyObject *
names_tuple(const char *const *names)
{
    Py_ssize_t n = 0;
    PyObject *t;
    while (names[n] != NULL) {
        n++;
    }
    if ((t = PyTuple_New(n)) == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (s == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(data: bytes, stream: bool) -> Request | Response | None\n\n"
     "The message when it is in the common subset this module handles, else None: the\n"
     "caller then runs the pure-Python parser, the only judge of errors."},
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
    init_classes();
    if ((s_sip = PyUnicode_InternFromString("sip")) == NULL ||
        (s_sips = PyUnicode_InternFromString("sips")) == NULL ||
        (s_sip20 = PyUnicode_InternFromString("SIP/2.0")) == NULL ||
        (s_udp = PyUnicode_InternFromString("UDP")) == NULL) {
        return NULL;
    }
    if ((m = PyModule_Create(&module_def)) == NULL) {
        return NULL;
    }
    fields = Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N}",
                           "SipURI", names_tuple(uri_fields),
                           "NameAddr", names_tuple(na_fields),
                           "Via", names_tuple(via_fields),
                           "CSeq", names_tuple(cseq_fields),
                           "Request", names_tuple(req_fields),
                           "Response", names_tuple(resp_fields));
    if (fields == NULL || PyModule_AddObject(m, "FIELDS", fields) < 0) {
        Py_XDECREF(fields);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
