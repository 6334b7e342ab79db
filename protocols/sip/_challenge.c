#define _GNU_SOURCE  /* memmem */
#include "_digest_speedups.h"

/* The stateless 401 to a REGISTER, from its bytes (protocols/sip/digest.py, policy.py).
 *
 * Part of the _digest_speedups module (setup.py builds both files into it).
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


/* Character classes, one table look-up per character where the scan walks byte by byte
 * (printable() alone was ~1.6k of the ~7k instructions a scan took, callgrind):
 * TOKEN, RFC 3261 §25.1 token characters; HOST, a host name's (letters, digits, ``-``,
 * ``.``); PRINT, printable ASCII, space and tab (what the answer may copy). */
enum { K_TOKEN = 1, K_HOST = 2, K_PRINT = 4 };
static unsigned char kinds[256];

void
challenge_init(void)
{
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        unsigned char k = 0;
        if (alnum || (c != 0 && strchr("-.!%*_+`'~", c) != NULL)) {
            k |= K_TOKEN;
        }
        if (alnum || c == '-' || c == '.') {
            k |= K_HOST;
        }
        if ((c >= 0x20 && c < 0x7f) || c == '\t') {
            k |= K_PRINT;
        }
        kinds[c] = k;
    }
}

static int
is_token(char c)
{
    return kinds[(unsigned char)c] & K_TOKEN;
}

