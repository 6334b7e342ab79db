/* The listening UDP socket read in batches (recvmmsg), for the excess drain
 * (``_udpexcess.c``) and the ordinary read (``receive``, ``UdpTransport._read``): each
 * datagram with its sender and how long it waited in the kernel (SO_TIMESTAMPNS), and the
 * socket's drop count (SO_RXQ_OVFL).  Apart from the drain so that each file stays readable;
 * one extension (``signaling.transports._udpexcess``).
 *
 * Memory safety: a datagram is read into a buffer of the largest UDP payload; addresses are
 * formatted into buffers of INET6_ADDRSTRLEN.
 */

#define _GNU_SOURCE
#include "_udprecv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

char bufs[BATCH][DGRAM];
static char controls[BATCH][CMSG_BYTES];

/* One recvmmsg of up to ``want`` datagrams: payloads into ``bufs``, senders into ``names``,
 * ancillary data (the kernel's arrival timestamps, the overflow count) into ``controls``.
 * Shared by the drain and the ordinary read; its result is recvmmsg's. */
struct mmsghdr msgs[BATCH];
static struct iovec iov[BATCH];
struct sockaddr_storage names[BATCH];

int
read_batch(int fd, int want)
{
    for (int i = 0; i < want; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = DGRAM;
        memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(names[i]);
        msgs[i].msg_hdr.msg_control = controls[i];
        msgs[i].msg_hdr.msg_controllen = CMSG_BYTES;
    }
    return recvmmsg(fd, msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
}

/* Seconds datagram ``h`` waited in the kernel before ``now`` (its SO_TIMESTAMPNS; 0 without
 * one), and the socket's drop count (SO_RXQ_OVFL) into ``ovfl`` when the datagram carries it. */
double
arrival(struct msghdr *h, const struct timespec *now, unsigned long *ovfl, int *have_ovfl)
{
    double waited = 0.0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level != SOL_SOCKET) {
            continue;
        }
        if (c->cmsg_type == SO_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            waited = (double)(now->tv_sec - ts.tv_sec) +
                     (double)(now->tv_nsec - ts.tv_nsec) * 1e-9;
        } else if (c->cmsg_type == SO_RXQ_OVFL) {
            uint32_t v;
            memcpy(&v, CMSG_DATA(c), sizeof v);
            *ovfl = v;
            *have_ovfl = 1;
        }
    }
    return waited;
}

void
ip_port(const struct sockaddr_storage *ss, char *ip, size_t iplen, int *port)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)iplen);
        *port = ntohs(a->sin6_port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)iplen);
        *port = ntohs(a->sin_port);
    }
}

/* The address as the socket module gives it: (host, port), or (host, port, flowinfo,
 * scope_id) for IPv6. */
PyObject *
address(const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN];
    int port;
    ip_port(ss, ip, sizeof ip, &port);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        return Py_BuildValue("(siIk)", ip, port, (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned long)a->sin6_scope_id);
    }
    return Py_BuildValue("(si)", ip, port);
}

/* The socket's queue, up to ``most`` datagrams, each appended to ``got`` as (data, address,
 * seconds it waited in the kernel): the ordinary read, ``UdpTransport._read``.  One recvmmsg
 * per 64 datagrams, and a batch shorter than asked says the queue is empty: a read loop of
 * recvmsg in Python pays a system call and a raised BlockingIOError for that at every wakeup
 * (at a call's six wakeups a third of the server's reading, callgrind), and unpacks each
 * datagram's timestamp in Python.  Returns (read, payload octets, longest wait, shortest wait
 * or -1 when nothing was read, the kernel's drop count or None, datagrams lost to socket
 * errors such as a reported ICMP error). */
PyObject *
udprecv_receive(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "receive(fd, most, got: list)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    long most = PyLong_AsLong(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *got_list = args[2];
    long read = 0, payload = 0, errors = 0;
    unsigned long ovfl = 0;
    int have_ovfl = 0;
    double max_wait = 0.0, min_wait = -1.0;
    while (read + errors < most) {
        long left = most - read - errors;
        int want = (int)(left < BATCH ? left : BATCH);
        int got = read_batch((int)fd, want);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            errors++; /* an ICMP error reported on the socket: the datagram is lost */
            continue;
        }
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        for (int i = 0; i < got; i++) {
            double waited = arrival(&msgs[i].msg_hdr, &now, &ovfl, &have_ovfl);
            Py_ssize_t n = (Py_ssize_t)msgs[i].msg_len;
            payload += (long)n;
            if (waited > max_wait) {
                max_wait = waited;
            }
            if (min_wait < 0 || waited < min_wait) {
                min_wait = waited;
            }
            if (append_datagram(got_list, bufs[i], n, &names[i], waited) < 0) {
                return NULL;
            }
        }
        read += got;
        if (got < want) {
            break; /* the queue is empty */
        }
    }
    return Py_BuildValue("(llddNl)", read, payload, max_wait, min_wait,
                         have_ovfl ? PyLong_FromUnsignedLong(ovfl) : Py_NewRef(Py_None), errors);
}
