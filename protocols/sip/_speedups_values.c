/* Header values for the C fast path of the SIP parser (see _speedups.c): parameters, SIP
 * URIs, name-addrs, Via, CSeq, token lists and comma-separated lists of them, each built as
 * the model object protocols/sip/parser.py would build.  The functions declared in
 * _speedups.h are the ones _speedups.c calls; the rest are static here.
 */
#include "_speedups.h"

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
int
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
int
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
int
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
int
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
const char *
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
int
name_addrs(const char *p, const char *e, PyObject **list)
{
    return list_values(name_addr, p, e, list, NULL);
}

/* One Via header line: one or more comma-separated via-parms, each appended and counted.
 * Several in one line is what SIPp's [last_Via:] and some UAs copy into their responses
 * (section 20.42 allows both forms); parser.py's general Via path reads them the same way. */
int
via_values(const char *p, const char *e, PyObject **list, Py_ssize_t *count)
{
    if (memchr(p, ',', (size_t)(e - p)) == NULL) {
        (*count)++;  /* one value, the common case: no scan for the list's commas */
        return append_parsed(via, p, e, list);
    }
    return list_values(via, p, e, list, count);
}
