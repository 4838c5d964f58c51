/*
 * loadgen: the least a closed-loop ping-pong load generator can do, in C, on one epoll loop:
 * the yardstick for reflect-bench's own cost (benchmarks/openloop.sh compares the two against
 * the same server).
 *
 *   loadgen PORT CONNECTIONS DEPTH SIZE SECONDS
 *
 * Connects CONNECTIONS sockets to 127.0.0.1:PORT (TCP_NODELAY), keeps DEPTH messages of SIZE
 * bytes in flight on each, and sends one more for every complete message echoed, for SECONDS
 * seconds. It checks nothing and times nothing, unlike reflect-bench (which compares every
 * echoed byte and records every message's latency in a histogram): the gap between the two is
 * what that costs. Prints one line: `messages N seconds S msgs_per_s R` on stdout. Exits 1 on
 * any error (a refused or reset connection, a short count of bytes).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Why 64 KiB: one read takes what a deep pipeline of small messages has echoed. */
#define READ_BUFFER (64 * 1024)
/* Why 256: events per epoll_wait, plenty for a few hundred connections. */
#define MAX_EVENTS 256

struct conn {
    int fd;
    long received; /* echoed bytes not yet a whole message */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            /* Small messages, DEPTH × SIZE in flight: the socket buffer holds them. */
            usleep(10);
            continue;
        }
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: loadgen PORT CONNECTIONS DEPTH SIZE SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), conns = atoi(argv[2]), depth = atoi(argv[3]), size = atoi(argv[4]);
    double seconds = atof(argv[5]);
    if (port <= 0 || conns <= 0 || depth <= 0 || size <= 0 || seconds <= 0) {
        fprintf(stderr, "loadgen: every argument must be positive\n");
        return 2;
    }
    char *message = malloc((size_t)size * depth);
    for (long i = 0; i < (long)size * depth; i++) message[i] = (char)('a' + i % 26);
    static char buffer[READ_BUFFER];
    struct conn *c = calloc((size_t)conns, sizeof *c);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);

    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("loadgen: connect");
            return 1;
        }
        c[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    for (int i = 0; i < conns; i++) {
        if (send_all(c[i].fd, message, (size_t)size * depth) != 0) {
            perror("loadgen: send");
            return 1;
        }
    }

    long messages = 0;
    double start = now_s(), end = start + seconds, t = start;
    struct epoll_event events[MAX_EVENTS];
    while (t < end) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 100);
        if (n < 0 && errno == EINTR) continue;
        for (int e = 0; e < n; e++) {
            struct conn *k = &c[events[e].data.u32];
            ssize_t got = recv(k->fd, buffer, sizeof buffer, 0);
            if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (got <= 0) {
                fprintf(stderr, "loadgen: connection closed or failed\n");
                return 1;
            }
            k->received += got;
            long whole = k->received / size;
            k->received -= whole * size;
            messages += whole;
            for (long m = whole; m > 0;) {
                long batch = m < depth ? m : depth;
                if (send_all(k->fd, message, (size_t)(batch * size)) != 0) {
                    perror("loadgen: send");
                    return 1;
                }
                m -= batch;
            }
        }
        t = now_s();
    }
    printf("messages %ld seconds %.3f msgs_per_s %.1f\n", messages, t - start, messages / (t - start));
    return 0;
}
