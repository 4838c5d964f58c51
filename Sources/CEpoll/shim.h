// Shims for the Linux calls that `import Glibc` does not expose to Swift.
// A system-library target compiles no .c files, so everything here is `static inline`.
#ifndef CEPOLL_SHIM_H
#define CEPOLL_SHIM_H

// No _GNU_SOURCE here, although accept4 is a GNU extension: with it, glibc headers define
// some types differently (fd_set, __rusage_who) from the SwiftGlibc module that Swift files also
// import, and the two modules then fail to build together. accept4 is declared by hand below.

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

// accept4's `struct sockaddr *` is a transparent union in glibc, which does not import.
static inline int cepoll_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

/* The hot-path system calls, made with syscall(2) instead of glibc's read, send and epoll_wait.
 * Those three are cancellation points: in a process with more than one thread (a second
 * reactor, the log writer) glibc wraps each in __pthread_enable_asynccancel/disable_asynccancel,
 * about 75 user-space instructions per echoed message (callgrind, 2026-12-01). The reactor never
 * cancels threads, so it needs none of that. syscall(2) sets errno like the wrappers. */
static inline long cepoll_sys_read(int fd, void *buf, size_t count) {
    return syscall(SYS_read, fd, buf, count);
}
static inline long cepoll_sys_send(int fd, const void *buf, size_t count, int flags) {
    return syscall(SYS_sendto, fd, buf, count, flags, (void *)0, 0);
}
static inline int cepoll_sys_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    return (int)syscall(SYS_epoll_wait, epfd, events, maxevents, timeout);
}

/* The same three calls as the kernel returns them: the result, or -errno (-4095...-1). No errno
 * is read or written, so the Swift wrappers that use these may be inlined into the loop (ARC
 * traffic between the call and an errno read cannot happen: there is none). On x86-64 the
 * `syscall` instruction is issued here, inline: glibc's syscall(2) costs about 11 user-space
 * instructions per call plus an errno store on failure (callgrind, 2026-12-07: 23 instructions
 * of 454 per echoed message). Elsewhere syscall(2) is used and errno turned into -errno. */
#if defined(__x86_64__)
static inline long cepoll_raw_syscall3(long number, long a, long b, long c) {
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(number), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}
static inline long cepoll_raw_syscall4(long number, long a, long b, long c, long d) {
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
}
static inline long cepoll_raw_read(int fd, void *buf, size_t count) {
    return cepoll_raw_syscall3(SYS_read, fd, (long)buf, (long)count);
}
/* sendto with no address is send(2); r8 and r9 (address, length) are ignored by the kernel when
 * the address is null, but set them anyway: no stale register reaches the kernel. */
static inline long cepoll_raw_send(int fd, const void *buf, size_t count, int flags) {
    long ret;
    register long r10 __asm__("r10") = flags;
    register long r8 __asm__("r8") = 0;
    register long r9 __asm__("r9") = 0;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"((long)SYS_sendto), "D"((long)fd), "S"((long)buf), "d"((long)count),
                      "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return ret;
}
static inline long cepoll_raw_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    return cepoll_raw_syscall4(SYS_epoll_wait, epfd, (long)events, maxevents, timeout);
}
/* accept4 is a cancellation point too: glibc's wrapper cost 146 user instructions per accepted
 * connection (accept4 + enable/disable_asynccancel, callgrind 2026-12-07). */
static inline long cepoll_raw_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return cepoll_raw_syscall4(SYS_accept4, fd, (long)addr, (long)len, flags);
}
/* close is a cancellation point as well: glibc's wrapper cost about 50 user instructions per
 * closed connection (close + enable/disable_asynccancel, callgrind 2026-12-07). */
static inline long cepoll_raw_close(int fd) {
    return cepoll_raw_syscall3(SYS_close, fd, 0, 0);
}
#else
static inline long cepoll_raw_result(long r) { return r < 0 ? -(long)errno : r; }
static inline long cepoll_raw_read(int fd, void *buf, size_t count) {
    return cepoll_raw_result(syscall(SYS_read, fd, buf, count));
}
static inline long cepoll_raw_send(int fd, const void *buf, size_t count, int flags) {
    return cepoll_raw_result(syscall(SYS_sendto, fd, buf, count, flags, (void *)0, 0));
}
static inline long cepoll_raw_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    return cepoll_raw_result(syscall(SYS_epoll_wait, epfd, events, maxevents, timeout));
}
static inline long cepoll_raw_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return cepoll_raw_result(syscall(SYS_accept4, fd, addr, len, flags));
}
static inline long cepoll_raw_close(int fd) {
    return cepoll_raw_result(syscall(SYS_close, fd));
}
#endif

