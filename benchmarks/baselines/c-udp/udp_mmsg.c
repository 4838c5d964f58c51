/* The batched UDP echo: recvmmsg up to 32 datagrams (blocking for the first), sendmmsg them
 * all back. The practical limit of a one-core UDP echo for ordinary clients, for
 * benchmarks/udp.sh. No safety checks, like udp_naive.
 *
 *   udp_mmsg PORT [gro]   (binds 127.0.0.1:PORT; PORT 0 picks one; prints "listening on udp ...")
 *
 * With "gro": UDP_GRO on the socket, so a batch that a client sent with UDP_SEGMENT (GSO) arrives
 * as one buffer of several segments, with a UDP_GRO cmsg giving the segment size; it is echoed
 * back the same way, one sendmsg entry with a UDP_SEGMENT cmsg (the kernel splits it again).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define SLOT 65536
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int gro = argc > 2 && strcmp(argv[2], "gro") == 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1;
    if (gro && setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) != 0) { perror("UDP_GRO"); return 1; }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    printf("listening on udp 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    static char data[BATCH][SLOT];
    static struct sockaddr_storage from[BATCH];
    static struct iovec iov[BATCH], out_iov[BATCH];
    static struct mmsghdr in[BATCH], out[BATCH];
    static char in_control[BATCH][CMSG_SPACE(sizeof(int))];
    static char out_control[BATCH][CMSG_SPACE(sizeof(unsigned short))];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = data[i];
        iov[i].iov_len = SLOT;
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &from[i];
    }
    for (;;) {
        for (int i = 0; i < BATCH; i++) in[i].msg_hdr.msg_namelen = sizeof from[i];
        if (gro)
            for (int i = 0; i < BATCH; i++) {
                in[i].msg_hdr.msg_control = in_control[i];
                in[i].msg_hdr.msg_controllen = sizeof in_control[i];
            }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) {
            out_iov[i].iov_base = data[i];
            out_iov[i].iov_len = in[i].msg_len;
            memset(&out[i], 0, sizeof out[i]);
            out[i].msg_hdr.msg_iov = &out_iov[i];
            out[i].msg_hdr.msg_iovlen = 1;
            out[i].msg_hdr.msg_name = &from[i];
            out[i].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            if (!gro) continue;
            int segment = 0;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&in[i].msg_hdr); c; c = CMSG_NXTHDR(&in[i].msg_hdr, c))
                if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) memcpy(&segment, CMSG_DATA(c), sizeof segment);
            if (segment > 0 && in[i].msg_len > (unsigned)segment) {
                unsigned short size = (unsigned short)segment;
                out[i].msg_hdr.msg_control = out_control[i];
                out[i].msg_hdr.msg_controllen = sizeof out_control[i];
                struct cmsghdr *c = CMSG_FIRSTHDR(&out[i].msg_hdr);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof size);
                memcpy(CMSG_DATA(c), &size, sizeof size);
            }
        }
        int sent = 0;
        while (sent < n) {
            int m = sendmmsg(fd, out + sent, (unsigned)(n - sent), 0);
            if (m <= 0) break;
            sent += m;
        }
    }
}
