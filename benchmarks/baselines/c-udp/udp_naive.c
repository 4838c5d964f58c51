/* The naive UDP echo: one recvfrom and one sendto per datagram, blocking, what inetd's
 * built-in `echo dgram` does. No safety checks (reflectd's refusals and rate limit are not
 * here): it is the per-datagram cost floor of the simplest loop, for benchmarks/udp.sh.
 *
 *   udp_naive PORT        (binds 127.0.0.1:PORT; PORT 0 picks one; prints "listening on udp ...")
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    printf("listening on udp 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    static char buffer[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(fd, buffer, sizeof buffer, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) continue;
        sendto(fd, buffer, (size_t)n, 0, (struct sockaddr *)&from, fromlen);
    }
}
