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
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int
is_blank(Py_UCS1 c)
{
    return c == ' ' || c == '\t';
}

/* Printable ASCII but space: what names and tokens are made of (minus their own stops). */
static int lower_eq(const char *s, Py_ssize_t n, const char *lit);

static int
is_visible(Py_UCS1 c)
{
    return c > 0x20 && c < 0x7f;
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
    while (i < end && is_visible(s[i]) && s[i] != '=' && s[i] != ',' && s[i] != '"') {
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
        while (i < end && s[i] != '"') {
            if (s[i] == '\\' || (s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f) {
                return -1;
            }
            i++;
        }
        if (i >= end) {
            return -1;
        }
        it->value_len = i - it->value;
        i++;
    } else {
        it->value = i;
        while (i < end && is_visible(s[i]) && s[i] != ',' && s[i] != '"') {
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
 * returns the fields of ``Credentials`` in order, checked as parse_credentials checks them,
 * with no dict.  Its subset is ``params``'s, with the scheme ``Digest`` and one space first,
 * and only the ten names parse_credentials reads (another name, repeated or not, goes to the
 * Python loop, as does every error: this never raises for a value).  test_digest.py holds it
 * to parse_credentials differentially. */

enum { F_USERNAME, F_REALM, F_NONCE, F_URI, F_RESPONSE, F_ALGORITHM, F_QOP, F_NC, F_CNONCE,
       F_OPAQUE, F_COUNT };
static const char *const field_names[F_COUNT] = {
    "username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce",
    "opaque"};
/* Canonical algorithm names (digest.ALGORITHMS) and qop values, made once. */
static PyObject *md5_name, *sha256_name, *sha512_256_name, *qop_auth, *qop_auth_int;

static PyObject *
credentials(PyObject *module, PyObject *arg)
{
    (void)module;
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
            if (lower_eq((const char *)s + it.name, it.name_len, field_names[f])) {
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
    PyObject *out = PyTuple_New(F_COUNT);
    if (out == NULL) {
        return NULL;
    }
    for (int f = F_USERNAME; f <= F_URI; f++) {
        PyObject *v = PyUnicode_Substring(arg, vs[f], vs[f] + vl[f]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, f, v);
    }
    PyObject *response = PyUnicode_New(vl[F_RESPONSE], 127);
    if (response == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    Py_UCS1 *r = PyUnicode_1BYTE_DATA(response);
    for (Py_ssize_t k = 0; k < vl[F_RESPONSE]; k++) {
        Py_UCS1 c = s[vs[F_RESPONSE] + k];
        r[k] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + ('a' - 'A')) : c;
    }
    PyTuple_SET_ITEM(out, F_RESPONSE, response);
    PyTuple_SET_ITEM(out, F_ALGORITHM, Py_NewRef(algorithm));
    PyTuple_SET_ITEM(out, F_QOP, Py_NewRef(qop));
    PyObject *ncobj = qop == Py_None ? Py_NewRef(Py_None) : PyLong_FromUnsignedLong(nc);
    if (ncobj == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(out, F_NC, ncobj);
    for (int f = F_CNONCE; f <= F_OPAQUE; f++) {
        PyObject *v = vs[f] < 0 ? Py_NewRef(Py_None)
                                : PyUnicode_Substring(arg, vs[f], vs[f] + vl[f]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, f, v);
    }
    return out;
}

/* -- challenge_head: the head of a stateless 401 to a REGISTER, from its bytes -------------
 *
 * What it is for: half of all REGISTERs carry no credentials and get a stateless 401
 * (signaling/auth/policy.py, ``Authenticator.challenge_unparsed``).  The answer copies five
 * headers of the request (§8.2.6.2) and needs the To URI's host (the realm); parsing the whole
 * request into objects, matching transactions and rendering the answer cost ~140k
 * instructions per challenge (callgrind), about half of a plain REGISTER.  This scans the
 * datagram once and returns what the answer needs.
 *
 * What it is not: a parser with its own acceptance rules.  For anything outside the subset
 * below it returns None and the request goes the full way (parse, transaction matching,
 * ``challenge_early``), which stays the judge of everything else.  On what it accepts, the
 * bytes it returns are the ones the full way sends (tests/protocols/sip/test_digest.py
 * checks that differentially).  It only looks at what the challenge copies: the rest of the
 * request is judged when it comes back with credentials.
 *
 * The subset: ASCII, CRLF line ends, no body, no folded lines; the request line
 * ``REGISTER sip:... SIP/2.0`` (or sips); one Via value, ``SIP/2.0/TRANSPORT host[:port]``
 * then ``;name[=token]`` parameters without spaces, a ``branch``, names spelt in lower case
 * where they matter (branch, rport, received, tag), no ``received`` yet and no ``oc`` (the
 * full way writes our RFC 7339 report there); From in name-addr form; To exactly
 * ``<sip:...>`` (no display name, no parameters); a Call-ID without spaces;
 * ``CSeq: N REGISTER``; no Authorization, Require or Proxy-Require (those go the full way:
 * credentials to check, extensions to refuse, §8.2.2.3); Content-Length 0 if present.
 *
 * Memory safety: every scan is bounded by the datagram's length. */

static int
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

/* RFC 3261 §25.1 token characters. */
static int
is_token(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '!' || c == '%' || c == '*' || c == '_' || c == '+' ||
           c == '`' || c == '\'' || c == '~';
}

static int
is_hostchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.';
}

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

/* Printable ASCII, space and tab: what the answer may copy. */
static int
printable(span v)
{
    for (Py_ssize_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if ((c < 0x20 && c != '\t') || c >= 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* Decimal digits of ``v`` (< 10^20) into ``out``; their count. */
static int
decimal(unsigned long long v, char *out)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (int i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

/* ``;name[=token]`` parameters filling [p, p+n) exactly.  ``want`` names (lower case) are
 * reported through ``found`` (value span; value NULL for a bare name), one at most each; a
 * name equal to a wanted or ``refuse``d one in any other spelling, or repeated, is refused.
 * 1: parsed; 0: outside the subset. */
static int
scan_params(const char *p, Py_ssize_t n, const char *const *want, span *found, int *bare,
            int nwant, const char *refuse)
{
    Py_ssize_t i = 0;
    for (int k = 0; k < nwant; k++) {
        found[k].p = NULL;
        found[k].n = 0;
        bare[k] = 0;
    }
    while (i < n) {
        if (p[i] != ';') {
            return 0;
        }
        Py_ssize_t ns = ++i;
        while (i < n && is_token(p[i])) {
            i++;
        }
        Py_ssize_t nl = i - ns;
        if (nl == 0) {
            return 0;
        }
        Py_ssize_t vs = -1, vl = 0;
        if (i < n && p[i] == '=') {
            vs = ++i;
            while (i < n && is_token(p[i])) {
                i++;
            }
            vl = i - vs;
            if (vl == 0) {
                return 0;
            }
        }
        if (refuse != NULL && lower_eq(p + ns, nl, refuse)) {
            return 0;
        }
        for (int k = 0; k < nwant; k++) {
            if (lower_eq(p + ns, nl, want[k])) {
                if (memcmp(p + ns, want[k], (size_t)nl) != 0 || found[k].p != NULL ||
                    bare[k]) {
                    return 0;  /* another spelling, or twice: the full way */
                }
                if (vs < 0) {
                    bare[k] = 1;
                    found[k].p = p + ns + nl;  /* where ``=value`` would go */
                } else {
                    found[k].p = p + vs;
                    found[k].n = vl;
                }
            }
        }
    }
    return 1;
}

static PyObject *
challenge_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1]) ||
        !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "challenge_head(data: bytes, host: str, port: int)");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t hlen;
    const char *host = PyUnicode_AsUTF8AndSize(args[1], &hlen);
    if (host == NULL) {
        return NULL;
    }
    long port = PyLong_AsLong(args[2]);
    if (port == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* No body: the header section ends the datagram. */
    if (n < 4 || memcmp(s + n - 4, "\r\n\r\n", 4) != 0) {
        Py_RETURN_NONE;
    }
    /* Credentials in their usual spelling: the full way, without a scan (every REGISTER
     * answering a challenge comes here first); other spellings are found below. */
    if (memmem(s, (size_t)n, "\nAuthorization:", 15) != NULL) {
        Py_RETURN_NONE;
    }
    Py_ssize_t end = n - 2;  /* the last header line's CRLF ends here */
    /* The request line. */
    Py_ssize_t pos = 0, ruri;
    if (n > 13 && memcmp(s, "REGISTER sip:", 13) == 0) {
        ruri = 13;
    } else if (n > 14 && memcmp(s, "REGISTER sips:", 14) == 0) {
        ruri = 14;
    } else {
        Py_RETURN_NONE;
    }
    pos = ruri;
    while (pos < end && s[pos] > 0x20 && s[pos] < 0x7f) {
        pos++;
    }
    if (pos + 10 > end || memcmp(s + pos, " SIP/2.0\r\n", 10) != 0 || pos == ruri) {
        Py_RETURN_NONE;
    }
    pos += 10;
    span via = {NULL, 0}, from = {NULL, 0}, to = {NULL, 0}, cid = {NULL, 0}, cseq = {NULL, 0};
    while (pos < end) {
        /* Lines are found with memchr; only the values copied into the answer are checked
         * character by character (below), the rest is the full way's to judge. */
        const char *cr = memchr(s + pos, '\r', (size_t)(end - pos));
        Py_ssize_t eol = cr == NULL ? end : cr - s;
        if (eol >= end || s[eol + 1] != '\n' || eol == pos || s[pos] == ' ' || s[pos] == '\t') {
            Py_RETURN_NONE;  /* a lone CR, an empty line inside, or a folded line */
        }
        Py_ssize_t colon = pos;
        while (colon < eol && s[colon] != ':') {
            colon++;
        }
        if (colon == eol) {
            Py_RETURN_NONE;
        }
        Py_ssize_t nend = colon;
        while (nend > pos && (s[nend - 1] == ' ' || s[nend - 1] == '\t')) {
            nend--;
        }
        Py_ssize_t vs = colon + 1, ve = eol;
        while (vs < ve && (s[vs] == ' ' || s[vs] == '\t')) {
            vs++;
        }
        while (ve > vs && (s[ve - 1] == ' ' || s[ve - 1] == '\t')) {
            ve--;
        }
        const char *name = s + pos;
        Py_ssize_t nl = nend - pos;
        span value = {s + vs, ve - vs};
        span *slot = NULL;
        switch (name[0] | 0x20) {  /* the first letter, lower-cased, picks the candidates */
        case 'v':
            slot = (lower_eq(name, nl, "via") || nl == 1) ? &via : NULL;
            break;
        case 'f':
            slot = (lower_eq(name, nl, "from") || nl == 1) ? &from : NULL;
            break;
        case 't':
            slot = (lower_eq(name, nl, "to") || nl == 1) ? &to : NULL;
            break;
        case 'i':
            slot = nl == 1 ? &cid : NULL;
            break;
        case 'c':
            if (lower_eq(name, nl, "call-id")) {
                slot = &cid;
            } else if (lower_eq(name, nl, "cseq")) {
                slot = &cseq;
            } else if (lower_eq(name, nl, "content-length") &&
                       (value.n != 1 || value.p[0] != '0')) {
                Py_RETURN_NONE;
            }
            break;
        case 'l':
            if (nl == 1 && (value.n != 1 || value.p[0] != '0')) {
                Py_RETURN_NONE;
            }
            break;
        case 'a':
        case 'r':
        case 'p':
            if (lower_eq(name, nl, "authorization") || lower_eq(name, nl, "require") ||
                lower_eq(name, nl, "proxy-require")) {
                Py_RETURN_NONE;
            }
            break;
        default:
            break;
        }
        if (slot != NULL) {
            if (slot->p != NULL || value.n == 0 || !printable(value)) {
                Py_RETURN_NONE;  /* twice (two Vias included), empty, or not plain ASCII */
            }
            *slot = value;
        }
        pos = eol + 2;
    }
    if (via.p == NULL || from.p == NULL || to.p == NULL || cid.p == NULL || cseq.p == NULL) {
        Py_RETURN_NONE;
    }
    /* Via: SIP/2.0/TRANSPORT host[:port] then parameters, as the serializer renders it. */
    const char *v = via.p;
    Py_ssize_t vn = via.n, i = 8;
    if (vn < 10 || memcmp(v, "SIP/2.0/", 8) != 0) {
        Py_RETURN_NONE;
    }
    while (i < vn && v[i] >= 'A' && v[i] <= 'Z') {
        i++;
    }
    if (i == 8 || i >= vn || v[i] != ' ') {
        Py_RETURN_NONE;
    }
    Py_ssize_t vhost = ++i;
    while (i < vn && is_hostchar(v[i])) {
        i++;
    }
    Py_ssize_t vhost_len = i - vhost;
    if (vhost_len == 0) {
        Py_RETURN_NONE;
    }
    if (i < vn && v[i] == ':') {
        Py_ssize_t ps = ++i;
        while (i < vn && v[i] >= '0' && v[i] <= '9') {
            i++;
        }
        if (i - ps == 0 || i - ps > 5 || v[ps] == '0') {
            Py_RETURN_NONE;  /* rendered from an int: no leading zero */
        }
    }
    /* ``oc`` (RFC 7339): the full way writes our overload report into this Via. */
    static const char *const via_names[3] = {"branch", "rport", "oc"};
    span vp[3];
    int vbare[3];
    if (!scan_params(v + i, vn - i, via_names, vp, vbare, 3, "received") || vp[0].p == NULL ||
        vbare[0] || vp[2].p != NULL) {
        Py_RETURN_NONE;
    }
    /* From: name-addr; its tag among the parameters after the URI. */
    const char *f = from.p;
    Py_ssize_t gt = from.n - 1;
    while (gt >= 0 && f[gt] != '>') {
        gt--;
    }
    if (gt < 0 || memchr(f, '<', (size_t)gt) == NULL) {
        Py_RETURN_NONE;
    }
    static const char *const from_names[1] = {"tag"};
    span ft[1];
    int fbare[1];
    if (!scan_params(f + gt + 1, from.n - gt - 1, from_names, ft, fbare, 1, NULL) || fbare[0]) {
        Py_RETURN_NONE;
    }
    /* To: exactly <sip:...>; the realm is its host, lower-cased. */
    const char *t = to.p;
    Py_ssize_t tn = to.n;
    if (tn < 7 || t[0] != '<' || t[tn - 1] != '>') {
        Py_RETURN_NONE;
    }
    Py_ssize_t u = 1;
    if (memcmp(t + 1, "sip:", 4) == 0) {
        u = 5;
    } else if (tn > 8 && memcmp(t + 1, "sips:", 5) == 0) {
        u = 6;
    } else {
        Py_RETURN_NONE;
    }
    Py_ssize_t at = -1;
    for (Py_ssize_t k = u; k < tn - 1; k++) {
        if (t[k] == '<' || t[k] == '>' || t[k] == ' ' || t[k] == '\t' || t[k] == '"') {
            Py_RETURN_NONE;
        }
        if (t[k] == '@') {
            if (at >= 0) {
                Py_RETURN_NONE;
            }
            at = k;
        }
    }
    Py_ssize_t rs = at >= 0 ? at + 1 : u, re_ = rs;
    while (re_ < tn - 1 && is_hostchar(t[re_])) {
        re_++;
    }
    if (re_ == rs || (re_ < tn - 1 && t[re_] != ':' && t[re_] != ';' && t[re_] != '?')) {
        Py_RETURN_NONE;
    }
    char realm[256];
    if (re_ - rs >= (Py_ssize_t)sizeof realm) {
        Py_RETURN_NONE;
    }
    for (Py_ssize_t k = rs; k < re_; k++) {
        char c = t[k];
        realm[k - rs] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    /* Call-ID without spaces; CSeq: digits, one space, REGISTER. */
    for (Py_ssize_t k = 0; k < cid.n; k++) {
        if (cid.p[k] == ' ' || cid.p[k] == '\t') {
            Py_RETURN_NONE;
        }
    }
    Py_ssize_t d = 0;
    while (d < cseq.n && cseq.p[d] >= '0' && cseq.p[d] <= '9') {
        d++;
    }
    if (d == 0 || d > 10 || cseq.n != d + 9 || memcmp(cseq.p + d, " REGISTER", 9) != 0) {
        Py_RETURN_NONE;
    }
    unsigned long long seq = 0;
    for (Py_ssize_t k = 0; k < d; k++) {
        seq = seq * 10 + (unsigned long long)(cseq.p[k] - '0');
    }
    if (seq > 0x7fffffffULL) {
        Py_RETURN_NONE;
    }
    if (port < 0 || port > 65535) {
        Py_RETURN_NONE;
    }
    char seqtext[24], porttext[24];
    int seqlen = decimal(seq, seqtext);
    int portlen = decimal((unsigned long long)port, porttext);
    /* The answer's head: Via (stamped as SipCore._stamp_via does, §18.2.1 and RFC 3581 §4),
     * From, To with ";tag=" to be completed; then Call-ID and CSeq. */
    int rport_bare = vbare[1];
    int add_received = rport_bare || vhost_len != hlen || memcmp(v + vhost, host, (size_t)hlen);
    Py_ssize_t before_len = 7 + vn + (rport_bare ? 1 + portlen : 0) +
                            (add_received ? 10 + hlen : 0) + 8 + from.n + 6 + tn + 5;
    PyObject *before = PyBytes_FromStringAndSize(NULL, before_len);
    if (before == NULL) {
        return NULL;
    }
    char *o = PyBytes_AS_STRING(before);
    memcpy(o, "\r\nVia: ", 7);
    o += 7;
    if (rport_bare) {
        Py_ssize_t cut = vp[1].p - v;  /* just after "rport" */
        memcpy(o, v, (size_t)cut);
        o += cut;
        *o++ = '=';
        memcpy(o, porttext, (size_t)portlen);
        o += portlen;
        memcpy(o, v + cut, (size_t)(vn - cut));
        o += vn - cut;
    } else {
        memcpy(o, v, (size_t)vn);
        o += vn;
    }
    if (add_received) {
        memcpy(o, ";received=", 10);
        o += 10;
        memcpy(o, host, (size_t)hlen);
        o += hlen;
    }
    memcpy(o, "\r\nFrom: ", 8);
    o += 8;
    memcpy(o, from.p, (size_t)from.n);
    o += from.n;
    memcpy(o, "\r\nTo: ", 6);
    o += 6;
    memcpy(o, t, (size_t)tn);
    o += tn;
    memcpy(o, ";tag=", 5);
    PyObject *after = PyBytes_FromStringAndSize(NULL, 11 + cid.n + 8 + seqlen + 9);
    if (after == NULL) {
        Py_DECREF(before);
        return NULL;
    }
    o = PyBytes_AS_STRING(after);
    memcpy(o, "\r\nCall-ID: ", 11);
    o += 11;
    memcpy(o, cid.p, (size_t)cid.n);
    o += cid.n;
    memcpy(o, "\r\nCSeq: ", 8);
    o += 8;
    memcpy(o, seqtext, (size_t)seqlen);
    o += seqlen;
    memcpy(o, " REGISTER", 9);
    PyObject *from_tag;
    if (ft[0].p != NULL) {
        from_tag = PyUnicode_DecodeASCII(ft[0].p, ft[0].n, NULL);
    } else {
        from_tag = Py_NewRef(Py_None);
    }
    if (from_tag == NULL) {
        Py_DECREF(before);
        Py_DECREF(after);
        return NULL;
    }
    PyObject *out = Py_BuildValue(
        "(s#s#Ns#NN)", realm, re_ - rs, cid.p, cid.n, from_tag, vp[0].p, vp[0].n, before,
        after);
    return out;
}

static PyMethodDef methods[] = {
    {"params", params, METH_O,
     "The auth-params of a digest value as a dict, or None when the Python loop must judge."},
    {"credentials", credentials, METH_O,
     "The fields of digest.Credentials from an Authorization value, or None when the Python "
     "code must judge."},
    {"challenge_head", (PyCFunction)(void (*)(void))challenge_head, METH_FASTCALL,
     "(realm, Call-ID, From tag, branch, head to ';tag=', Call-ID and CSeq) of a stateless 401 "
     "to a REGISTER, or None when the request must go the full way."},
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
