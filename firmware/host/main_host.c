/* The host simulator: the firmware's protocol core and kernels as a native process.
 *
 *   eddl-mcu-sim            speak on stdin/stdout (pipes, a pty)
 *   eddl-mcu-sim --tcp PORT listen on 127.0.0.1:PORT (0 picks a free port); prints
 *                           "LISTENING <port>" on stderr and serves one client after another;
 *                           the model survives reconnects, like a board on a cable.
 * Ticks are microseconds of CLOCK_MONOTONIC (tick_hz = 1e6).
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "hal.h"

static int s_in = 0;
static int s_out = 1;
static uint8_t s_buf[65536]; /* one read() per socket buffer, not per frame */
static size_t s_len, s_pos;

/* Refill s_buf when it is used up; 0 when the link closed. */
static int fill(void)
{
    if (s_pos == s_len) {
        ssize_t n;
        do {
            n = read(s_in, s_buf, sizeof s_buf);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            return 0;
        }
        s_len = (size_t)n;
        s_pos = 0;
    }
    return 1;
}

int hal_getc(void) { return fill() ? s_buf[s_pos++] : -1; }

size_t hal_skip(size_t n)
{
    if (!fill()) {
        return 0u;
    }
    const size_t k = n < s_len - s_pos ? n : s_len - s_pos;
    s_pos += k;
    return k;
}

/* device_run with whole reads: frame bytes go in by runs, not one call per byte. */
static void run_link(void)
{
    for (;;) {
        if (!fill()) {
            device_link_reset();
            return;
        }
        s_pos += device_feed_run(s_buf + s_pos, s_len - s_pos);
        if (s_pos < s_len) { /* at a delimiter */
            s_pos++;
            device_feed(0u);
        }
    }
}

void hal_write(const uint8_t *p, size_t n)
{
    while (n > 0u) {
        const ssize_t w = write(s_out, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* peer gone: the next read reports it */
        }
        p += w;
        n -= (size_t)w;
    }
}

uint32_t hal_ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
}

/* Microseconds: a 32-bit count then wraps after 71 minutes, longer than any TRAIN. */
uint32_t hal_tick_hz(void) { return 1000000u; }
uint32_t hal_irq_mask(void) { return 0u; }
void hal_irq_restore(uint32_t saved) { (void)saved; }

static int serve_tcp(long port)
{
    const int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0) {
        perror("socket");
        return 1;
    }
    const int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 1) < 0) {
        perror("bind");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    fprintf(stderr, "LISTENING %u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stderr);
    for (;;) {
        const int c = accept(ls, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("accept");
            return 1;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s_in = s_out = c;
        s_len = s_pos = 0;
        run_link();
        close(c);
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--tcp") == 0) {
        char *end;
        const long port = strtol(argv[2], &end, 10);
        if (*end != '\0' || port < 0 || port > 65535) {
            fprintf(stderr, "bad port %s\n", argv[2]);
            return 2;
        }
        return serve_tcp(port);
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--tcp PORT]\n", argv[0]);
        return 2;
    }
    run_link();
    return 0;
}
