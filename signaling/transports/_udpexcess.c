/* The excess of a SIP storm on the listening UDP socket, read and refused in C.
 *
 * What it is for (issue 13): under a storm the listening socket is read in Python no faster
 * than the server can use (``ReadPace``, signaling/transports/udpqueue.py).  What arrives
 * beyond that was left to the kernel's tail drop, which costs nothing to drop but comes back:
 * a client retransmits a lost request (RFC 3261 §17.1.1.2, §17.1.2.2, up to ten times), and
 * the server then reads and serves late retransmissions, half of them answered after the
 * client's deadline (SIPp REGISTERs at 2x: ~4 transmissions per attempt, goodput ~30-40% of
 * capacity).  In Python a 503 costs ~25 µs, a fifth of the CPU a REGISTER takes, so it cannot
 * be the answer either.  ``drain`` reads the socket in batches (recvmmsg), lets through the
 * datagrams the read pace allows, and answers each new request beyond it with a stateless 503
 * written from its bytes (sendmmsg), which ends the client's transaction (no retransmissions)
 * at a few µs, mostly the kernel's.
 *
 * Per datagram, by a scan of its header section (no parse, no Python object):
 * - a new request (INVITE, REGISTER, SUBSCRIBE, PUBLISH, MESSAGE, REFER, NOTIFY without a To
 *   tag) beyond the pace, or one that waited in the kernel longer than ``late`` (the server's
 *   max_receive_delay) whatever the pace: a 503 with a jittered Retry-After (§21.5.4), or a
 *   counted drop once the 503 budget is spent or when the request is outside the subset the
 *   503 is written from.  A late request let through would be dropped unanswered by the
 *   admission gate (signaling/overload.py: a 503 by the full path costs about what serving a
 *   REGISTER does) and come back retransmitted, to be served after its client's T1: here the
 *   503 costs a few µs and ends the transaction (see ``late`` in ``drain``);
 *   a REGISTER in the band the kernel shed dropped (``band``: for a few seconds after its
 *   share came down, see ``_udpband.c`` and udpshed.py) is refused so too, whatever the pace:
 *   served, the retransmission of a dropped transaction was answered seconds late;
 *   one with an ``oc`` Via parameter always goes the Python way (RFC 7339: the report is
 *   written into that Via), as does the retransmission of a new request this drain let
 *   through (a bounded memory of their Call-ID and CSeq), which the transaction absorbs (a
 *   retransmission beyond the pace is dropped, never refused: it was admitted);
 * - a request whose To tag is one of these 503s' (the ACK of a refused INVITE, §17.1.1.3, or
 *   the BYE a load generator sends after an unexpected 503): dropped, counted.  The tag is
 *   ``x503`` and a keyed hash of the Call-ID, so it needs no memory and a phone's own tag
 *   cannot match it by accident;
 * - admitted work: a response, a request with a To tag that is not one of ours (ACK of a 2xx,
 *   BYE, PRACK, re-INVITE ... inside a dialog, §12.2), a CANCEL (of an INVITE admitted,
 *   §9.2): always let through, whatever the pace, never dropped, and not charged to the pace
 *   (issue 13: work already admitted comes first).  A caller that ignores our Record-Route's
 *   port sends its ACK and BYE here (SIPp does: it sends every request to the address it was
 *   given, SIPp/sipp#666); when these were paced like new requests, a call step just past
 *   capacity collapsed: the pace (1.2 times the INVITE limit) had to carry three datagrams
 *   per admitted call, the ACKs and BYEs beyond it were dropped, the callee retransmitted
 *   its 200 and the caller its BYE, each retransmission read and forwarded again, and the
 *   CPU per completed call doubled (benchmarks/README.md, bench_multiproc and
 *   bench_overload, session 11).  One call lets through at most ``HOLD_MOST`` of them and
 *   then stops reading: the rest stays queued for the next call, not dropped;
 * - everything else (an out-of-dialog request that starts nothing, garbage): let through
 *   while the pace allows, else dropped as the kernel's tail drop would have (the client
 *   retransmits), counted.
 *
 * The subset a 503 is written from: CRLF line ends, no folded lines, the Via, From, To,
 * Call-ID and CSeq headers present (compact forms too), at most 16 Via lines, the answer
 * under 4 KB.  Same headers as ``signaling.stateless.stateless_answer`` (Vias, From, To with
 * the tag, Call-ID, CSeq, then Retry-After and the server's extra headers), with the top Via
 * stamped as ``SipCore._stamp_via`` does (RFC 3581 rport, §18.2.1 received).
 *
 * ``receive`` is the ordinary read of every UDP socket (``UdpTransport._read``) in the same
 * batches (``_udprecv.c``, which reads the drain's batches too): each datagram with its
 * source and the time it waited, nothing scanned or refused.
 *
 * Memory safety: every scan is bounded by the datagram's length; answers are written with a
 * bound check against their buffer.
 */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_udpband.h"