/* Kernel echo (KernelEcho.swift): splice(2) between a socket and a pipe, with no offsets, and
 * the pipe. Both are GNU extensions that glibc declares only under _GNU_SOURCE (see the top),
 * so they are made with syscall(2), result or -errno like the calls above; the flags are the
 * kernel's values (SPLICE_F_MOVE 1, SPLICE_F_NONBLOCK 2; O_NONBLOCK and O_CLOEXEC for pipe2,
 * F_SETPIPE_SZ 1031). Bulk streams only: the extra instructions of syscall(2) do not matter. */
static inline long cepoll_raw_splice(int fd_in, int fd_out, size_t length) {
    long r = syscall(SYS_splice, fd_in, (void *)0, fd_out, (void *)0, length, 1 | 2);
    return r < 0 ? -(long)errno : r;
}
static inline long cepoll_raw_pipe(int fds[2]) {
    long r = syscall(SYS_pipe2, fds, O_NONBLOCK | O_CLOEXEC);
    return r < 0 ? -(long)errno : r;
}
static inline long cepoll_set_pipe_size(int fd, int size) {
    long r = fcntl(fd, 1031, size);
    return r < 0 ? -(long)errno : r;
}
/* 1 when SIGPIPE is ignored in this process: splice(2) to a socket has no MSG_NOSIGNAL, so a
 * reset peer would raise SIGPIPE. */
static inline int cepoll_sigpipe_ignored(void) {
    struct sigaction current;
    if (sigaction(SIGPIPE, (void *)0, &current) != 0) return 0;
    return current.sa_handler == SIG_IGN;
}

static inline int cepoll_errno(void) { return errno; }
static inline void cepoll_set_errno(int value) { errno = value; }

// epoll_event is packed on x86_64; these keep Swift away from its field offsets.
static inline uint64_t cepoll_event_data(const struct epoll_event *event) { return event->data.u64; }
static inline uint32_t cepoll_event_mask(const struct epoll_event *event) { return event->events; }
static inline void cepoll_event_set(struct epoll_event *event, uint32_t mask, uint64_t data) {
    event->events = mask;
    event->data.u64 = data;
}

static const uint32_t CEPOLL_IN = EPOLLIN;
static const uint32_t CEPOLL_OUT = EPOLLOUT;
static const uint32_t CEPOLL_ERR = EPOLLERR;
static const uint32_t CEPOLL_HUP = EPOLLHUP;
static const uint32_t CEPOLL_RDHUP = EPOLLRDHUP;

static const int CEPOLL_SOCK_NONBLOCK = SOCK_NONBLOCK;
static const int CEPOLL_SOCK_CLOEXEC = SOCK_CLOEXEC;
static const int CEPOLL_SOCK_STREAM = SOCK_STREAM;
static const int CEPOLL_EFD_NONBLOCK = EFD_NONBLOCK;
static const int CEPOLL_EFD_CLOEXEC = EFD_CLOEXEC;
static const int CEPOLL_TFD_NONBLOCK = TFD_NONBLOCK;
static const int CEPOLL_TFD_CLOEXEC = TFD_CLOEXEC;
static const int CEPOLL_SFD_NONBLOCK = SFD_NONBLOCK;
static const int CEPOLL_SFD_CLOEXEC = SFD_CLOEXEC;
static const int CEPOLL_MSG_NOSIGNAL = MSG_NOSIGNAL;
static const int CEPOLL_MSG_DONTWAIT = MSG_DONTWAIT;

// One-shot, absolute CLOCK_MONOTONIC deadline; 0 disarms. A deadline already past fires at once.
static inline int cepoll_timerfd_set_absolute_ns(int fd, int64_t deadline_ns) {
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (deadline_ns > 0) {
        spec.it_value.tv_sec = deadline_ns / 1000000000;
        spec.it_value.tv_nsec = deadline_ns % 1000000000;
        if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    }
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL);
}

