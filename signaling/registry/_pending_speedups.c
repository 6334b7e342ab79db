/* C fast paths of ``signaling.registry.pending`` and ``.journal``: filing another worker's
 * journal records, and writing one of ours.
 *
 * ``absorb(pending, data, start, merges)`` does what ``pending.absorb_py`` does, record for
 * record, with the same results (``tests/signaling/registry/test_pending_speedups.py`` compares
 * the two on valid and on random input): each record of ``data[start:]`` (layout: ``RECORD`` in
 * pending.py) is either appended to ``merges`` as ``(aor, body)`` (an AOR ``pending._held``
 * holds: the caller merges it) or filed under its AOR in ``pending._entries`` (an ``Entry``),
 * with ``pending.bindings``, ``.aors`` and ``.size`` updated and the AOR appended under its
 * expiry's second in ``pending._expiry`` (a new second pushed on the heap ``pending._seconds``)
 * when the entry's latest expiry rises or the record is a removal.
 * On a malformed record it raises ValueError (UnicodeDecodeError for a bad AOR) after filing
 * the records before it, as the Python loop does.
 *
 * Why: every worker of ``--processes N`` files every sibling's record, so this loop runs
 * N-1 times per REGISTER of the whole server; in Python it costs ~21,000-26,000 instructions
 * per record (callgrind), the largest share of what grew with N (issue 16).
 *
 * ``write_record(map, head, ring, ...)`` is ``journal.write_record_py``: a record framed
 * (``RECORD``) and copied into a journal's ring in one call, then the head published (a
 * release store).  Why: it is on every REGISTER of the worker that takes it; in Python the
 * framing and the copy cost ~13,000 instructions (callgrind).
 *
 * Entries are not tracked by the garbage collector: they hold bytes and a list of bytes only
 * (their members are read-only from Python), so they cannot be part of a cycle.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <structmember.h>
#include <string.h>

/* ">HHIiidI": AOR length, token length, CSeq, binding delta, AOR delta, latest, body length. */
#define HEADER 28
/* A journal file (journal.py): its header's size, where the head is in it (native order). */
#define JOURNAL_HEADER 64
#define HEAD_AT 8
/* pending.LAST_SECOND: the last second an expiry is filed under. */
#define LAST_SECOND 9007199254740992.0

typedef struct {
    PyObject_HEAD
    PyObject *bodies; /* list of bytes */
    PyObject *token;  /* bytes */
    long long cseq;
    long long bindings;
    long long aors;
    long long size;
    double latest;
} Entry;

static PyObject *heappush; /* heapq.heappush */
static PyObject *empty;    /* b"" */
/* Interned attribute names of the pending object. */
static PyObject *s_entries, *s_held, *s_expiry, *s_seconds, *s_bindings, *s_aors, *s_size;

static PyTypeObject EntryType;

static Entry *entry_create(void)
{
    Entry *self = PyObject_New(Entry, &EntryType);
    if (self == NULL)
        return NULL;
    self->cseq = self->bindings = self->aors = self->size = 0;
    self->latest = 0.0;
    self->bodies = PyList_New(0);
    if (self->bodies == NULL) {
        self->token = NULL;
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(empty);
    self->token = empty;
    return self;
}

static PyObject *Entry_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)type;
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Entry() takes no arguments");
        return NULL;
    }
    return (PyObject *)entry_create();
}

static void Entry_dealloc(Entry *self)
{
    Py_XDECREF(self->bodies);
    Py_XDECREF(self->token);
    PyObject_Free(self);
}

static PyMemberDef Entry_members[] = {
    {"bodies", T_OBJECT_EX, offsetof(Entry, bodies), READONLY, "the records' bodies"},
    {"token", T_OBJECT_EX, offsetof(Entry, token), READONLY, "the last record's token"},
    {"cseq", T_LONGLONG, offsetof(Entry, cseq), READONLY, "the last record's CSeq"},
    {"bindings", T_LONGLONG, offsetof(Entry, bindings), READONLY, "bindings gained"},
    {"aors", T_LONGLONG, offsetof(Entry, aors), READONLY, "AORs gained"},
    {"size", T_LONGLONG, offsetof(Entry, size), READONLY, "bytes of the bodies"},
    {"latest", T_DOUBLE, offsetof(Entry, latest), READONLY, "latest expiry"},
    {NULL}};

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "signaling.registry._pending_speedups.Entry",
    .tp_basicsize = sizeof(Entry),
    .tp_dealloc = (destructor)Entry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The pending records of one AOR (pending._Entry in C).",
    .tp_members = Entry_members,
    .tp_new = Entry_new,
};

