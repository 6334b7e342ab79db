/* A received request's bytes as a proxy forwards them (RFC 3261 section 16.6), spliced in C.
 *
 * Why in C: protocols/sip/edit.py's splice of a forwarded request written in Python (a list
 * of edits sorted, slices joined) measured dearer than rebuilding the request with
 * ``serialize`` (callgrind, a loop of 2,000: a BYE 22,300 against 16,800 instructions, an
 * INVITE 28,100 against 27,100): each Python operation costs a few hundred instructions, and
 * the edit needs as many of them as the serializer's joins.  Here the same edits are a handful
 * of memcpy calls into one bytes object.  edit.py keeps the rules and the fallbacks; this file
 * only splices what it is given, and returns None for what it does not take (non-ASCII text,
 * more than one Route value popped), where edit.py's caller serializes.
 *
 * The edits, at the layout's offsets (_speedups.h ``L_*``, noted by the parser):
 * - the Request-URI replaced (step 6), when ``uri`` is not None;
 * - our Via inserted above the first Via line, and the received top Via value replaced by its
 *   text now (the receive path stamps received/rport on it, section 18.2.1);
 * - Max-Forwards' value replaced (step 3), or a Max-Forwards line inserted under our Via;
 * - our Record-Route lines (``record_routes``, ready-made lines) inserted above the first
 *   Record-Route line, else above Max-Forwards, else under our Via (step 4);
 * - the first Route value cut (section 16.4), its line when it was alone in it.
 */

#include "_speedups.h"

#define MAX_PARTS 9  /* the Via edit: our Via (3), Max-Forwards (3), Record-Routes, the top Via (2) */
#define MAX_EDITS 5

typedef struct {
    const char *p;
    Py_ssize_t n;
} Piece;

/* [start, end) of the received bytes replaced by the concatenation of ``parts``. */
typedef struct {
    Py_ssize_t start, end;
    int nparts;
    Piece parts[MAX_PARTS];
} Edit;

/* ASCII text of a str (what the C parser accepted is; ours is): 0 when it is not ASCII. */
static int
ascii_of(PyObject *s, Piece *out)
{
    if (!PyUnicode_Check(s) || !PyUnicode_IS_ASCII(s)) {
        return 0;
    }
    out->p = (const char *)PyUnicode_DATA(s);
    out->n = PyUnicode_GET_LENGTH(s);
    return 1;
}

static void
add(Edit *e, const char *p, Py_ssize_t n)
{
    e->parts[e->nparts].p = p;
    e->parts[e->nparts].n = n;
    e->nparts++;
}

static Edit *
new_edit(Edit *edits, int *n, Py_ssize_t start, Py_ssize_t end)
{
    Edit *e = &edits[(*n)++];
    e->start = start;
    e->end = end;
    e->nparts = 0;
    return e;
}

/* forward(wire, routes, via, top, max_forwards, record_routes, uri, body): ``wire`` the
 * request's ``Message.wire``, ``routes`` how many Route values it has now (one fewer than
 * parsed: ours popped), ``via`` our Via's text, ``top`` the received top Via's text now,
 * ``record_routes`` our Record-Route lines (CRLF-ended) or None, ``uri`` the new Request-URI
 * or None, ``body`` the body as parsed.  The bytes, or None. */