static inline int64_t cepoll_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// sigset_t helpers: the sigset macros do not import.
static inline int cepoll_block_signals(const int *signals, int count, sigset_t *out) {
    sigemptyset(out);
    for (int i = 0; i < count; i++) sigaddset(out, signals[i]);
    return pthread_sigmask(SIG_BLOCK, out, NULL);
}

static inline int cepoll_signalfd(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

// Replaces the mask of an existing signalfd (signalfd(2) with a valid fd).
static inline int cepoll_signalfd_update(int fd, const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    return signalfd(fd, &set, 0);
}

static inline void cepoll_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

static inline void *cepoll_mmap_anonymous(size_t length) {
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Datagrams. struct mmsghdr, recvmmsg and sendmmsg are GNU extensions that glibc declares only
 * under _GNU_SOURCE (which this header must not define, see the top), so the struct is declared
 * here with the kernel's layout (include/linux/socket.h) and the calls go through syscall(2),
 * which also skips glibc's cancellation-point wrapper like the read/send shims above. */
struct cepoll_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
static inline int cepoll_sys_recvmmsg(int fd, struct cepoll_mmsghdr *vec, unsigned int count, int flags) {
    return (int)syscall(SYS_recvmmsg, fd, vec, count, flags, (void *)0);
}
static inline int cepoll_sys_sendmmsg(int fd, struct cepoll_mmsghdr *vec, unsigned int count, int flags) {
    return (int)syscall(SYS_sendmmsg, fd, vec, count, flags);
}
/* SO_RXQ_OVFL: the kernel attaches to each datagram the socket's count of datagrams it dropped
 * because the receive queue was full (sk_drops, cumulative, u32). The CMSG macros do not import. */
static const int CEPOLL_SO_RXQ_OVFL = SO_RXQ_OVFL;
static const size_t CEPOLL_RXQ_OVFL_SPACE = CMSG_SPACE(sizeof(uint32_t));
static inline int cepoll_rxq_ovfl(struct msghdr *m, uint32_t *out) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
            memcpy(out, CMSG_DATA(c), sizeof *out);
            return 1;
        }
    }
    return 0;
}
/* The same count read directly: SO_MEMINFO's array (linux/sock_diag.h: SK_MEMINFO_DROPS is the
 * ninth of SK_MEMINFO_VARS u32s). For a socket that was in use before it was adopted. */
static inline int cepoll_socket_drops(int fd, uint32_t *out) {
    uint32_t info[9];
    socklen_t length = sizeof info;
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, info, &length) != 0 || length < sizeof info) return -1;
    *out = info[8];
    return 0;
}
/* Bytes in a TCP socket's send queue not yet acknowledged by the peer (SIOCOUTQ, which is
 * TIOCOUTQ for sockets: linux/sockios.h), or -1 (not a TCP socket). */
static inline int cepoll_send_queue(int fd) {
    int value = 0;
    return ioctl(fd, TIOCOUTQ, &value) == 0 ? value : -1;
}
static const int CEPOLL_SOCK_DGRAM = SOCK_DGRAM;
static const int CEPOLL_MSG_TRUNC = MSG_TRUNC;


/* A thread's id and CPU affinity (NonBlockingLog's writer thread runs on the CPUs of the thread
 * that started its queue, not on those of whichever thread logged first). gettid and
 * sched_{get,set}affinity's cpu_set_t are GNU (see the top), so these take the kernel's raw mask:
 * `bytes` bytes of bits, one per CPU. Result or -errno; getaffinity returns the mask's size. */
static inline long cepoll_gettid(void) {
    return syscall(SYS_gettid);
}
static inline long cepoll_getaffinity(long tid, void *mask, size_t bytes) {
    long r = syscall(SYS_sched_getaffinity, tid, bytes, mask);
    return r < 0 ? -(long)errno : r;
}
static inline long cepoll_setaffinity(long tid, const void *mask, size_t bytes) {
    long r = syscall(SYS_sched_setaffinity, tid, bytes, mask);
    return r < 0 ? -(long)errno : r;
}
/* Names the calling thread (at most 15 bytes show: `top -H`, /proc/PID/task/TID/comm). */
static inline int cepoll_name_thread(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

#endif