#include "_udprecv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define ANSWER_MAX 4096
#define MAX_VIAS 16
/* Call-ID/CSeq hashes of new requests let through, for their retransmissions: at a few
 * thousand a second that is many seconds of them (direct-mapped: a collision forgets one). */
#define MEMORY_BITS 16
#define TAG_PREFIX "x503"
#define TAG_LEN 20 /* prefix + 16 hex digits */
/* Admitted work one drain lets through before it stops reading (see the module comment):
 * each costs a parse and its transaction's or dialog's work (~30-100 µs), so this bounds
 * one call's share of the loop to a few tens of ms; ``EXCESS_PASS_MOST`` in udp.py. */
#define HOLD_MOST (4 * BATCH)

static char out[BATCH][ANSWER_MAX];
static uint64_t memory[1 << MEMORY_BITS];
static uint64_t key = 0x9e3779b97f4a7c15ULL;
static uint64_t rng = 0x2545f4914f6cdd1dULL;

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

enum { K_OTHER, K_NEW, K_OURS, K_ADMITTED };
enum { M_INVITE, M_REGISTER, M_OTHER_NEW };

typedef struct {
    int kind, method, answerable, oc;
    span vias[MAX_VIAS];
    int nvia;
    span from, to, callid, cseq;
} scan_t;

static uint64_t
mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static uint64_t
fnv(uint64_t h, span s)
{
    for (Py_ssize_t i = 0; i < s.n; i++) {
        h = (h ^ (unsigned char)s.p[i]) * 0x100000001b3ULL;
    }
    return h;
}

static uint64_t
tag_hash(span callid)
{
    return mix(fnv(key ^ 0xcbf29ce484222325ULL, callid));
}

static void
hex16(uint64_t v, char *dst)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        dst[i] = digits[v & 15];
        v >>= 4;
    }
}

static int
ci_eq(const char *s, Py_ssize_t n, const char *lit)
{
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c + 32);
        }
        if (lit[i] == '\0' || lit[i] != c) {
            return 0;
        }
    }
    return lit[i] == '\0';
}

static int
blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The tag value of a To header value, as ``signaling/overload.py``'s regular expressions
 * find it (``;`` [ \t]* ``tag`` [ \t]* ``=``); p == NULL when there is none. */
static span
to_tag(span to)
{
    span none = {NULL, 0};
    for (Py_ssize_t i = 0; i < to.n; i++) {
        if (to.p[i] != ';') {
            continue;
        }
        Py_ssize_t j = i + 1;
        while (j < to.n && blank(to.p[j])) {
            j++;
        }
        if (j + 3 > to.n || !ci_eq(to.p + j, 3, "tag")) {
            continue;
        }
        j += 3;
        while (j < to.n && blank(to.p[j])) {
            j++;
        }
        if (j >= to.n || to.p[j] != '=') {
            continue;
        }
        j++;
        while (j < to.n && blank(to.p[j])) {
            j++;
        }
        Py_ssize_t v = j;
        while (j < to.n && to.p[j] != ';' && !blank(to.p[j])) {
            j++;
        }
        span tag = {to.p + v, j - v};
        return tag;
    }
    return none;
}

