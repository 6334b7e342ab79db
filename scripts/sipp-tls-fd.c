/* Preloaded into Debian trixie's SIPp by the wrapper scripts/sipp-tls.sh writes (test use only).
 *
 * Why: that SIPp (3.7.3) is built against wolfSSL.  It hands each TLS connection its socket
 * through a socket BIO (SSL_set_bio), then, before every send, asks SSL_get_fd for the socket to
 * make it non-blocking; wolfSSL answers -1 for a connection whose I/O is a BIO, and SIPp gives up
 * on the send.  So the handshake completes but no SIP message is ever written (SIPp's error file:
 * "Unable to send TLS message", no write on the socket under strace).  This answers
 * wolfSSL_get_fd from the connection's read BIO when wolfSSL itself has no descriptor; nothing
 * else changes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct WOLFSSL WOLFSSL;
typedef struct WOLFSSL_BIO WOLFSSL_BIO;

typedef int get_fd_fn(const WOLFSSL *);
typedef WOLFSSL_BIO *get_rbio_fn(const WOLFSSL *);
typedef long bio_get_fd_fn(const WOLFSSL_BIO *, int *);

int wolfSSL_get_fd(const WOLFSSL *ssl)
{
    get_fd_fn *real = (get_fd_fn *)dlsym(RTLD_NEXT, "wolfSSL_get_fd");
    get_rbio_fn *rbio = (get_rbio_fn *)dlsym(RTLD_NEXT, "wolfSSL_SSL_get_rbio");
    bio_get_fd_fn *bio_fd = (bio_get_fd_fn *)dlsym(RTLD_NEXT, "wolfSSL_BIO_get_fd");
    int fd = real != NULL ? real(ssl) : -1;
    if (fd != -1 || rbio == NULL || bio_fd == NULL) {
        return fd;
    }
    WOLFSSL_BIO *bio = rbio(ssl);
    return bio != NULL ? (int)bio_fd(bio, NULL) : -1;
}
