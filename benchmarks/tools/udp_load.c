/* UDP load for benchmarks/udp.sh: SOCKETS client sockets on 127.0.0.1, each connect()ed to the
 * server, SIZE-byte datagrams.
 *
 *   udp_load PORT SECONDS SOCKETS INFLIGHT SIZE [RATE [SEGMENTS]]
 *
 * RATE 0 (saturation): each socket keeps INFLIGHT datagrams outstanding, sending one for each
 * reply (closed loop); a socket that got no reply for 20 ms refills its window, so a lost
 * datagram does not stall it. RATE > 0: RATE datagrams per second in all, paced every
 * millisecond round-robin over the sockets, whatever comes back (open loop).
 * SEGMENTS > 1 (saturation only; INFLIGHT a multiple of it): GSO, each send is one sendmsg with a
 * UDP_SEGMENT cmsg carrying SEGMENTS datagrams of SIZE bytes, and a socket sends its next batch
 * when SEGMENTS replies came back (each reply is received as its own datagram; counts are
 * datagrams, not sendmsg calls).
 * Prints one line: sent=N received=M seconds=S
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

static int segments = 1, size_ = 0;
static char payload[65536];

/* One send: a datagram, or with SEGMENTS > 1 a GSO batch of SEGMENTS datagrams. Returns the
 * number of datagrams sent. */
static long send_one(int fd) {
    if (segments <= 1) return send(fd, payload, size_, 0) == size_ ? 1 : 0;
    unsigned short seg = (unsigned short)size_;
    char control[CMSG_SPACE(sizeof seg)];
    struct iovec iov = {.iov_base = payload, .iov_len = (size_t)size_ * segments};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof seg);
    memcpy(CMSG_DATA(c), &seg, sizeof seg);
    return sendmsg(fd, &m, 0) == (ssize_t)iov.iov_len ? segments : 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: udp_load PORT SECONDS SOCKETS INFLIGHT SIZE [RATE [SEGMENTS]]\n"); return 2; }
    int port = atoi(argv[1]), sockets = atoi(argv[3]), inflight = atoi(argv[4]), size = atoi(argv[5]);
    double seconds = atof(argv[2]);
    long rate = argc > 6 ? atol(argv[6]) : 0;
    segments = argc > 7 ? atoi(argv[7]) : 1;
    size_ = size;
    if (segments > 1 && (rate != 0 || inflight % segments != 0 || (long)size * segments > 65000)) {
        fprintf(stderr, "udp_load: SEGMENTS needs RATE 0, INFLIGHT a multiple of SEGMENTS, SIZE x SEGMENTS under 65,000\n");
        return 2;
    }
    int *fds = calloc(sockets, sizeof *fds);
    long *pending = calloc(sockets, sizeof *pending);
    double *last = calloc(sockets, sizeof *last);
    char buffer[65536];
    memset(payload, 'u', sizeof payload);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ep = epoll_create1(0);
    for (int i = 0; i < sockets; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int big = 4 << 20;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    long sent = 0, received = 0;
    double start = now(), end = start + seconds;
    if (rate == 0)
        for (int i = 0; i < sockets; i++) {
            for (int k = 0; k < inflight; k += segments) sent += send_one(fds[i]);
            last[i] = start;
        }
    double next_tick = start;
    long due = 0;
    int rr = 0;
    struct epoll_event events[256];
    while (now() < end) {
        int n = epoll_wait(ep, events, 256, 1);
        double t = now();
        for (int e = 0; e < n; e++) {
            int i = (int)events[e].data.u32;
            for (;;) {
                ssize_t got = recv(fds[i], buffer, sizeof buffer, 0);
                if (got < 0) break;
                received++;
                last[i] = t;
                if (rate == 0 && ++pending[i] >= segments) { sent += send_one(fds[i]); pending[i] = 0; }
            }
        }
        if (rate == 0) {
            for (int i = 0; i < sockets; i++)
                if (t - last[i] > 0.02) {
                    for (int k = 0; k < inflight; k += segments) sent += send_one(fds[i]);
                    pending[i] = 0;
                    last[i] = t;
                }
        } else {
            while (next_tick <= t) { due += rate / 1000; next_tick += 0.001; }
            while (due > 0) {
                sent += send_one(fds[rr]);
                rr = (rr + 1) % sockets;
                due--;
            }
        }
    }
    /* Late replies of what was sent in time. */
    double drain_end = now() + 0.2;
    while (now() < drain_end) {
        int n = epoll_wait(ep, events, 256, 10);
        for (int e = 0; e < n; e++) {
            int i = (int)events[e].data.u32;
            while (recv(fds[i], buffer, sizeof buffer, 0) >= 0) received++;
        }
    }
    printf("sent=%ld received=%ld seconds=%.3f\n", sent, received, seconds);
    return 0;
}