static int
is_ours(span tag, span callid)
{
    if (tag.n != TAG_LEN || memcmp(tag.p, TAG_PREFIX, 4) != 0) {
        return 0;
    }
    char want[16];
    hex16(tag_hash(callid), want);
    return memcmp(tag.p + 4, want, 16) == 0;
}

static int
new_method(const char *s, Py_ssize_t n)
{
    switch (n) {
    case 6:
        if (memcmp(s, "INVITE", 6) == 0) return M_INVITE;
        if (memcmp(s, "NOTIFY", 6) == 0) return M_OTHER_NEW;
        return -1;
    case 8:
        return memcmp(s, "REGISTER", 8) == 0 ? M_REGISTER : -1;
    case 9:
        return memcmp(s, "SUBSCRIBE", 9) == 0 ? M_OTHER_NEW : -1;
    case 7:
        return (memcmp(s, "PUBLISH", 7) == 0 || memcmp(s, "MESSAGE", 7) == 0) ? M_OTHER_NEW
                                                                               : -1;
    case 5:
        return memcmp(s, "REFER", 5) == 0 ? M_OTHER_NEW : -1;
    default:
        return -1;
    }
}

/* What the datagram is (see the module comment); ``answerable`` when a 503 can be written. */
static void
scan(const char *s, Py_ssize_t n, scan_t *sc)
{
    memset(sc, 0, sizeof(*sc));
    sc->kind = K_OTHER;
    if (n < 8) {
        return; /* too short to be anything */
    }
    if (memcmp(s, "SIP/2.0 ", 8) == 0) {
        sc->kind = K_ADMITTED; /* a response: to a transaction of ours, admitted */
        return;
    }
    Py_ssize_t sp = 0;
    while (sp < n && sp < 12 && s[sp] != ' ') {
        sp++;
    }
    if (sp >= n || s[sp] != ' ') {
        return;
    }
    int method = new_method(s, sp);
    if (sp == 6 && memcmp(s, "CANCEL", 6) == 0) {
        sc->kind = K_ADMITTED; /* §9.2: of an INVITE let in (one matching none gets 481) */
        return;
    }
    const char *nl = memchr(s, '\n', (size_t)n);
    if (nl == NULL) {
        return;
    }
    Py_ssize_t pos = nl - s + 1;
    int ok = nl > s && nl[-1] == '\r';
    while (pos < n) {
        const char *e = memchr(s + pos, '\n', (size_t)(n - pos));
        Py_ssize_t eol = e == NULL ? n : e - s;
        Py_ssize_t end = eol;
        if (e == NULL || end == pos || s[end - 1] != '\r') {
            ok = 0;
        } else {
            end--;
        }
        if (end == pos) {
            break; /* the empty line: the end of the header section */
        }
        if (blank(s[pos])) {
            ok = 0; /* a folded line: the Python way */
        }
        Py_ssize_t colon = pos;
        while (colon < end && s[colon] != ':') {
            colon++;
        }
        if (colon < end) {
            Py_ssize_t ne = colon;
            while (ne > pos && blank(s[ne - 1])) {
                ne--;
            }
            Py_ssize_t vs = colon + 1, ve = end;
            while (vs < ve && blank(s[vs])) {
                vs++;
            }
            while (ve > vs && blank(s[ve - 1])) {
                ve--;
            }
            span v = {s + vs, ve - vs};
            const char *name = s + pos;
            Py_ssize_t len = ne - pos;
            if (ci_eq(name, len, "via") || ci_eq(name, len, "v")) {
                if (sc->nvia < MAX_VIAS) {
                    sc->vias[sc->nvia] = v;
                }
                sc->nvia++;
                for (Py_ssize_t i = 0; i + 3 <= v.n; i++) {
                    if (v.p[i] == ';' && ci_eq(v.p + i + 1, 2, "oc") &&
                        (i + 3 == v.n || v.p[i + 3] == ';' || v.p[i + 3] == '=' ||
                         v.p[i + 3] == ',' || blank(v.p[i + 3]))) {
                        sc->oc = 1;
                    }
                }
            } else if (ci_eq(name, len, "from") || ci_eq(name, len, "f")) {
                sc->from = v;
            } else if (ci_eq(name, len, "to") || ci_eq(name, len, "t")) {
                sc->to = v;
            } else if (ci_eq(name, len, "call-id") || ci_eq(name, len, "i")) {
                sc->callid = v;
            } else if (ci_eq(name, len, "cseq")) {
                sc->cseq = v;
            }
        }
        pos = eol + 1;
    }
    int complete = sc->to.p != NULL && sc->callid.p != NULL;
    span tag = complete ? to_tag(sc->to) : (span){NULL, 0};
    if (tag.p != NULL) {
        /* in a dialog (or claiming to be): not new work, admitted unless it is ours */
        sc->kind = is_ours(tag, sc->callid) ? K_OURS : K_ADMITTED;
        return;
    }
    if (method < 0) {
        return; /* a request of no dialog that starts nothing (OPTIONS, a tagless ACK) */
    }
    sc->kind = K_NEW;
    sc->method = method;
    sc->answerable = ok && complete && sc->nvia > 0 && sc->nvia <= MAX_VIAS &&
                     sc->from.p != NULL && sc->cseq.p != NULL;
}

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} writer;

