/* The listening UDP socket read in batches: shared by the drain and the ordinary read
 * (see _udprecv.c). */
#ifndef SIGNALING_UDPRECV_H
#define SIGNALING_UDPRECV_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define DGRAM 65536
#define CMSG_BYTES 128

/* What the last ``read_batch`` read: payloads, their headers (lengths), senders. */
extern char bufs[BATCH][DGRAM];
extern struct mmsghdr msgs[BATCH];
extern struct sockaddr_storage names[BATCH];

int read_batch(int fd, int want);
double arrival(struct msghdr *h, const struct timespec *now, unsigned long *ovfl,
               int *have_ovfl);
void ip_port(const struct sockaddr_storage *ss, char *ip, size_t iplen, int *port);
PyObject *address(const struct sockaddr_storage *ss);
PyObject *udprecv_receive(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* One datagram appended to ``list`` as (data, address, seconds it waited in the kernel): the
 * item both readers hand to ``UdpTransport`` (the ordinary read's ``got``, the drain's
 * ``passed``).  0, or -1 with a Python exception set.  "N" hands the two new references to
 * the tuple, which releases them itself if it cannot be built; only a failed ``data`` leaves
 * ``addr`` to release here. */
static inline int
append_datagram(PyObject *list, const char *buf, Py_ssize_t n,
                const struct sockaddr_storage *ss, double waited)
{
    PyObject *addr = address(ss);
    if (addr == NULL) {
        return -1;
    }
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL) {
        Py_DECREF(addr);
        return -1;
    }
    PyObject *item = Py_BuildValue("(NNd)", data, addr, waited);
    if (item == NULL) {
        return -1;
    }
    int err = PyList_Append(list, item);
    Py_DECREF(item);
    return err;
}

#endif