static unsigned long be32(const unsigned char *p)
{
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) |
           ((unsigned long)p[2] << 8) | (unsigned long)p[3];
}

static double be_double(const unsigned char *p)
{
    unsigned long long bits = 0;
    for (int i = 0; i < 8; i++)
        bits = (bits << 8) | p[i];
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Add ``delta`` to the int attribute ``name`` of ``obj``. */
static int add_to(PyObject *obj, PyObject *name, long long delta)
{
    if (delta == 0)
        return 0;
    PyObject *old = PyObject_GetAttr(obj, name);
    if (old == NULL)
        return -1;
    PyObject *d = PyLong_FromLongLong(delta);
    PyObject *sum = d ? PyNumber_Add(old, d) : NULL;
    Py_DECREF(old);
    Py_XDECREF(d);
    if (sum == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return rc;
}

/* File one record whose AOR is not held; 0 or -1 (exception set). */
static int file(PyObject *entries, PyObject *expiry, PyObject *seconds, PyObject *aor,
                const char *tok,
                Py_ssize_t tlen, unsigned long cseq, long bindings, long aors, double latest,
                PyObject *body, long long *d_bindings, long long *d_aors, long long *d_size)
{
    Entry *e = (Entry *)PyDict_GetItemWithError(entries, aor); /* borrowed */
    if (e == NULL) {
        if (PyErr_Occurred())
            return -1;
        e = entry_create();
        if (e == NULL)
            return -1;
        int rc = PyDict_SetItem(entries, aor, (PyObject *)e);
        Py_DECREF(e); /* the dict holds it */
        if (rc < 0)
            return -1;
    } else if (!Py_IS_TYPE((PyObject *)e, &EntryType)) {
        PyErr_SetString(PyExc_TypeError, "pending entry of another implementation");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(e->bodies);
    int same = tlen && PyBytes_GET_SIZE(e->token) == tlen &&
               memcmp(PyBytes_AS_STRING(e->token), tok, (size_t)tlen) == 0;
    Py_ssize_t blen = PyBytes_GET_SIZE(body);
    if (same && (long long)cseq > e->cseq && n > 0) {
        /* A refresh of the binding the last record holds: it replaces it. */
        Py_ssize_t old = PyBytes_GET_SIZE(PyList_GET_ITEM(e->bodies, n - 1));
        *d_size -= old;
        e->size -= old;
        Py_INCREF(body);
        PyList_SetItem(e->bodies, n - 1, body); /* steals; drops the old one */
    } else if (PyList_Append(e->bodies, body) < 0) {
        return -1;
    }
    if (!same) {
        PyObject *t = PyBytes_FromStringAndSize(tok, tlen);
        if (t == NULL)
            return -1;
        Py_SETREF(e->token, t);
    }
    e->cseq = (long long)cseq;
    e->bindings += bindings;
    e->aors += aors;
    e->size += blen;
    *d_bindings += bindings;
    *d_aors += aors;
    *d_size += blen;
    if (latest > e->latest || latest == 0.0) {
        if (latest > e->latest)
            e->latest = latest;
        /* pending.expiry_second: the ceiling, 0 for a removal, at most LAST_SECOND. */
        long long second = !(latest > 0.0) ? 0
                           : latest < LAST_SECOND ? (long long)ceil(latest) : (long long)LAST_SECOND;
        PyObject *key = PyLong_FromLongLong(second);
        if (key == NULL)
            return -1;
        PyObject *bucket = PyDict_GetItemWithError(expiry, key); /* borrowed */
        int rc = 0;
        if (bucket == NULL) {
            if (PyErr_Occurred() || (bucket = PyList_New(0)) == NULL) {
                Py_DECREF(key);
                return -1;
            }
            rc = PyDict_SetItem(expiry, key, bucket);
            Py_DECREF(bucket); /* the dict holds it */
            if (rc == 0) {
                PyObject *argv[2] = {seconds, key};
                PyObject *r = PyObject_Vectorcall(heappush, argv, 2, NULL);
                rc = r == NULL ? -1 : 0;
                Py_XDECREF(r);
            }
        }
        Py_DECREF(key);
        if (rc < 0 || PyList_Append(bucket, aor) < 0)
            return -1;
    }
    return 0;
}

static PyObject *absorb(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "absorb(pending, data, start, merges)");
        return NULL;
    }
    PyObject *pending = args[0], *data = args[1], *merges = args[3];
    if (!PyBytes_Check(data) || !PyList_Check(merges)) {
        PyErr_SetString(PyExc_TypeError, "absorb: data must be bytes, merges a list");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "absorb: negative start");
        return NULL;
    }
    PyObject *entries = PyObject_GetAttr(pending, s_entries);
    PyObject *held = PyObject_GetAttr(pending, s_held);
    PyObject *expiry = PyObject_GetAttr(pending, s_expiry);
    PyObject *seconds = PyObject_GetAttr(pending, s_seconds);
    long long d_bindings = 0, d_aors = 0, d_size = 0;
    int failed = 0;
    if (entries == NULL || held == NULL || expiry == NULL || seconds == NULL) {
        failed = 1;
        goto done;
    }
    if (!PyDict_Check(entries) || !PyDict_Check(expiry)) {
        PyErr_SetString(PyExc_TypeError, "absorb: pending._entries and _expiry must be dicts");
        failed = 1;
        goto done;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    while (start < end) {
        if (end - start < HEADER) {
            PyErr_SetString(PyExc_ValueError, "truncated record header");
            failed = 1;
            break;
        }
        const unsigned char *h = buf + start;
        Py_ssize_t alen = (h[0] << 8) | h[1], tlen = (h[2] << 8) | h[3];
        unsigned long cseq = be32(h + 4);
        long bindings = (long)(int32_t)be32(h + 8), aors = (long)(int32_t)be32(h + 12);
        double latest = be_double(h + 16);
        Py_ssize_t blen = (Py_ssize_t)be32(h + 24);
        start += HEADER;
        /* The slices as Python takes them: cut at the end of data. */
        Py_ssize_t a0 = start < end ? start : end, a1 = start + alen < end ? start + alen : end;
        start += alen;
        Py_ssize_t t0 = start < end ? start : end, t1 = start + tlen < end ? start + tlen : end;
        start += tlen;
        Py_ssize_t b0 = start < end ? start : end, b1 = start + blen < end ? start + blen : end;
        start += blen;
        PyObject *aor = PyUnicode_DecodeUTF8((const char *)buf + a0, a1 - a0, NULL);
        if (aor == NULL) {
            failed = 1;
            break;
        }
        if (b1 - b0 != blen) {
            Py_DECREF(aor);
            PyErr_SetString(PyExc_ValueError, "truncated record");
            failed = 1;
            break;
        }
        PyObject *body = PyBytes_FromStringAndSize((const char *)buf + b0, blen);
        int is_held = body ? PySequence_Contains(held, aor) : -1;
        int rc = -1;
        if (is_held == 1) {
            PyObject *pair = PyTuple_Pack(2, aor, body);
            rc = pair ? PyList_Append(merges, pair) : -1;
            Py_XDECREF(pair);
        } else if (is_held == 0) {
            rc = file(entries, expiry, seconds, aor, (const char *)buf + t0, t1 - t0, cseq,
                      bindings,
                      aors, latest, body, &d_bindings, &d_aors, &d_size);
        }
        Py_DECREF(aor);
        Py_XDECREF(body);
        if (rc < 0) {
            failed = 1;
            break;
        }
    }
done:
    if (entries != NULL && held != NULL && expiry != NULL) {
        /* What was filed counts, also when a later record failed (as in Python). */
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        if (add_to(pending, s_bindings, d_bindings) < 0 || add_to(pending, s_aors, d_aors) < 0 ||
            add_to(pending, s_size, d_size) < 0) {
            failed = 1;
            Py_XDECREF(exc_type);
            Py_XDECREF(exc_value);
            Py_XDECREF(exc_tb);
        } else {
            PyErr_Restore(exc_type, exc_value, exc_tb);
        }
    }
    Py_XDECREF(entries);
    Py_XDECREF(held);
    Py_XDECREF(expiry);
    Py_XDECREF(seconds);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* Copy n bytes of src into the ring at position *pos (wrapping), advance *pos. */
static void put(char *ring_base, Py_ssize_t ring, Py_ssize_t *pos, const char *src,
                Py_ssize_t n)
{
    Py_ssize_t first = ring - *pos < n ? ring - *pos : n;
    memcpy(ring_base + *pos, src, (size_t)first);
    if (first < n)
        memcpy(ring_base, src + first, (size_t)(n - first));
    *pos = (*pos + n) % ring;
}

/* write_record(map, head, ring, aor, token, cseq, bindings, aors, latest, body) -> new head:
 * journal.write_record_py in C (see there).  ``token``: bytes, or a (key, call_id) tuple of
 * str written as key, "\n", call_id in UTF-8 (a single binding's token, without building
 * it in Python: ~1,000 instructions less per REGISTER, callgrind). */
static PyObject *write_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "write_record(map, head, ring, aor, token, cseq, "
                                         "bindings, aors, latest, body)");
        return NULL;
    }
    unsigned long long head = PyLong_AsUnsignedLongLong(args[1]);
    Py_ssize_t ring = PyLong_AsSsize_t(args[2]);
    unsigned long long cseq = PyLong_AsUnsignedLongLong(args[5]);
    long long bindings = PyLong_AsLongLong(args[6]), aors = PyLong_AsLongLong(args[7]);
    double latest = PyFloat_AsDouble(args[8]);
    if (PyErr_Occurred())
        return NULL;
    /* The body: bytes, or the bytearray JournalWriter.append_new encodes into. */
    int body_bytes = PyBytes_Check(args[9]);
    PyObject *token = args[4];
    int token_pair = PyTuple_Check(token) && PyTuple_GET_SIZE(token) == 2 &&
                     PyUnicode_Check(PyTuple_GET_ITEM(token, 0)) &&
                     PyUnicode_Check(PyTuple_GET_ITEM(token, 1));
    if (!PyUnicode_Check(args[3]) || !(token_pair || PyBytes_Check(token)) ||
        !(body_bytes || PyByteArray_Check(args[9]))) {
        PyErr_SetString(PyExc_TypeError, "write_record: aor str, token bytes or (key, "
                                         "call_id) str pair, body bytes or bytearray");
        return NULL;
    }
    const char *body = body_bytes ? PyBytes_AS_STRING(args[9]) : PyByteArray_AS_STRING(args[9]);
    Py_ssize_t alen, tlen, klen = 0, clen = 0,
               blen = body_bytes ? PyBytes_GET_SIZE(args[9]) : PyByteArray_GET_SIZE(args[9]);
    const char *key = NULL, *call_id = NULL;
    if (token_pair) {
        key = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(token, 0), &klen);
        if (key == NULL)
            return NULL;
        call_id = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(token, 1), &clen);
        if (call_id == NULL)
            return NULL;
        tlen = klen + 1 + clen;
    } else {
        tlen = PyBytes_GET_SIZE(token);
    }
    const char *aor = PyUnicode_AsUTF8AndSize(args[3], &alen);
    if (aor == NULL)
        return NULL;
    /* The ranges struct.pack enforces for ">HHIiidI" (it raises struct.error). */
    if (alen > 0xFFFF || tlen > 0xFFFF || cseq > 0xFFFFFFFFULL || bindings < INT32_MIN ||
        bindings > INT32_MAX || aors < INT32_MIN || aors > INT32_MAX ||
        blen > (Py_ssize_t)0xFFFFFFFFLL || ring <= 0) {
        PyErr_SetString(PyExc_ValueError, "write_record: a field out of range");
        return NULL;
    }
    Py_ssize_t size = HEADER + alen + tlen + blen;
    if (size > ring) {
        PyErr_SetString(PyExc_ValueError, "records larger than the journal");
        return NULL;
    }
    unsigned char h[HEADER];
    unsigned long long bits;
    memcpy(&bits, &latest, sizeof bits);
    h[0] = (unsigned char)(alen >> 8); h[1] = (unsigned char)alen;
    h[2] = (unsigned char)(tlen >> 8); h[3] = (unsigned char)tlen;
    unsigned long fields[3] = {(unsigned long)cseq, (unsigned long)(uint32_t)(int32_t)bindings,
                               (unsigned long)(uint32_t)(int32_t)aors};
    for (int f = 0; f < 3; f++)
        for (int i = 0; i < 4; i++)
            h[4 + 4 * f + i] = (unsigned char)(fields[f] >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        h[16 + i] = (unsigned char)(bits >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        h[24 + i] = (unsigned char)((unsigned long long)blen >> (24 - 8 * i));
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (view.len < JOURNAL_HEADER + ring) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "write_record: map smaller than its ring");
        return NULL;
    }
    char *base = (char *)view.buf;
    Py_ssize_t pos = (Py_ssize_t)(head % (unsigned long long)ring);
    put(base + JOURNAL_HEADER, ring, &pos, (const char *)h, HEADER);
    put(base + JOURNAL_HEADER, ring, &pos, aor, alen);
    if (token_pair) {
        put(base + JOURNAL_HEADER, ring, &pos, key, klen);
        put(base + JOURNAL_HEADER, ring, &pos, "\n", 1);
        put(base + JOURNAL_HEADER, ring, &pos, call_id, clen);
    } else {
        put(base + JOURNAL_HEADER, ring, &pos, PyBytes_AS_STRING(token), tlen);
    }
    put(base + JOURNAL_HEADER, ring, &pos, body, blen);
    head += (unsigned long long)size;
    /* Publish: the records before the head (release: readers that load the head see them). */
    __atomic_store_n((unsigned long long *)(base + HEAD_AT), head, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(head);
}