static void
put(writer *w, const char *s, Py_ssize_t n)
{
    if (w->n + n > w->cap) {
        w->n = w->cap + 1; /* too long: marked, never written past */
        return;
    }
    memcpy(w->p + w->n, s, (size_t)n);
    w->n += n;
}

static void
puts_(writer *w, const char *s)
{
    put(w, s, (Py_ssize_t)strlen(s));
}

/* The top Via as ``SipCore._stamp_via`` leaves it: a bare rport gets the source port and
 * ``received`` (RFC 3581 §4), else ``received`` when the sent-by host is not the source
 * (§18.2.1).  Only the first value of the line (up to a comma) is the top Via. */
static void
put_top_via(writer *w, span via, const char *ip, int port)
{
    Py_ssize_t top = 0;
    while (top < via.n && via.p[top] != ',') {
        top++;
    }
    Py_ssize_t rport = -1;
    for (Py_ssize_t i = 0; i + 6 <= top; i++) {
        if (via.p[i] == ';' && ci_eq(via.p + i + 1, 5, "rport") &&
            (i + 6 == top || via.p[i + 6] == ';' || blank(via.p[i + 6]))) {
            rport = i + 6;
            break;
        }
    }
    char num[16];
    if (rport >= 0) {
        put(w, via.p, rport);
        int k = snprintf(num, sizeof num, "=%d", port);
        put(w, num, k);
        put(w, via.p + rport, top - rport);
    } else {
        /* sent-by: after "SIP/2.0/TRANSPORT" and blanks, up to ':', ';' or a blank */
        Py_ssize_t h = 0;
        while (h < top && !blank(via.p[h])) {
            h++;
        }
        while (h < top && blank(via.p[h])) {
            h++;
        }
        Py_ssize_t he = h;
        if (he < top && via.p[he] == '[') {
            while (he < top && via.p[he] != ']') {
                he++;
            }
            he += he < top;
        } else {
            while (he < top && via.p[he] != ':' && via.p[he] != ';' && !blank(via.p[he])) {
                he++;
            }
        }
        put(w, via.p, top);
        if ((size_t)(he - h) == strlen(ip) && memcmp(via.p + h, ip, (size_t)(he - h)) == 0) {
            put(w, via.p + top, via.n - top);
            return;
        }
    }
    puts_(w, ";received=");
    puts_(w, ip);
    put(w, via.p + top, via.n - top);
}