PyObject *
forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t at[L_N], mf, total, popped, end_of_head;
    PyObject *layout, *data, *out;
    Piece via, top, rr = {NULL, 0}, uri = {NULL, 0}, mf_text;
    Edit edits[MAX_EDITS], *e, tmp;
    char mf_buf[24], *w;
    const char *d;
    int n = 0;
    (void)module;
    if (nargs != 8 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 2 ||
        !PyBytes_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "forward(wire, routes, via, top, max_forwards, "
                        "record_routes, uri, body)");
        return NULL;
    }
    data = PyTuple_GET_ITEM(args[0], 0);
    layout = PyTuple_GET_ITEM(args[0], 1);
    if (!PyBytes_Check(data) || !PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != L_N) {
        PyErr_SetString(PyExc_TypeError, "forward: wire is (bytes, layout)");
        return NULL;
    }
    for (int i = 0; i < L_N; i++) {
        at[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, i));
    }
    popped = at[L_ROUTES] - PyLong_AsSsize_t(args[1]);
    mf = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (at[L_URI] < 0 || (popped != 0 && popped != 1) || mf < 0 || !ascii_of(args[2], &via) ||
        !ascii_of(args[3], &top) || (args[5] != Py_None && !ascii_of(args[5], &rr)) ||
        (args[6] != Py_None && !ascii_of(args[6], &uri))) {
        Py_RETURN_NONE;  /* a response's layout, RFC 5658's two Routes, non-ASCII: rebuilt */
    }
    d = PyBytes_AS_STRING(data);
    end_of_head = at[L_HEAD_END] + 4;
    if (at[L_HEAD_END] < 0 || end_of_head > PyBytes_GET_SIZE(data) ||
        at[L_VIA_LINE] < 0 || at[L_VIA_VALUE] < at[L_VIA_LINE]) {
        Py_RETURN_NONE;  /* not a layout the parser wrote */
    }
    mf_text.p = mf_buf;
    mf_text.n = snprintf(mf_buf, sizeof mf_buf, "%zd", mf);
    if (uri.p != NULL) {
        add(new_edit(edits, &n, at[L_URI], at[L_URI_END]), uri.p, uri.n);
    }
    /* our Via (and what has no line to go above) above the first Via line */
    e = new_edit(edits, &n, at[L_VIA_LINE], at[L_VIA_ITEM_END]);
    add(e, "Via: ", 5);
    add(e, via.p, via.n);
    add(e, "\r\n", 2);
    if (at[L_MF_VALUE] < 0) {
        add(e, "Max-Forwards: ", 14);
        add(e, mf_text.p, mf_text.n);
        add(e, "\r\n", 2);
    }
    if (rr.p != NULL && at[L_RR_LINE] < 0 && at[L_MF_LINE] < 0) {
        add(e, rr.p, rr.n);
    }
    add(e, d + at[L_VIA_LINE], at[L_VIA_VALUE] - at[L_VIA_LINE]);
    add(e, top.p, top.n);
    if (at[L_MF_VALUE] >= 0) {
        add(new_edit(edits, &n, at[L_MF_VALUE], at[L_MF_END]), mf_text.p, mf_text.n);
    }
    if (rr.p != NULL && (at[L_RR_LINE] >= 0 || at[L_MF_LINE] >= 0)) {
        Py_ssize_t line = at[L_RR_LINE] >= 0 ? at[L_RR_LINE] : at[L_MF_LINE];
        add(new_edit(edits, &n, line, line), rr.p, rr.n);
    }
    if (popped) {
        Py_ssize_t start = at[L_ROUTE_VALUE], end = at[L_ROUTE_CUT_END];
        if (start < 0 || end < 2 || end > end_of_head) {
            Py_RETURN_NONE;
        }
        if (d[end - 2] == '\r' && d[end - 1] == '\n') {
            start = at[L_ROUTE_LINE];  /* the value was alone in its line: the line goes */
        }
        new_edit(edits, &n, start, end);
    }
    /* in offset order (an insertion before a cut at the same offset); lines never overlap */
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && (edits[j].start < edits[j - 1].start ||
                                  (edits[j].start == edits[j - 1].start &&
                                   edits[j].end < edits[j - 1].end)); j--) {
            tmp = edits[j];
            edits[j] = edits[j - 1];
            edits[j - 1] = tmp;
        }
    }
    total = end_of_head + PyBytes_GET_SIZE(args[7]);
    for (int i = 0; i < n; i++) {
        if (edits[i].start < (i == 0 ? 0 : edits[i - 1].end) || edits[i].end < edits[i].start ||
            edits[i].end > end_of_head) {
            Py_RETURN_NONE;  /* overlapping or out of the head: not a layout the parser wrote */
        }
        total -= edits[i].end - edits[i].start;
        for (int k = 0; k < edits[i].nparts; k++) {
            total += edits[i].parts[k].n;
        }
    }
    if ((out = PyBytes_FromStringAndSize(NULL, total)) == NULL) {
        return NULL;
    }
    w = PyBytes_AS_STRING(out);
    {
        Py_ssize_t prev = 0;
        for (int i = 0; i < n; i++) {
            memcpy(w, d + prev, (size_t)(edits[i].start - prev));
            w += edits[i].start - prev;
            for (int k = 0; k < edits[i].nparts; k++) {
                memcpy(w, edits[i].parts[k].p, (size_t)edits[i].parts[k].n);
                w += edits[i].parts[k].n;
            }
            prev = edits[i].end;
        }
        /* the head's rest, then the body as parsed (octets past Content-Length dropped) */
        memcpy(w, d + prev, (size_t)(end_of_head - prev));
        w += end_of_head - prev;
        memcpy(w, PyBytes_AS_STRING(args[7]), (size_t)PyBytes_GET_SIZE(args[7]));
    }
    return out;
}
