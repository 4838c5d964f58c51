/*
 * nodelay_probe.c - does an accepted TCP socket inherit TCP_NODELAY from its
 * listening socket on this kernel?  Loopback (127.0.0.1) only.
 *
 * Prints e.g. "listener TCP_NODELAY=1 -> accepted TCP_NODELAY=1 (inherited)"
 * and exits 0 if inherited, 1 if not, 2 on error.
 *
 * Build: cc -O2 -o nodelay_probe nodelay_probe.c
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int get_nodelay(int fd)
{
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) < 0)
        return -1;
    return v != 0;
}

static int probe(int set_on_listener)
{
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (lfd < 0)
        return -1;
    if (set_on_listener)
        setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    int afd = accept(lfd, NULL, NULL);
    if (afd < 0)
        return -1;
    int r = get_nodelay(afd);
    printf("listener TCP_NODELAY=%d -> accepted TCP_NODELAY=%d\n", get_nodelay(lfd), r);
    close(afd);
    close(cfd);
    close(lfd);
    return r;
}

int main(void)
{
    int base = probe(0);
    int with = probe(1);
    if (base < 0 || with < 0) {
        perror("nodelay_probe");
        return 2;
    }
    if (with == 1 && base == 0) {
        printf("inherited: yes (accepted sockets inherit TCP_NODELAY from the listener)\n");
        return 0;
    }
    printf("inherited: no\n");
    return 1;
}