/* The 503 for a scanned request into ``dst``; its length, or 0 when it does not fit. */
static Py_ssize_t
answer(const scan_t *sc, char *dst, const char *ip, int port, int retry, span extra)
{
    writer w = {dst, 0, ANSWER_MAX};
    puts_(&w, "SIP/2.0 503 Service Unavailable");
    for (int i = 0; i < sc->nvia; i++) {
        puts_(&w, "\r\nVia: ");
        if (i == 0) {
            put_top_via(&w, sc->vias[0], ip, port);
        } else {
            put(&w, sc->vias[i].p, sc->vias[i].n);
        }
    }
    puts_(&w, "\r\nFrom: ");
    put(&w, sc->from.p, sc->from.n);
    puts_(&w, "\r\nTo: ");
    put(&w, sc->to.p, sc->to.n);
    char tag[5 + TAG_LEN];
    memcpy(tag, ";tag=" TAG_PREFIX, 9);
    hex16(tag_hash(sc->callid), tag + 9);
    put(&w, tag, sizeof tag);
    puts_(&w, "\r\nCall-ID: ");
    put(&w, sc->callid.p, sc->callid.n);
    puts_(&w, "\r\nCSeq: ");
    put(&w, sc->cseq.p, sc->cseq.n);
    char num[32];
    int k = snprintf(num, sizeof num, "\r\nRetry-After: %d", retry);
    put(&w, num, k);
    put(&w, extra.p, extra.n);
    puts_(&w, "\r\nContent-Length: 0\r\n\r\n");
    return w.n > w.cap ? 0 : w.n;
}

/* Whether the kernel shed dropped from ``ss``: every source when none is named, else the
 * IPv4 sources named (``nfrom`` addresses of 4 octets at ``from``, network order). */
