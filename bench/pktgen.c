/* pktgen: the packet sender of `make bench-lab` (bench/lab_bench.py compiles it with gcc).
 *
 * Sends Ethernet/IPv4/UDP frames on one interface with AF_PACKET raw sockets,
 * PACKET_QDISC_BYPASS and sendmmsg (up to 64 frames per call), paced (a
 * schedule: frame n leaves at start + n / rate, with at most 1 ms of catching up)
 * or unpaced, for a time and/or a number of frames.  IPv4 and UDP checksums are
 * complete in every frame.
 *
 * Flows: --endpoints E inside endpoints, endpoint e = source address
 * SRC + e % NSRC and source port SPORT + e / NSRC.
 *   flows    mode: packet i goes from endpoint i % E to DST:DPORT (E established flows);
 *   newflows mode: packet i goes from endpoint i % E to DST:(1024 + (i / E) % 64512),
 *                  a 5-tuple never sent before for i < E * 64512 (--start continues a
 *                  sequence across runs).
 *
 * Prints one JSON line at the end: {"sent": N, "seconds": T, "errors": E, "next": I}
 * (seconds from the first to the last sendmmsg; next = the packet index to --start from
 * next time).  Stops early on SIGTERM/SIGINT and still prints it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 64
#define MAX_FRAME 1514
#define MIN_FRAME 60

static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static void die(const char *what)
{
    fprintf(stderr, "pktgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(const char *msg)
{
    fprintf(stderr, "pktgen: %s\n"
            "usage: pktgen --ifname IF --smac MAC --dmac MAC --src IP [--nsrc N] --sport P --dst IP --dport P\n"
            "              [--endpoints E] [--size BYTES] [--mode flows|newflows] [--rate PPS] [--seconds S]\n"
            "              [--count N] [--start I] [--batch B]\n", msg);
    exit(2);
}

static void parse_mac(const char *s, uint8_t mac[6])
{
    unsigned int b[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
        usage("bad MAC address");
    for (int i = 0; i < 6; i++) {
        if (b[i] > 255)
            usage("bad MAC address");
        mac[i] = (uint8_t)b[i];
    }
}

static uint32_t parse_ip(const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        usage("bad IPv4 address");
    return ntohl(a.s_addr);
}

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
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop)
        ;
}

/* one's-complement sum of big-endian 16-bit words */
static uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        acc += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        acc += (uint32_t)(p[n - 1] << 8);
    return acc;
}

static uint16_t fold(uint32_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

struct spec {
    uint8_t smac[6], dmac[6];
    uint32_t src, dst;
    uint32_t nsrc;
    uint16_t sport, dport;
    size_t size;
};

/* a complete frame from endpoint e to dport */
static void build(uint8_t *f, const struct spec *s, uint32_t e, uint16_t dport)
{
    size_t ip_len = s->size - 14, udp_len = ip_len - 20;
    uint32_t src = s->src + e % s->nsrc;
    uint16_t sport = (uint16_t)(s->sport + e / s->nsrc);
    memset(f, 0, s->size);
    memcpy(f, s->dmac, 6);
    memcpy(f + 6, s->smac, 6);
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14, *udp = ip + 20;
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)ip_len);
    ip[8] = 64;
    ip[9] = 17;
    put32(ip + 12, src);
    put32(ip + 16, s->dst);
    put16(ip + 10, (uint16_t)~fold(sum16(ip, 20, 0)));
    put16(udp, sport);
    put16(udp + 2, dport);
    put16(udp + 4, (uint16_t)udp_len);
    for (size_t i = 8; i < udp_len; i++)
        udp[i] = (uint8_t)i;
    uint32_t acc = sum16(ip + 12, 8, 0) + 17 + (uint32_t)udp_len;
    uint16_t c = (uint16_t)~fold(sum16(udp, udp_len, acc));
    put16(udp + 6, c ? c : 0xffff);
}

