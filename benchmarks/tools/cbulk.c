/*
 * cbulk.c - a C bulk load generator: CONNS connections each keep writing SIZE-byte chunks of
 * random binary bytes (no exit line) and read the echo, for SECONDS seconds; prints the bytes
 * echoed. Non-blocking, one epoll loop, reads up to 256 KiB at a time. At most DEPTH chunks
 * unanswered per connection (like reflect-bench bulk --depth).
 *   usage: cbulk PORT CONNS SECONDS [SIZE=65536] [DEPTH=4]
 * Build: cc -O2 -o cbulk cbulk.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>

struct c { int fd; uint64_t sent, got; };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: cbulk PORT CONNS SECONDS [SIZE] [DEPTH]\n"); return 2; }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double secs = atof(argv[3]);
    size_t size = argc > 4 ? (size_t)atol(argv[4]) : 65536;
    uint64_t depth = argc > 5 ? (uint64_t)atol(argv[5]) : 4;
    unsigned char *pat = malloc(size);
    uint32_t x = 0x12345678;
    for (size_t i = 0; i < size; i++) { x = x * 1103515245 + 12345; pat[i] = (unsigned char)(x >> 16); if (pat[i] == 'e') pat[i] = 'E'; }
    static unsigned char rbuf[262144];
    struct c *cs = calloc(n, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
        int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int fl = 1; ioctl(fd, 0x5421 /* FIONBIO */, &fl);
        cs[i].fd = fd;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = i };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double end = now() + secs;
    struct epoll_event evs[64];
    uint64_t total = 0;
    while (now() < end) {
        int k = epoll_wait(ep, evs, 64, 100);
        for (int j = 0; j < k; j++) {
            struct c *c = &cs[evs[j].data.u32];
            if (evs[j].events & EPOLLIN) {
                ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                if (r == 0) { fprintf(stderr, "server closed\n"); return 1; }
                if (r > 0) { c->got += r; total += r; }
            }
            if ((evs[j].events & EPOLLOUT) && c->sent - c->got < depth * size) {
                size_t off = c->sent % size;
                ssize_t w = send(c->fd, pat + off, size - off, MSG_NOSIGNAL);
                if (w > 0) c->sent += w;
            }
            struct epoll_event ev = { .events = EPOLLIN | (c->sent - c->got < depth * size ? EPOLLOUT : 0), .data.u32 = evs[j].data.u32 };
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    printf("%llu\n", (unsigned long long)total);
    return 0;
}