static int
band_source(const struct sockaddr_storage *ss, const char *from, Py_ssize_t nfrom)
{
    if (nfrom == 0) {
        return 1;
    }
    if (ss->ss_family != AF_INET) {
        return 0;
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    for (Py_ssize_t j = 0; j < nfrom; j++) {
        if (memcmp(&a->sin_addr.s_addr, from + 4 * j, 4) == 0) {
            return 1;
        }
    }
    return 0;
}

static uint64_t
remembered_key(const scan_t *sc)
{
    span sep = {"\n", 1};
    uint64_t h = mix(fnv(fnv(fnv(key, sc->callid), sep), sc->cseq));
    return h ? h : 1;
}


/* Counters, in the order ``drain`` returns them after its four queue statistics. */
enum {
    C_ANSWERED_INVITE, C_ANSWERED_REGISTER, C_ANSWERED_OTHER, C_DROPPED_NEW,
    C_DROPPED_RETRANSMISSION, C_DROPPED_OURS, C_DROPPED_OTHER,
    C_LATE, /* of the answered and dropped new requests, those refused for waiting past late */
    C_ADMITTED, /* of the datagrams let through, the admitted work (not charged to the pace) */
    C_BAND_ANSWERED, /* REGISTERs in the band the kernel shed dropped: answered 503 ... */
    C_BAND_DROPPED,  /* ... or dropped, the 503 budget spent (apart from the counts above) */
    C_COUNT
};

static PyObject *
drain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 12 || !PyList_Check(args[7]) || !PyBytes_Check(args[6]) ||
        !PyBytes_Check(args[11]) || PyBytes_GET_SIZE(args[11]) % 4 != 0) {
        PyErr_SetString(PyExc_TypeError,
                        "drain(fd, passes, answers, most, retry_low, retry_high, extra: bytes, "
                        "passed: list, late: float, salt: int, band: int, sources: bytes)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    long passes = PyLong_AsLong(args[1]);
    long answers = PyLong_AsLong(args[2]);
    long most = PyLong_AsLong(args[3]);
    long retry_lo = PyLong_AsLong(args[4]);
    long retry_hi = PyLong_AsLong(args[5]);
    double late = PyFloat_AsDouble(args[8]);
    /* The kernel shed's salt and the band it dropped (hashes under ``band``; 0: none): a
     * new REGISTER in it is refused, never let through (``_udpband.c``). */
    uint32_t salt = (uint32_t)PyLong_AsUnsignedLongMask(args[9]);
    unsigned long long band = PyLong_AsUnsignedLongLong(args[10]);
    /* The IPv4 sources the filter dropped from (4 octets each, network order), as its
     * program names them: the band is theirs alone; none named: every source's. */
    const char *band_from = PyBytes_AS_STRING(args[11]);
    Py_ssize_t nfrom = PyBytes_GET_SIZE(args[11]) / 4;
    if (PyErr_Occurred()) {
        return NULL;
    }
    span extra = {PyBytes_AS_STRING(args[6]), PyBytes_GET_SIZE(args[6])};
    PyObject *passed = args[7];
    long counts[C_COUNT] = {0};
    long read = 0, payload = 0;
    unsigned long ovfl = 0;
    int have_ovfl = 0;
    double max_wait = 0.0, min_wait = -1.0;
    static struct mmsghdr sends[BATCH];
    static struct iovec siov[BATCH];
    while (read < most) {
        int want = (int)(most - read < BATCH ? most - read : BATCH);
        int got = read_batch((int)fd, want);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            counts[C_DROPPED_OTHER]++; /* an ICMP error reported on the socket: consumed */
            read++;
            continue;
        }
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int nsend = 0;
        for (int i = 0; i < got; i++) {
            const char *s = bufs[i];
            Py_ssize_t n = (Py_ssize_t)msgs[i].msg_len;
            double waited = arrival(&msgs[i].msg_hdr, &now, &ovfl, &have_ovfl);
            payload += (long)n;
            if (waited > max_wait) {
                max_wait = waited;
            }
            if (min_wait < 0 || waited < min_wait) {
                min_wait = waited;
            }
            scan_t sc;
            scan(s, n, &sc);
            int pass = 0;
            if (sc.kind == K_OURS) {
                counts[C_DROPPED_OURS]++;
            } else if (sc.kind == K_ADMITTED) {
                pass = 1;
                counts[C_ADMITTED]++;
            } else if (sc.kind == K_NEW && !sc.oc) {
                uint64_t k = remembered_key(&sc);
                uint64_t *slot = &memory[k & ((1 << MEMORY_BITS) - 1)];
                /* In the band: the next retransmission of a transaction the kernel shed
                 * dropped (or a new one that hashes alike): a 503, whatever the pace. */
                int in_band = band > 0 && sc.method == M_REGISTER &&
                              band_source(&names[i], band_from, nfrom) &&
                              udpband_hash(s, n, salt) < band;
                if (*slot == k) {
                    pass = passes > 0;
                    counts[C_DROPPED_RETRANSMISSION] += !pass;
                } else if (passes > 0 && waited <= late && !in_band) {
                    pass = 1;
                    *slot = k;
                } else {
                    counts[C_LATE] += waited > late && !in_band;
                    char ip[INET6_ADDRSTRLEN];
                    int port = 0;
                    Py_ssize_t len = 0;
                    if (answers > 0 && sc.answerable) {
                        ip_port(&names[i], ip, sizeof ip, &port);
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        long span_ = retry_hi - retry_lo + 1;
                        int retry = (int)(retry_lo + (span_ > 1 ? (long)(rng % (uint64_t)span_)
                                                               : 0));
                        len = answer(&sc, out[nsend], ip, port, retry, extra);
                    }
                    if (len > 0) {
                        answers--;
                        siov[nsend].iov_base = out[nsend];
                        siov[nsend].iov_len = (size_t)len;
                        memset(&sends[nsend].msg_hdr, 0, sizeof(struct msghdr));
                        sends[nsend].msg_hdr.msg_iov = &siov[nsend];
                        sends[nsend].msg_hdr.msg_iovlen = 1;
                        /* names[i] is not overwritten before the send below */
                        sends[nsend].msg_hdr.msg_name = &names[i];
                        sends[nsend].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
                        nsend++;
                        counts[in_band                   ? C_BAND_ANSWERED
                               : sc.method == M_INVITE   ? C_ANSWERED_INVITE
                               : sc.method == M_REGISTER ? C_ANSWERED_REGISTER
                                                         : C_ANSWERED_OTHER]++;
                    } else {
                        counts[in_band ? C_BAND_DROPPED : C_DROPPED_NEW]++;
                    }
                }
            } else {
                pass = passes > 0;
                counts[C_DROPPED_OTHER] += !pass;
            }
            if (pass) {
                passes -= sc.kind != K_ADMITTED;
                if (append_datagram(passed, s, n, &names[i], waited) < 0) {
                    return NULL;
                }
            }
        }
        for (int done = 0; done < nsend;) {
            int sent = sendmmsg((int)fd, sends + done, (unsigned int)(nsend - done), MSG_DONTWAIT);
            if (sent <= 0) {
                if (sent < 0 && errno == EINTR) {
                    continue;
                }
                break; /* the send buffer is full: UDP may lose them, the client retransmits */
            }
            done += sent;
        }
        read += got;
        if (got < want) {
            break; /* the queue is empty */
        }
        if (counts[C_ADMITTED] >= HOLD_MOST) {
            break; /* the rest waits for the next call, queued (see HOLD_MOST) */
        }
    }
    PyObject *result = PyTuple_New(4 + C_COUNT);
    if (result == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong(read));
    PyTuple_SET_ITEM(result, 1, PyLong_FromLong(payload));
    PyTuple_SET_ITEM(result, 2, PyFloat_FromDouble(max_wait));
    PyTuple_SET_ITEM(result, 3, have_ovfl ? PyLong_FromUnsignedLong(ovfl) : Py_NewRef(Py_None));
    for (int c = 0; c < C_COUNT; c++) {
        PyTuple_SET_ITEM(result, 4 + c, PyLong_FromLong(counts[c]));
    }
    (void)min_wait;
    return result;
}