static int
is_hostchar(char c)
{
    return kinds[(unsigned char)c] & K_HOST;
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
        if (!(kinds[(unsigned char)v.p[i]] & K_PRINT)) {
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

/* What ``scan`` finds: the pieces of the request the answer copies, checked. */
typedef struct {
    span via, from, to, cid, branch, from_tag;  /* from_tag.p NULL: no From tag */
    const char *rport;  /* just after a bare ``rport`` in the Via, else NULL */
    int add_received;
    const char *host;
    Py_ssize_t hlen, realm_len;
    int seqlen, portlen;
    char realm[256], seqtext[24], porttext[24];
} head_t;

/* 1 and ``h`` filled when ``s`` (``n`` bytes, from ``host``:``port``) is in the subset, else 0. */
static int
scan(const char *s, Py_ssize_t n, const char *host, Py_ssize_t hlen, long port, head_t *h)
{
    /* No body: the header section ends the datagram. */
    if (n < 4 || memcmp(s + n - 4, "\r\n\r\n", 4) != 0) {
        return 0;
    }
    /* Credentials in their usual spelling: the full way, without a scan (every REGISTER
     * answering a challenge comes here first); other spellings are found below. */
    if (memmem(s, (size_t)n, "\nAuthorization:", 15) != NULL) {
        return 0;
    }
    Py_ssize_t end = n - 2;  /* the last header line's CRLF ends here */
    /* The request line. */
    Py_ssize_t pos = 0, ruri;
    if (n > 13 && memcmp(s, "REGISTER sip:", 13) == 0) {
        ruri = 13;
    } else if (n > 14 && memcmp(s, "REGISTER sips:", 14) == 0) {
        ruri = 14;
    } else {
        return 0;
    }
    pos = ruri;
    while (pos < end && s[pos] > 0x20 && s[pos] < 0x7f) {
        pos++;
    }
    if (pos + 10 > end || memcmp(s + pos, " SIP/2.0\r\n", 10) != 0 || pos == ruri) {
        return 0;
    }
    pos += 10;
    span via = {NULL, 0}, from = {NULL, 0}, to = {NULL, 0}, cid = {NULL, 0}, cseq = {NULL, 0};
    while (pos < end) {
        /* Lines are found with memchr; only the values copied into the answer are checked
         * character by character (below), the rest is the full way's to judge. */
        const char *cr = memchr(s + pos, '\r', (size_t)(end - pos));
        Py_ssize_t eol = cr == NULL ? end : cr - s;
        if (eol >= end || s[eol + 1] != '\n' || eol == pos || s[pos] == ' ' || s[pos] == '\t') {
            return 0;  /* a lone CR, an empty line inside, or a folded line */
        }
        const char *found = memchr(s + pos, ':', (size_t)(eol - pos));
        if (found == NULL) {
            return 0;
        }
        Py_ssize_t colon = found - s;
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
                return 0;
            }
            break;
        case 'l':
            if (nl == 1 && (value.n != 1 || value.p[0] != '0')) {
                return 0;
            }
            break;
        case 'a':
        case 'r':
        case 'p':
            if (lower_eq(name, nl, "authorization") || lower_eq(name, nl, "require") ||
                lower_eq(name, nl, "proxy-require")) {
                return 0;
            }
            break;
        default:
            break;
        }
        if (slot != NULL) {
            if (slot->p != NULL || value.n == 0 || !printable(value)) {
                return 0;  /* twice (two Vias included), empty, or not plain ASCII */
            }
            *slot = value;
        }
        pos = eol + 2;
    }
    if (via.p == NULL || from.p == NULL || to.p == NULL || cid.p == NULL || cseq.p == NULL) {
        return 0;
    }
    /* Via: SIP/2.0/TRANSPORT host[:port] then parameters, as the serializer renders it. */
    const char *v = via.p;
    Py_ssize_t vn = via.n, i = 8;
    if (vn < 10 || memcmp(v, "SIP/2.0/", 8) != 0) {
        return 0;
    }
    while (i < vn && v[i] >= 'A' && v[i] <= 'Z') {
        i++;
    }
    if (i == 8 || i >= vn || v[i] != ' ') {
        return 0;
    }
    Py_ssize_t vhost = ++i;
    while (i < vn && is_hostchar(v[i])) {
        i++;
    }
    Py_ssize_t vhost_len = i - vhost;
    if (vhost_len == 0) {
        return 0;
    }
    if (i < vn && v[i] == ':') {
        Py_ssize_t ps = ++i;
        while (i < vn && v[i] >= '0' && v[i] <= '9') {
            i++;
        }
        if (i - ps == 0 || i - ps > 5 || v[ps] == '0') {
            return 0;  /* rendered from an int: no leading zero */
        }
    }
    /* ``oc`` (RFC 7339): the full way writes our overload report into this Via. */
    static const char *const via_names[3] = {"branch", "rport", "oc"};
    span vp[3];
    int vbare[3];
    if (!scan_params(v + i, vn - i, via_names, vp, vbare, 3, "received") || vp[0].p == NULL ||
        vbare[0] || vp[2].p != NULL) {
        return 0;
    }
    /* From: name-addr; its tag among the parameters after the URI. */
    const char *f = from.p;
    Py_ssize_t gt = from.n - 1;
    while (gt >= 0 && f[gt] != '>') {
        gt--;
    }
    if (gt < 0 || memchr(f, '<', (size_t)gt) == NULL) {
        return 0;
    }
    static const char *const from_names[1] = {"tag"};
    span ft[1];
    int fbare[1];
    if (!scan_params(f + gt + 1, from.n - gt - 1, from_names, ft, fbare, 1, NULL) || fbare[0]) {
        return 0;
    }
    /* To: exactly <sip:...>; the realm is its host, lower-cased. */
    const char *t = to.p;
    Py_ssize_t tn = to.n;
    if (tn < 7 || t[0] != '<' || t[tn - 1] != '>') {
        return 0;
    }
    Py_ssize_t u = 1;
    if (memcmp(t + 1, "sip:", 4) == 0) {
        u = 5;
    } else if (tn > 8 && memcmp(t + 1, "sips:", 5) == 0) {
        u = 6;
    } else {
        return 0;
    }
    Py_ssize_t at = -1;
    for (Py_ssize_t k = u; k < tn - 1; k++) {
        if (t[k] == '<' || t[k] == '>' || t[k] == ' ' || t[k] == '\t' || t[k] == '"') {
            return 0;
        }
        if (t[k] == '@') {
            if (at >= 0) {
                return 0;
            }
            at = k;
        }
    }
    Py_ssize_t rs = at >= 0 ? at + 1 : u, re_ = rs;
    while (re_ < tn - 1 && is_hostchar(t[re_])) {
        re_++;
    }
    if (re_ == rs || (re_ < tn - 1 && t[re_] != ':' && t[re_] != ';' && t[re_] != '?')) {
        return 0;
    }
    char *realm = h->realm;
    if (re_ - rs >= (Py_ssize_t)sizeof h->realm) {
        return 0;
    }
    for (Py_ssize_t k = rs; k < re_; k++) {
        char c = t[k];
        realm[k - rs] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    /* Call-ID without spaces; CSeq: digits, one space, REGISTER. */
    for (Py_ssize_t k = 0; k < cid.n; k++) {
        if (cid.p[k] == ' ' || cid.p[k] == '\t') {
            return 0;
        }
    }
    Py_ssize_t d = 0;
    while (d < cseq.n && cseq.p[d] >= '0' && cseq.p[d] <= '9') {
        d++;
    }
    if (d == 0 || d > 10 || cseq.n != d + 9 || memcmp(cseq.p + d, " REGISTER", 9) != 0) {
        return 0;
    }
    unsigned long long seq = 0;
    for (Py_ssize_t k = 0; k < d; k++) {
        seq = seq * 10 + (unsigned long long)(cseq.p[k] - '0');
    }
    if (seq > 0x7fffffffULL) {
        return 0;
    }
    if (port < 0 || port > 65535) {
        return 0;
    }
    h->seqlen = decimal(seq, h->seqtext);
    h->portlen = decimal((unsigned long long)port, h->porttext);
    /* The answer's Via is stamped as SipCore._stamp_via does (§18.2.1, RFC 3581 §4). */
    h->rport = vbare[1] ? vp[1].p : NULL;
    h->add_received = vbare[1] || vhost_len != hlen || memcmp(v + vhost, host, (size_t)hlen);
    h->via = via;
    h->from = from;
    h->to = to;
    h->cid = cid;
    h->branch = vp[0];
    h->from_tag = ft[0];
    h->host = host;
    h->hlen = hlen;
    h->realm_len = re_ - rs;
    return 1;
}

/* Bytes of the answer's head from its Via up to the To tag's value ("...;tag="). */
static Py_ssize_t
before_len(const head_t *h)
{
    return 7 + h->via.n + (h->rport != NULL ? 1 + h->portlen : 0) +
           (h->add_received ? 10 + h->hlen : 0) + 8 + h->from.n + 6 + h->to.n + 5;
}

static char *
write_before(const head_t *h, char *o)
{
    memcpy(o, "\r\nVia: ", 7);
    o += 7;
    if (h->rport != NULL) {
        Py_ssize_t cut = h->rport - h->via.p;
        memcpy(o, h->via.p, (size_t)cut);
        o += cut;
        *o++ = '=';
        memcpy(o, h->porttext, (size_t)h->portlen);
        o += h->portlen;
        memcpy(o, h->rport, (size_t)(h->via.n - cut));
        o += h->via.n - cut;
    } else {
        memcpy(o, h->via.p, (size_t)h->via.n);
        o += h->via.n;
    }
    if (h->add_received) {
        memcpy(o, ";received=", 10);
        o += 10;
        memcpy(o, h->host, (size_t)h->hlen);
        o += h->hlen;
    }
    memcpy(o, "\r\nFrom: ", 8);
    o += 8;
    memcpy(o, h->from.p, (size_t)h->from.n);
    o += h->from.n;
    memcpy(o, "\r\nTo: ", 6);
    o += 6;
    memcpy(o, h->to.p, (size_t)h->to.n);
    o += h->to.n;
    memcpy(o, ";tag=", 5);
    return o + 5;
}

/* Its Call-ID and CSeq lines. */
static Py_ssize_t
after_len(const head_t *h)
{
    return 11 + h->cid.n + 8 + h->seqlen + 9;
}

static char *
write_after(const head_t *h, char *o)
{
    memcpy(o, "\r\nCall-ID: ", 11);
    o += 11;
    memcpy(o, h->cid.p, (size_t)h->cid.n);
    o += h->cid.n;
    memcpy(o, "\r\nCSeq: ", 8);
    o += 8;
    memcpy(o, h->seqtext, (size_t)h->seqlen);
    o += h->seqlen;
    memcpy(o, " REGISTER", 9);
    return o + 9;
}

/* The head of the datagram both entry points take as (data: bytes, host: str, port: int,
 * ...): 1 and ``h`` filled when it is in the subset, 0 when not, -1 with an exception set. */
static int
head_of(PyObject *const *args, head_t *h)
{
    Py_ssize_t hlen;
    const char *host = PyUnicode_AsUTF8AndSize(args[1], &hlen);
    if (host == NULL) {
        return -1;
    }
    long port = PyLong_AsLong(args[2]);
    if (port == -1 && PyErr_Occurred()) {
        return -1;
    }
    return scan(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), host, hlen, port, h);
}