int main(int argc, char **argv)
{
    struct spec s = {.nsrc = 1, .size = 60};
    const char *ifname = NULL, *mode = "flows";
    double rate = 0, seconds = 0;
    uint64_t count = 0, start = 0;
    uint32_t endpoints = 1000;
    int batch = MAX_BATCH, have = 0;
    static const struct option opts[] = {
        {"ifname", 1, 0, 'i'}, {"smac", 1, 0, 'm'}, {"dmac", 1, 0, 'M'}, {"src", 1, 0, 's'},
        {"nsrc", 1, 0, 'n'}, {"sport", 1, 0, 'p'}, {"dst", 1, 0, 'd'}, {"dport", 1, 0, 'P'},
        {"endpoints", 1, 0, 'e'}, {"size", 1, 0, 'z'}, {"mode", 1, 0, 'o'}, {"rate", 1, 0, 'r'},
        {"seconds", 1, 0, 't'}, {"count", 1, 0, 'c'}, {"start", 1, 0, 'S'}, {"batch", 1, 0, 'b'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': ifname = optarg; have |= 1; break;
        case 'm': parse_mac(optarg, s.smac); have |= 2; break;
        case 'M': parse_mac(optarg, s.dmac); have |= 4; break;
        case 's': s.src = parse_ip(optarg); have |= 8; break;
        case 'n': s.nsrc = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'p': s.sport = (uint16_t)strtoul(optarg, NULL, 10); have |= 16; break;
        case 'd': s.dst = parse_ip(optarg); have |= 32; break;
        case 'P': s.dport = (uint16_t)strtoul(optarg, NULL, 10); have |= 64; break;
        case 'e': endpoints = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'z': s.size = strtoul(optarg, NULL, 10); break;
        case 'o': mode = optarg; break;
        case 'r': rate = strtod(optarg, NULL); break;
        case 't': seconds = strtod(optarg, NULL); break;
        case 'c': count = strtoull(optarg, NULL, 10); break;
        case 'S': start = strtoull(optarg, NULL, 10); break;
        case 'b': batch = atoi(optarg); break;
        default: usage("unknown option");
        }
    }
    if (have != 127)
        usage("--ifname --smac --dmac --src --sport --dst --dport are required");
    int newflows = strcmp(mode, "newflows") == 0;
    if (!newflows && strcmp(mode, "flows") != 0)
        usage("--mode is flows or newflows");
    if (s.size < MIN_FRAME || s.size > MAX_FRAME)
        usage("--size is 60..1514 (Ethernet frame without FCS)");
    if (s.nsrc == 0 || endpoints == 0 || endpoints > 65536)
        usage("--nsrc >= 1, --endpoints 1..65536");
    if ((uint32_t)s.sport + (endpoints - 1) / s.nsrc > 65535)
        usage("--sport + endpoints / nsrc exceeds 65535");
    if (batch < 1 || batch > MAX_BATCH)
        usage("--batch is 1..64");
    if (seconds <= 0 && count == 0)
        usage("give --seconds and/or --count");
    if (rate < 0)
        usage("--rate >= 0 (0: unpaced)");

    unsigned int ifindex = if_nametoindex(ifname);
    if (!ifindex)
        die(ifname);
    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: this socket receives nothing */
    if (fd < 0)
        die("socket(AF_PACKET)");
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0)
        die("PACKET_QDISC_BYPASS");
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = (int)ifindex, .sll_protocol = 0};
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("bind");

    /* flows: every endpoint's frame prebuilt; newflows: one buffer per batch slot, dport
     * patched per packet with the UDP checksum from the endpoint's sum without a dport */
    size_t nframes = newflows ? (size_t)MAX_BATCH : endpoints;
    uint8_t *frames = malloc(nframes * s.size);
    uint32_t *base = newflows ? malloc(endpoints * sizeof *base) : NULL;
    if (!frames || (newflows && !base))
        die("malloc");
    if (newflows) {
        uint8_t *tmp = malloc(s.size);
        if (!tmp)
            die("malloc");
        for (uint32_t e = 0; e < endpoints; e++) {
            build(tmp, &s, e, 0);
            uint8_t *ip = tmp + 14, *udp = ip + 20;
            size_t udp_len = s.size - 34;
            put16(udp + 6, 0);
            base[e] = sum16(udp, udp_len, sum16(ip + 12, 8, 0) + 17 + (uint32_t)udp_len);
        }
        free(tmp);
        for (int k = 0; k < MAX_BATCH; k++)
            build(frames + (size_t)k * s.size, &s, 0, 1024);
    } else {
        for (uint32_t e = 0; e < endpoints; e++)
            build(frames + (size_t)e * s.size, &s, e, s.dport);
    }

    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake up on time when pacing */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int k = 0; k < MAX_BATCH; k++) {
        iov[k].iov_len = s.size;
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }

    uint64_t sent = 0, errors = 0, idx = start;
    double t0 = now_s(), first = 0, last = 0, sched = t0;
    double end = seconds > 0 ? t0 + seconds : 0;
    while (!stop) {
        double t = now_s();
        if (end && t >= end)
            break;
        uint64_t left = count ? count - sent : UINT64_MAX;
        if (!left)
            break;
        int n = batch;
        if ((uint64_t)n > left)
            n = (int)left;
        if (rate > 0) {
            /* frame sent+k is due at sched + k / rate; when late (the CPU was busy), catch up
             * at full speed, but for at most 1 ms of backlog (no long bursts) */
            if (sched < t - 1e-3)
                sched = t - 1e-3;
            double due = sched;
            if (due > t) {
                if (end && due >= end)
                    break;
                sleep_until(due);
            }
        }
        for (int k = 0; k < n; k++) {
            uint64_t i = idx + (uint64_t)k;
            uint32_t e = (uint32_t)(i % endpoints);
            if (newflows) {
                uint8_t *f = frames + (size_t)k * s.size, *udp = f + 34;
                uint16_t dport = (uint16_t)(1024 + (i / endpoints) % 64512);
                uint32_t src = s.src + e % s.nsrc;
                uint16_t sport = (uint16_t)(s.sport + e / s.nsrc);
                uint8_t *ip = f + 14;
                put32(ip + 12, src);
                put16(ip + 10, 0);
                put16(ip + 10, (uint16_t)~fold(sum16(ip, 20, 0)));
                put16(udp, sport);
                put16(udp + 2, dport);
                uint16_t cs = (uint16_t)~fold(base[e] + dport);
                put16(udp + 6, cs ? cs : 0xffff);
                iov[k].iov_base = f;
            } else {
                iov[k].iov_base = frames + (size_t)e * s.size;
            }
        }
        int r = sendmmsg(fd, msgs, (unsigned int)n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOBUFS || errno == EAGAIN) {
                errors++;
                continue;
            }
            die("sendmmsg");
        }
        double t2 = now_s();
        if (!first && r > 0)
            first = t;
        if (r > 0)
            last = t2;
        sent += (uint64_t)r;
        idx += (uint64_t)r;
        if (r < n)
            errors++;
        if (rate > 0)
            sched += (double)r / rate;
    }
    printf("{\"sent\": %llu, \"seconds\": %.6f, \"errors\": %llu, \"next\": %llu}\n",
           (unsigned long long)sent, first ? last - first : 0.0, (unsigned long long)errors,
           (unsigned long long)idx);
    fflush(stdout);
    free(frames);
    free(base);
    close(fd);
    return 0;
}
