/* The model side of the C fast path of the SIP parser (see _speedups.c): the character
 * classes, the model classes (protocols/sip/message.py, uri.py) with the slot offsets of their
 * fields, building instances without running their Python __init__, and setup().
 */
#include "_speedups.h"

unsigned char cls_tab[256];

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

PyObject *s_sip, *s_sips, *s_sip20, *s_udp;

/* The model classes and the slot offsets of their fields, in the order of these names.
 * parser.py compares each list with dataclasses.fields() of the class. */
static const char *const uri_fields[] = {
    "scheme", "host", "user", "password", "port", "params", "headers", "raw", NULL};

static const char *const na_fields[] = {"uri", "display", "params", "raw", NULL};

static const char *const via_fields[] = {
    "transport", "host", "port", "params", "protocol", "raw", NULL};

static const char *const cseq_fields[] = {"seq", "method", NULL};

/* Message fields first, then the two of Request or Response. */
static const char *const req_fields[] = {
    "vias", "from_", "to", "call_id", "cseq", "max_forwards", "routes", "record_routes",
    "contacts", "contact_star", "expires", "require", "proxy_require", "content_type",
    "extra", "body", "wire", "method", "uri", NULL};
static const char *const resp_fields[] = {
    "vias", "from_", "to", "call_id", "cseq", "max_forwards", "routes", "record_routes",
    "contacts", "contact_star", "expires", "require", "proxy_require", "content_type",
    "extra", "body", "wire", "status", "reason", NULL};

ModelClass k_uri, k_na, k_via, k_cseq, k_req, k_resp;
int ready = 0;
Py_ssize_t max_message_size, max_headers, max_header_line, max_vias, max_uri_length;

/* A new instance with every field set from ``values`` (references stolen, all non-NULL). */
PyObject *
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

void
release(PyObject **values, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(values[i]);
    }
}

/* Fields still NULL become None, then the instance: what every value builder ends with. */
int
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

PyObject *
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

/* The character classes and the interned constants, once at import. */
int
init_model(void)
{
    init_classes();
    if ((s_sip = PyUnicode_InternFromString("sip")) == NULL ||
        (s_sips = PyUnicode_InternFromString("sips")) == NULL ||
        (s_sip20 = PyUnicode_InternFromString("SIP/2.0")) == NULL ||
        (s_udp = PyUnicode_InternFromString("UDP")) == NULL) {
        return -1;
    }
    return 0;
}

/* The module's FIELDS: each model class's field names in slot order, for parser.py's check. */
PyObject *
model_fields(void)
{
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N}",
                         "SipURI", names_tuple(uri_fields),
                         "NameAddr", names_tuple(na_fields),
                         "Via", names_tuple(via_fields),
                         "CSeq", names_tuple(cseq_fields),
                         "Request", names_tuple(req_fields),
                         "Response", names_tuple(resp_fields));
}