PyObject *
challenge_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1]) ||
        !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "challenge_head(data: bytes, host: str, port: int)");
        return NULL;
    }
    head_t h;
    int found = head_of(args, &h);
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *before = PyBytes_FromStringAndSize(NULL, before_len(&h));
    if (before == NULL) {
        return NULL;
    }
    write_before(&h, PyBytes_AS_STRING(before));
    PyObject *after = PyBytes_FromStringAndSize(NULL, after_len(&h));
    if (after == NULL) {
        Py_DECREF(before);
        return NULL;
    }
    write_after(&h, PyBytes_AS_STRING(after));
    PyObject *from_tag;
    if (h.from_tag.p != NULL) {
        from_tag = PyUnicode_DecodeASCII(h.from_tag.p, h.from_tag.n, NULL);
    } else {
        from_tag = Py_NewRef(Py_None);
    }
    if (from_tag == NULL) {
        Py_DECREF(before);
        Py_DECREF(after);
        return NULL;
    }
    return Py_BuildValue("(s#s#Ns#NN)", h.realm, h.realm_len, h.cid.p, h.cid.n, from_tag,
                         h.branch.p, h.branch.n, before, after);
}

/* -- challenge_answer: the whole 401, from the datagram to the bytes to send ---------------
 *
 * ``challenge_head`` hands six objects back, which Python then hashed, formatted and joined
 * into the answer: 49.7k instructions per 401 from ``SipCore.receive`` to ``sendto``, 35.0k
 * with this (``python -m benchmarks.bench_auth_legs --legs 401``, callgrind).
 * This writes the answer itself.
 * ``ready`` maps a realm to the answer's fixed parts, encoded once per nonce tick by
 * ``Authenticator`` (signaling/auth/policy.py): (status line, then the challenge headers
 * after the CSeq cut where the nonce's unique part goes, the tick's nonce head already at the
 * end of each cut piece).  The two values Python would have computed are computed here with
 * Python's own hash, so the bytes are the same:
 * - the To tag, ``stateless_tag_of``: "%x" % (hash((Call-ID, From tag or None, branch))
 *   & 0xFFFFFFFF), the same for a retransmission (§8.2.6.2);
 * - the nonce's unique part, ``NonceMinter.make`` with the salt "Call-ID|branch": 16 hex
 *   digits of hash(salt) & (2**64 - 1), the same nonce for a retransmission within a tick.
 * A realm missing from ``ready`` is returned (a str) for the caller to judge and add. */