static PyMethodDef methods[] = {
    {"absorb", (PyCFunction)(void (*)(void))absorb, METH_FASTCALL,
     "absorb(pending, data, start, merges): file data[start:]'s records (pending.absorb_py)."},
    {"write_record", (PyCFunction)(void (*)(void))write_record, METH_FASTCALL,
     "write_record(map, head, ring, aor, token, cseq, bindings, aors, latest, body) -> head: "
     "one record into a journal's ring, then its head (journal.write_record_py)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pending_speedups",
    "C fast path of signaling.registry.pending (see _pending_speedups.c).", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__pending_speedups(void)
{
    if (PyType_Ready(&EntryType) < 0)
        return NULL;
    if (heappush == NULL) {
        PyObject *heapq = PyImport_ImportModule("heapq");
        if (heapq == NULL)
            return NULL;
        heappush = PyObject_GetAttrString(heapq, "heappush");
        Py_DECREF(heapq);
        if (heappush == NULL)
            return NULL;
    }
    if (empty == NULL && (empty = PyBytes_FromStringAndSize(NULL, 0)) == NULL)
        return NULL;
    if (s_size == NULL) {
        if ((s_entries = PyUnicode_InternFromString("_entries")) == NULL ||
            (s_held = PyUnicode_InternFromString("_held")) == NULL ||
            (s_expiry = PyUnicode_InternFromString("_expiry")) == NULL ||
            (s_seconds = PyUnicode_InternFromString("_seconds")) == NULL ||
            (s_bindings = PyUnicode_InternFromString("bindings")) == NULL ||
            (s_aors = PyUnicode_InternFromString("aors")) == NULL ||
            (s_size = PyUnicode_InternFromString("size")) == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EntryType);
    if (PyModule_AddObject(m, "Entry", (PyObject *)&EntryType) < 0) {
        Py_DECREF(&EntryType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
