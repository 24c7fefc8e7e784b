/* The host simulator: the firmware's protocol core and kernels as a native process.
 *
 *   eddl-mcu-sim            speak on stdin/stdout (pipes, a pty)
 *   eddl-mcu-sim --tcp PORT listen on 127.0.0.1:PORT (0 picks a free port); prints
 *                           "LISTENING <port>" on stderr and serves one client after another;
 *                           the model survives reconnects, like a board on a cable.
 *   --baud N                (with either) pace the link like a UART at N baud, 8N1: 10 bits
 *                           per byte, so N/10 bytes/s out and at most N/10 bytes/s in.
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
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "hal.h"

static int s_in = 0;
static int s_out = 1;
static uint8_t s_buf[65536]; /* one read() per socket buffer, not per frame */
static size_t s_len, s_pos;

/* UART pacing (--baud): seconds per byte on the line, 0 when unpaced; bytes moved per step
 * (about 2 ms of line time, so a step's sleep is long enough to be kept); the times at which
 * each direction's line is free again. */
static double s_byte_time;
static size_t s_step = sizeof s_buf;
static double s_rx_free, s_tx_free;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Refill s_buf when it is used up; 0 when the link closed. Paced: at most one step per read,
 * handed over only when a UART would have finished receiving it. */
static int fill(void)
{
    if (s_pos == s_len) {
        ssize_t n;
        struct pollfd pfd = {s_in, POLLIN, 0};
        /* Nothing waiting: the line is idle, and its clock restarts when bytes come. */
        const int idle = s_byte_time > 0.0 && poll(&pfd, 1, 0) == 0;
        do {
            n = read(s_in, s_buf, s_step);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            return 0;
        }
        s_len = (size_t)n;
        s_pos = 0;
        if (s_byte_time > 0.0) {
            /* Bytes that were already waiting follow the previous ones on the line; after an
             * idle line, or a pause longer than a step (the device was busy and the bytes
             * queued in the sender), they start arriving now. */
            const double t = now_s();
            const double start = idle || s_rx_free < t - s_byte_time * (double)s_step ?
                                     t :
                                     s_rx_free;
            s_rx_free = start + s_byte_time * (double)n;
            sleep_until(s_rx_free);
        }
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

static void write_all(const uint8_t *p, size_t n)
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

/* Paced: one step at a time, returning when a UART would have shifted out the last bit. */
void hal_write(const uint8_t *p, size_t n)
{
    if (s_byte_time <= 0.0) {
        write_all(p, n);
        return;
    }
    while (n > 0u) {
        const size_t k = n < s_step ? n : s_step;
        const double t = now_s();
        write_all(p, k);
        s_tx_free = (s_tx_free > t ? s_tx_free : t) + s_byte_time * (double)k;
        sleep_until(s_tx_free);
        p += k;
        n -= k;
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

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--tcp PORT] [--baud N]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    long port = -1;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) {
            return usage(argv[0]);
        }
        char *end;
        const long v = strtol(argv[i + 1], &end, 10);
        if (strcmp(argv[i], "--tcp") == 0) {
            if (*end != '\0' || end == argv[i + 1] || v < 0 || v > 65535) {
                fprintf(stderr, "bad port %s\n", argv[i + 1]);
                return 2;
            }
            port = v;
        } else if (strcmp(argv[i], "--baud") == 0) {
            /* Up to 100 Mbaud; from 50 baud, the slowest rate a UART is ever set to. */
            if (*end != '\0' || end == argv[i + 1] || v < 50 || v > 100000000) {
                fprintf(stderr, "bad baud rate %s (50 to 100000000)\n", argv[i + 1]);
                return 2;
            }
            s_byte_time = 10.0 / (double)v;
            s_step = (size_t)(0.002 / s_byte_time);
            s_step = s_step < 1u ? 1u : (s_step > sizeof s_buf ? sizeof s_buf : s_step);
        } else {
            return usage(argv[0]);
        }
    }
    if (port >= 0) {
        return serve_tcp(port);
    }
    run_link();
    return 0;
}