/* ``v`` in lower-case hex into ``out``: exactly ``width`` digits, or (width 0) no leading
 * zeros, as "%x" writes it.  Returns the count. */
static int
hex(unsigned long long v, int width, char *out)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v != 0 || n < width);
    for (int i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

/* The text of ``parts`` (ASCII spans) as one str, as Python would have joined them. */
static PyObject *
ascii_str(const span *parts, int count)
{
    Py_ssize_t total = 0;
    for (int i = 0; i < count; i++) {
        total += parts[i].n;
    }
    PyObject *out = PyUnicode_New(total, 127);
    if (out == NULL) {
        return NULL;
    }
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    for (int i = 0; i < count; i++) {
        memcpy(o, parts[i].p, (size_t)parts[i].n);
        o += parts[i].n;
    }
    return out;
}

/* (Python's hash of "Call-ID|branch", of (Call-ID, From tag or None, branch)); 0 on error. */
static int
hashes(const head_t *h, Py_hash_t *salt_hash, Py_hash_t *tag_hash)
{
    span salt[3] = {h->cid, {"|", 1}, h->branch};
    PyObject *text = ascii_str(salt, 3);
    if (text == NULL) {
        return 0;
    }
    *salt_hash = PyObject_Hash(text);
    Py_DECREF(text);
    PyObject *cid = ascii_str(&h->cid, 1);
    PyObject *branch = ascii_str(&h->branch, 1);
    PyObject *tag = h->from_tag.p != NULL ? ascii_str(&h->from_tag, 1) : Py_NewRef(Py_None);
    PyObject *key = (cid == NULL || branch == NULL || tag == NULL) ? NULL
                    : PyTuple_Pack(3, cid, tag, branch);
    Py_XDECREF(cid);
    Py_XDECREF(branch);
    Py_XDECREF(tag);
    if (key == NULL) {
        return 0;
    }
    *tag_hash = PyObject_Hash(key);
    Py_DECREF(key);
    return *salt_hash != -1 && *tag_hash != -1;
}

PyObject *
challenge_answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1]) ||
        !PyLong_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "challenge_answer(data: bytes, host: str, port: int, ready: dict)");
        return NULL;
    }
    head_t h;
    int found = head_of(args, &h);
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *realm = PyUnicode_DecodeASCII(h.realm, h.realm_len, NULL);
    if (realm == NULL) {
        return NULL;
    }
    PyObject *parts = PyDict_GetItemWithError(args[3], realm);  /* borrowed */
    if (parts == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(realm);
            return NULL;
        }
        return realm;  /* not known yet: the caller judges the realm */
    }
    Py_DECREF(realm);
    Py_ssize_t count = PyTuple_Check(parts) ? PyTuple_GET_SIZE(parts) : 0;
    if (count < 2) {
        PyErr_SetString(PyExc_TypeError, "ready[realm]: a tuple of at least two bytes");
        return NULL;
    }
    Py_ssize_t total = before_len(&h) + after_len(&h) + 16 * (count - 2) + 8;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *p = PyTuple_GET_ITEM(parts, i);
        if (!PyBytes_Check(p)) {
            PyErr_SetString(PyExc_TypeError, "ready[realm]: a tuple of at least two bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(p);
    }
    Py_hash_t salt_hash, tag_hash;
    if (!hashes(&h, &salt_hash, &tag_hash)) {
        return NULL;
    }
    char unique[16], tag[8];
    hex((unsigned long long)salt_hash, 16, unique);
    int taglen = hex((unsigned long long)tag_hash & 0xFFFFFFFFULL, 0, tag);
    total -= 8 - taglen;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        return NULL;
    }
    char *o = PyBytes_AS_STRING(out);
    PyObject *status = PyTuple_GET_ITEM(parts, 0);
    memcpy(o, PyBytes_AS_STRING(status), (size_t)PyBytes_GET_SIZE(status));
    o = write_before(&h, o + PyBytes_GET_SIZE(status));
    memcpy(o, tag, (size_t)taglen);
    o = write_after(&h, o + taglen);
    for (Py_ssize_t i = 1; i < count; i++) {
        if (i > 1) {
            memcpy(o, unique, 16);
            o += 16;
        }
        PyObject *p = PyTuple_GET_ITEM(parts, i);
        memcpy(o, PyBytes_AS_STRING(p), (size_t)PyBytes_GET_SIZE(p));
        o += PyBytes_GET_SIZE(p);
    }
    return out;
}
