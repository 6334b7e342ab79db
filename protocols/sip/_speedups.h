/* Declarations shared by the four files of the C fast path of the SIP parser:
 * _speedups.c (the message: header lines, start lines, framing; the module itself),
 * _speedups_values.c (header values: parameters, URIs, name-addrs, Via, CSeq, lists),
 * _speedups_model.c (character classes, the model classes and building their instances) and
 * _speedups_edit.c (a forwarded request spliced from the received bytes).
 * See _speedups.c for what the module is and is not.  The scanners that run per character
 * are static inline here, so splitting the files adds no call per character.
 */
#ifndef SIP_SPEEDUPS_H
#define SIP_SPEEDUPS_H

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

extern unsigned char cls_tab[256];

#define IS(c, bit) (cls_tab[(unsigned char)(c)] & (bit))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALNUM(c) \
    (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))

/* The longest prefix of [p, e) made of class ``bit`` characters. */
static inline const char *
run(const char *p, const char *e, unsigned char bit)
{
    while (p < e && IS(*p, bit)) {
        p++;
    }
    return p;
}

/* The same where a "%HH" escape also counts as one character (uri.py's unrolled runs: a "%"
 * not followed by two hex digits ends the run). */
static inline const char *
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
static inline int
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
static inline PyObject *
str_of(const char *p, const char *e)
{
    Py_ssize_t n = e - p;
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL && n > 0) {
        memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    }
    return s;
}

static inline PyObject *
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


/* Interned constants: values every message repeats (set by init_model). */
extern PyObject *s_sip, *s_sips, *s_sip20, *s_udp;

/* Slot indices of the model classes' fields, in the order of the name lists in
 * _speedups_model.c (parser.py compares those with dataclasses.fields()). */
enum { U_SCHEME, U_HOST, U_USER, U_PASSWORD, U_PORT, U_PARAMS, U_HEADERS, U_RAW, U_N };
enum { NA_URI, NA_DISPLAY, NA_PARAMS, NA_RAW, NA_N };
enum { V_TRANSPORT, V_HOST, V_PORT, V_PARAMS, V_PROTOCOL, V_RAW, V_N };
enum { CS_SEQ, CS_METHOD, CS_N };
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

extern ModelClass k_uri, k_na, k_via, k_cseq, k_req, k_resp;
extern int ready;  /* setup() has run */

/* Limits of parser.py, handed over by setup() so they are defined once. */
extern Py_ssize_t max_message_size, max_headers, max_header_line, max_vias, max_uri_length;

/* _speedups_model.c */
int init_model(void);
PyObject *model_fields(void);
PyObject *setup(PyObject *module, PyObject *args);
PyObject *build(ModelClass *k, PyObject **values);
void release(PyObject **values, Py_ssize_t n);
int build_into(ModelClass *k, PyObject **values, PyObject **out);

/* _speedups_values.c: each returns OK (parsed), BAIL (outside the subset) or ERR */
int any_sip_uri(const char *p, const char *e, int request_uri, PyObject **out);
int name_addr(const char *p, const char *e, PyObject **out);
int cseq(const char *p, const char *e, PyObject **out);
int tokens(const char *p, const char *e, PyObject **list);
const char *list_item_end(const char *p, const char *e);
int name_addrs(const char *p, const char *e, PyObject **list);
int via_values(const char *p, const char *e, PyObject **list, Py_ssize_t *count);

/* Where a relayed message's edited parts are in the received bytes (protocols/sip/edit.py
 * reads them by these indices, ``L_*`` there): offsets from the start of the data, -1 unknown
 * or absent.  A response needs its top Via; a forwarded request also its Request-URI,
 * Max-Forwards, first Route line, first Record-Route line and how many Route values it had. */
enum {
    L_HEAD_END,       /* the CRLFCRLF ending the header section */
    L_VIA_LINE,       /* the first Via line's start */
    L_VIA_VALUE,      /* its first value's start */
    L_VIA_ITEM_END,   /* that value's end */
    L_VIA_CUT_END,    /* the next value's start in that line, or past the line's CRLF */
    L_URI,            /* the Request-URI's start (requests) */
    L_URI_END,        /* its end */
    L_MF_VALUE,       /* the Max-Forwards value's start */
    L_MF_END,         /* its end */
    L_ROUTE_LINE,     /* the first Route line's start, then as the four L_VIA_* */
    L_ROUTE_VALUE,
    L_ROUTE_ITEM_END,
    L_ROUTE_CUT_END,
    L_RR_LINE,        /* the first Record-Route line's start */
    L_ROUTES,         /* the Route values in the message (not an offset) */
    L_MF_LINE,        /* the Max-Forwards line's start */
    L_N
};

/* _speedups_edit.c */
PyObject *forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
