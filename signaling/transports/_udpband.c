/* The kernel shed's transaction hash, computed by the excess drain (issue 13).
 *
 * ``signaling/transports/udpshed.py`` drops the REGISTERs of a storm in the kernel by a hash
 * of their bytes (``transaction_hash``, a classic BPF program): every retransmission of a
 * dropped transaction is dropped too (RFC 3261 §17.1.2.2: the same request, byte for byte).
 * When the share comes down, those transactions are still retransmitting (Timer E, up to
 * Timer F, 32 s), and the next retransmission of each gets through.  Served, it was answered
 * 7.5-31.5 s after its first send (bench_overload, the injector at 2x-10x: P99 7.5-31.6 s),
 * a full REGISTER's work for an answer its client no longer counts.  For a while after the
 * share comes down the drain (``_udpexcess.c``) answers the REGISTERs in the band that was
 * dropped with its stateless 503 instead (``band`` in ``drain``), and this is the hash it
 * tells them by: the same function as the program's, so the same transactions.
 *
 * The program hashes the datagram's 32-bit words after ``REGISTER`` (octets 8 on, as many
 * whole words as it holds, at most ``WORDS``), in network byte order, the last one first,
 * each mixed into the salt (xor, times the golden ratio's multiplier, xor of the shift by
 * 15), then MurmurHash3's finaliser.  ``test_udpexcess`` holds this against the Python
 * reference for datagrams of every length.
 */

#include "_udpband.h"

#define WORDS 124 /* udpshed.WORDS */
#define MIX 0x9E3779B1u
#define FINAL_1 0x85EBCA6Bu
#define FINAL_2 0xC2B2AE35u

uint32_t
udpband_hash(const char *s, Py_ssize_t n, uint32_t salt)
{
    const unsigned char *p = (const unsigned char *)s;
    Py_ssize_t count = n < 8 ? 0 : (n - 8) / 4;
    if (count > WORDS) {
        count = WORDS;
    }
    uint32_t h = salt;
    for (Py_ssize_t j = count - 1; j >= 0; j--) {
        const unsigned char *w = p + 8 + 4 * j;
        uint32_t word = ((uint32_t)w[0] << 24) | ((uint32_t)w[1] << 16) |
                        ((uint32_t)w[2] << 8) | (uint32_t)w[3];
        uint32_t m = (h ^ word) * MIX;
        h = m ^ (m >> 15);
    }
    h ^= h >> 16;
    h *= FINAL_1;
    h ^= h >> 13;
    h *= FINAL_2;
    return h ^ (h >> 16);
}
