/*
 * echo_fork.c - the classic teaching echo server: fork() per client.
 *
 * Baseline for reflectd's comparison benchmarks (the "naive" end of the
 * scale: one process per connection, blocking I/O).
 *
 *   usage: echo_fork [--port P]      (default 8887; also --port=P or a bare
 *                                     positional port; 0 = ephemeral port)
 *
 * Binds 0.0.0.0 with SO_REUSEADDR, prints exactly "listening on 0.0.0.0:PORT"
 * (the real bound port) to stderr, then runs a blocking accept() loop and
 * fork()s a child per client.  The child echoes every byte back unchanged
 * (recv/send loop) until recv() returns 0 (EOF) or an error, or until the
 * client sends a line that is exactly "exit" ("exit\n" or "exit\r\n"): the
 * bytes before that line are echoed, the "exit" line itself is not, anything
 * after it is discarded and the connection is closed.  (Detection is
 * streaming and never holds bytes back, so if the "exit" line is split over
 * two recv()s, its first part has already been echoed.)
 *
 * Children are reaped by a SIGCHLD handler running a waitpid(WNOHANG) loop,
 * which also keeps a table of live child pids.  On SIGTERM/SIGINT the parent
 * stops accepting, sends SIGTERM to every live child (their open connections
 * are closed), waits for all of them, and exits 0, so nothing lingers (not
 * even zombies under a pid 1 that does not reap orphans).  As a backstop,
 * each child also asks for SIGTERM via PR_SET_PDEATHSIG if the parent dies
 * without cleaning up (e.g. SIGKILL).
 *
 * Build: cc -O2 -o echo_fork echo_fork.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)

static volatile sig_atomic_t stop_requested;
static volatile int listen_fd = -1;

/* Set the flag and close the listener: if the signal lands just before the
 * blocking accept() is entered, accept() then fails with EBADF instead of
 * sleeping forever; if it lands inside accept(), accept() fails with EINTR
 * (no SA_RESTART).  Either way the loop sees stop_requested. */
/* Live children; modified by the main loop only with SIGCHLD blocked, and by
 * the SIGCHLD handler (which removes reaped pids). */
static pid_t *kids;
static size_t nkids, capkids;

static void on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    pid_t p;
    while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
        for (size_t i = 0; i < nkids; i++) {
            if (kids[i] == p) {
                kids[i] = kids[--nkids];
                break;
            }
        }
    }
    errno = saved;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    if (listen_fd >= 0) {
        close(listen_fd);
        listen_fd = -1;
    }
}

static int parse_port(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "echo_fork: invalid port '%s'\n", s);
        exit(2);
    }
    return (int)v;
}

static void usage(FILE *f, int code)
{
    fprintf(f, "usage: echo_fork [--port P]   (default 8887, 0 = ephemeral)\n");
    exit(code);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void serve_client(int fd)
{
    static char buf[BUF_SIZE];
    /* cand: how many bytes of the current line matched "exit" (5 = "exit\r"),
     * or -1 once the current line cannot be "exit".  0 = at a line start. */
    int cand = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (n == 0)
            break;
        size_t line_start = 0; /* start of the current line within buf */
        for (ssize_t i = 0; i < n; i++) {
            char b = buf[i];
            if (cand >= 0) {
                if (b == '\n' && (cand == 4 || cand == 5)) {
                    send_all(fd, buf, line_start); /* echo what preceded "exit" */
                    return;
                }
                if (cand < 4 && b == "exit"[cand])
                    cand++;
                else if (cand == 4 && b == '\r')
                    cand++;
                else
                    cand = -1;
            }
            if (b == '\n') {
                cand = 0;
                line_start = (size_t)i + 1;
            }
        }
        if (send_all(fd, buf, (size_t)n) < 0)
            break;
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
            fprintf(stderr, "echo_fork: unknown option '%s'\n", a);
            usage(stderr, 2);
        }
    }

    /* Reap children as they exit (SA_RESTART: accept() just resumes). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t chld, forkmask, oldmask;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    forkmask = chld;
    sigaddset(&forkmask, SIGTERM);
    sigaddset(&forkmask, SIGINT);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        perror("echo_fork: socket");
        return 1;
    }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((uint16_t)port);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "echo_fork: bind 0.0.0.0:%d: %s\n", port, strerror(errno));
        return 1;
    }
    if (listen(lfd, SOMAXCONN) < 0) {
        perror("echo_fork: listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("echo_fork: getsockname");
        return 1;
    }

    listen_fd = lfd;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: accept() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    fprintf(stderr, "listening on 0.0.0.0:%d\n", ntohs(addr.sin_port));
    fflush(stderr);

    pid_t parent = getpid();
    while (!stop_requested) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (stop_requested)
                break;
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
                errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                continue;
            perror("echo_fork: accept");
            return 1;
        }
        /* Block SIGCHLD so a fast-exiting child cannot be reaped before its
         * pid is in the table, and SIGTERM/SIGINT so the child cannot run the
         * parent's handler before it has restored the default actions. */
        sigprocmask(SIG_BLOCK, &forkmask, &oldmask);
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGCHLD, SIG_DFL);
            sigprocmask(SIG_SETMASK, &oldmask, NULL);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) /* parent already gone */
                _exit(0);
            close(lfd);
            serve_client(cfd);
            close(cfd);
            _exit(0);
        }
        if (pid < 0) {
            perror("echo_fork: fork");
        } else {
            if (nkids == capkids) {
                size_t cap = capkids ? capkids * 2 : 64;
                pid_t *nk = realloc(kids, cap * sizeof *nk);
                if (nk) {
                    kids = nk;
                    capkids = cap;
                }
            }
            if (nkids < capkids) /* (if realloc failed: still reaped, just not tracked) */
                kids[nkids++] = pid;
        }
        sigprocmask(SIG_SETMASK, &oldmask, NULL);
        close(cfd);
    }
    if (listen_fd >= 0)
        close(listen_fd);

    /* Shut down: terminate every live child and wait for all of them.
     * A pid still in the table has not been reaped, so it cannot have been
     * reused by an unrelated process. */
    sigprocmask(SIG_BLOCK, &chld, NULL);
    for (size_t i = 0; i < nkids; i++)
        kill(kids[i], SIGTERM);
    for (size_t i = 0; i < nkids; i++)
        while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    free(kids);
    return 0;
}
