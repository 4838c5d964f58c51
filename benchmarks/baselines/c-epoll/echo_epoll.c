/*
 * echo_epoll.c - minimal but solid single-threaded epoll echo server.
 *
 * Baseline for reflectd's comparison benchmarks: the practical one-core
 * performance limit for a TCP echo server on Linux.
 *
 *   usage: echo_epoll [--port P]     (default 8887; also --port=P or a bare
 *                                     positional port; 0 = ephemeral port)
 *
 * Binds 0.0.0.0, prints exactly "listening on 0.0.0.0:PORT" (the real bound
 * port) to stderr, echoes every byte back unchanged, exits 0 on SIGTERM/SIGINT.
 *
 * Design:
 *  - one thread, level-triggered epoll, non-blocking sockets;
 *  - accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) in a loop until EAGAIN (with a
 *    reserve fd so EMFILE cannot make the level-triggered listener spin);
 *  - one shared 64 KiB read buffer; one read per readiness event, looping
 *    again only if the read filled the buffer (at most 4 reads per event);
 *  - data is written back immediately with send(MSG_NOSIGNAL); on a short
 *    write the remainder goes to a per-connection malloc'd pending buffer,
 *    EPOLLOUT is armed only while pending is non-empty, and EPOLLIN is
 *    removed while pending is above 64 KiB (back-pressure);
 *  - EOF: close once pending output is flushed; errors: close at once;
 *  - connection state lives in a flat array indexed by fd.
 *
 * TCP_NODELAY: set on the listening socket.  Linux copies the listener's
 * struct sock/tcp_sock into each accepted child (sk_clone_lock), so the
 * Nagle setting (tp->nonagle) is inherited by accepted sockets.  Verified on
 * this machine's kernel (6.18.x): getsockopt(TCP_NODELAY) on an accepted
 * socket returns 1 when only the listener had it set (see also
 * nodelay_probe.c).  To stay correct on any kernel, the first accepted socket
 * is checked with getsockopt; if it did NOT inherit the option, the server
 * falls back to setting TCP_NODELAY on every accepted socket.
 *
 * Build: cc -O2 -o echo_epoll echo_epoll.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF_SIZE   (64 * 1024)
#define MAX_READS       4
#define PENDING_HIGH    (64 * 1024)   /* stop reading above this much pending */
#define MAX_EVENTS      256
#define PENDING_KEEP    (1024 * 1024) /* free pending buffers larger than this once drained */

struct conn {
    char    *pend;      /* pending output buffer (malloc'd), or NULL */
    size_t   pcap;      /* capacity of pend */
    size_t   poff;      /* offset of first unsent byte */
    size_t   plen;      /* number of unsent bytes (from poff) */
    uint32_t events;    /* currently registered epoll events */
    uint8_t  open;
    uint8_t  eof;       /* peer sent FIN: close after pending is flushed */
};

static struct conn *conns;
static size_t nconns;
static int epfd = -1;
static int reserve_fd = -1;
static char rbuf[READ_BUF_SIZE];
static volatile sig_atomic_t stop_requested;
static int nodelay_checked;     /* first accepted socket inspected? */
static int nodelay_per_conn;    /* listener's TCP_NODELAY not inherited: set per socket */

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static int parse_port(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "echo_epoll: invalid port '%s'\n", s);
        exit(2);
    }
    return (int)v;
}

static void usage(FILE *f, int code)
{
    fprintf(f, "usage: echo_epoll [--port P]   (default 8887, 0 = ephemeral)\n");
    exit(code);
}

static struct conn *conn_get(int fd)
{
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct conn *c = realloc(conns, n * sizeof *c);
        if (!c)
            return NULL;
        memset(c + nconns, 0, (n - nconns) * sizeof *c);
        conns = c;
        nconns = n;
    }
    return &conns[fd];
}

static void conn_close(int fd)
{
    struct conn *c = &conns[fd];
    free(c->pend);
    memset(c, 0, sizeof *c);
    close(fd); /* also removes fd from the epoll set */
}

/* Register the events this connection currently wants. Returns -1 on error. */
static int conn_update_events(int fd, struct conn *c)
{
    uint32_t want = 0;
    if (!c->eof && c->plen <= PENDING_HIGH)
        want |= EPOLLIN;
    if (c->plen > 0)
        want |= EPOLLOUT;
    if (want == c->events)
        return 0;
    struct epoll_event ev = { .events = want, .data.fd = fd };
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return -1;
    c->events = want;
    return 0;
}

/* Append bytes to the pending buffer. Returns -1 on allocation failure. */
static int pend_append(struct conn *c, const char *p, size_t n)
{
    if (c->poff > 0 && c->poff + c->plen + n > c->pcap) {
        memmove(c->pend, c->pend + c->poff, c->plen);
        c->poff = 0;
    }
    if (c->poff + c->plen + n > c->pcap) {
        size_t cap = c->pcap ? c->pcap : 16 * 1024;
        while (cap < c->plen + n)
            cap *= 2;
        char *nb = realloc(c->pend, cap);
        if (!nb)
            return -1;
        c->pend = nb;
        c->pcap = cap;
    }
    memcpy(c->pend + c->poff + c->plen, p, n);
    c->plen += n;
    return 0;
}

