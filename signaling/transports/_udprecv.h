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

#endif