static PyObject *
refusal_tag(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "refusal_tag(call_id: bytes)");
        return NULL;
    }
    span cid = {PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)};
    char tag[TAG_LEN];
    memcpy(tag, TAG_PREFIX, 4);
    hex16(tag_hash(cid), tag + 4);
    return PyUnicode_FromStringAndSize(tag, TAG_LEN);
}

static PyObject *
set_key(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg) || PyBytes_GET_SIZE(arg) < 16) {
        PyErr_SetString(PyExc_TypeError, "set_key(key: bytes of 16 or more)");
        return NULL;
    }
    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(arg);
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 8; i++) {
        a = (a << 8) | k[i];
        b = (b << 8) | k[8 + i];
    }
    key = mix(a) ^ b;
    rng = mix(b) | 1;
    memset(memory, 0, sizeof memory);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))drain, METH_FASTCALL,
     "Read the socket's queue; pass, refuse with 503 or drop each datagram (see the source)."},
    {"receive", (PyCFunction)(void (*)(void))udprecv_receive, METH_FASTCALL,
     "Read the socket's queue: each datagram with its address and wait (see the source)."},
    {"refusal_tag", refusal_tag, METH_O, "The To tag of the 503 ``drain`` writes for a Call-ID."},
    {"set_key", set_key, METH_O, "Key the refusal tags and the retransmission memory."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "signaling.transports._udpexcess",
    "The excess of a storm on the listening UDP socket, read and refused in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__udpexcess(void)
{
    return PyModule_Create(&module_def);
}