/* Try to flush pending output. Returns -1 if the connection must be closed. */
static int pend_flush(int fd, struct conn *c)
{
    while (c->plen > 0) {
        ssize_t w = send(fd, c->pend + c->poff, c->plen, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->poff += (size_t)w;
        c->plen -= (size_t)w;
        if (c->plen > 0)
            break; /* short write: socket buffer full, wait for EPOLLOUT */
    }
    if (c->plen == 0) {
        c->poff = 0;
        if (c->pcap > PENDING_KEEP) {
            free(c->pend);
            c->pend = NULL;
            c->pcap = 0;
        }
    }
    return 0;
}

/* Echo n bytes from rbuf: send directly if nothing is pending, else queue. */
static int echo_out(int fd, struct conn *c, size_t n)
{
    size_t off = 0;
    if (c->plen == 0) {
        while (off < n) {
            ssize_t w = send(fd, rbuf + off, n - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return -1;
            }
            off += (size_t)w;
            if (off < n)
                break; /* short write: socket buffer full, queue the rest */
        }
    }
    if (off < n && pend_append(c, rbuf + off, n - off) < 0)
        return -1;
    return 0;
}

static void handle_readable(int fd, struct conn *c)
{
    for (int i = 0; i < MAX_READS; i++) {
        ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
        if (r > 0) {
            if (echo_out(fd, c, (size_t)r) < 0) {
                conn_close(fd);
                return;
            }
            if ((size_t)r < sizeof rbuf || c->plen > PENDING_HIGH)
                break;
            continue;
        }
        if (r == 0) {
            c->eof = 1;
            break;
        }
        if (errno == EINTR) {
            i--;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        conn_close(fd);
        return;
    }
    if (c->eof && c->plen == 0) {
        conn_close(fd);
        return;
    }
    if (conn_update_events(fd, c) < 0)
        conn_close(fd);
}

static void handle_writable(int fd, struct conn *c)
{
    if (pend_flush(fd, c) < 0 || (c->eof && c->plen == 0)) {
        conn_close(fd);
        return;
    }
    if (conn_update_events(fd, c) < 0)
        conn_close(fd);
}

static void handle_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && reserve_fd >= 0) {
                /* Out of fds: accept and drop one pending connection so the
                 * level-triggered listener does not spin. */
                close(reserve_fd);
                int tmp = accept(lfd, NULL, NULL);
                if (tmp >= 0)
                    close(tmp);
                reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                continue;
            }
            /* EAGAIN: drained. Anything else: give up for this round. */
            return;
        }
        if (!nodelay_checked) {
            int v = 0;
            socklen_t len = sizeof v;
            nodelay_checked = 1;
            if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) < 0 || v == 0)
                nodelay_per_conn = 1;
        }
        if (nodelay_per_conn) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct conn *c = conn_get(fd);
        if (!c) {
            close(fd);
            continue;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        memset(c, 0, sizeof *c);
        c->open = 1;
        c->events = EPOLLIN;
    }
}

int main(int argc, char **argv)
{
    int port = 8887;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--port") || !strcmp(a, "-p")) {
            if (++i >= argc)
                usage(stderr, 2);
            port = parse_port(argv[i]);
        } else if (!strncmp(a, "--port=", 7)) {
            port = parse_port(a + 7);
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, 0);
        } else if (a[0] != '-') {
            port = parse_port(a);
        } else {
            fprintf(stderr, "echo_epoll: unknown option '%s'\n", a);
            usage(stderr, 2);
        }
    }

    /* Signals stay blocked except atomically inside epoll_pwait, so a
     * SIGTERM/SIGINT can never be lost between the flag check and the wait. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        perror("echo_epoll: socket");
        return 1;
    }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* inherited by accepted sockets */

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((uint16_t)port);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "echo_epoll: bind 0.0.0.0:%d: %s\n", port, strerror(errno));
        return 1;
    }
    if (listen(lfd, SOMAXCONN) < 0) {
        perror("echo_epoll: listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("echo_epoll: getsockname");
        return 1;
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("echo_epoll: epoll_create1");
        return 1;
    }
    struct epoll_event lev = { .events = EPOLLIN, .data.fd = lfd };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("echo_epoll: epoll_ctl");
        return 1;
    }
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    fprintf(stderr, "listening on 0.0.0.0:%d\n", ntohs(addr.sin_port));
    fflush(stderr);

    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int n = epoll_pwait(epfd, events, MAX_EVENTS, -1, &waitmask);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo_epoll: epoll_pwait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            uint32_t e = events[i].events;
            if (fd == lfd) {
                handle_accept(lfd);
                continue;
            }
            struct conn *c = &conns[fd];
            if (!c->open)
                continue; /* closed earlier in this batch */
            if (e & (EPOLLERR | EPOLLHUP)) {
                conn_close(fd);
                continue;
            }
            if (e & EPOLLOUT) {
                handle_writable(fd, c);
                if (!c->open)
                    continue;
            }
            if (e & EPOLLIN)
                handle_readable(fd, c);
        }
    }

    for (size_t fd = 0; fd < nconns; fd++)
        if (conns[fd].open)
            conn_close((int)fd);
    free(conns);
    close(lfd);
    close(epfd);
    if (reserve_fd >= 0)
        close(reserve_fd);
    return 0;
}
