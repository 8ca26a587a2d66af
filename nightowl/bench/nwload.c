/* nwload: load generator that behaves like the laravel/nightwatch SDK.
 *
 * Each frame uses its own TCP connection: connect, write the frame (either
 * "<len>:" and the body as two writes, like older SDKs, or one write), read
 * the 4-byte reply, close.  N connections run concurrently on one epoll loop,
 * either as fast as possible or at a fixed rate, for a duration or a count.
 * A reply other than exactly "2:OK", a reset or EOF is an error; no reply in
 * --timeout seconds (0.5 like the SDK) is a timeout; a refused or slow connect
 * is a connect failure.
 *
 * Frames come from a file holding one or more complete frames back to back
 * ("<len>:v1:<hash>:<payload>"), used round-robin.  When --seq is given every
 * run of "000000000000" in a frame is replaced by the frame's zero-padded
 * sequence number, and with --acked-file each sequence number acknowledged
 * with 2:OK is appended to that file, one per line.
 *
 * Output: one JSON line on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PLACEHOLDER "000000000000"
#define PH_LEN 12
#define MAX_FRAMES 100000

enum { IDLE = 0, CONNECTING, WRITING, READING };

typedef struct {
  char *data; size_t len; size_t prefix; /* bytes of "<len>:" */
  size_t *ph; int nph;                   /* placeholder offsets */
} tmpl_t;

typedef struct {
  int fd, phase, fi;
  long long seq;
  char *buf; size_t len, sent;
  double t_start, deadline;
  char rbuf[8]; int rlen;
} conn_t;

static tmpl_t *tmpls; static int ntmpl;
static struct sockaddr_in addr;
static int ep, split = 0, use_seq = 0;
static double timeout_s = 0.5, connect_timeout_s = 0.5;
static long long ok = 0, bad_reply = 0, reset_eof = 0, timeouts = 0, connect_fail = 0, connect_timeout = 0;
static long long started = 0, late = 0, next_seq = 1;
static int inflight = 0;
static double *lat; static size_t nlat = 0, caplat = 0;
static FILE *acked;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void die(const char *msg) { fprintf(stderr, "nwload: %s\n", msg); exit(2); }

static void load_frames(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open the frame file");
  fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
  char *all = malloc(size + 1);
  if (fread(all, 1, size, f) != (size_t)size) die("cannot read the frame file");
  fclose(f);
  tmpls = calloc(MAX_FRAMES, sizeof *tmpls);
  long pos = 0;
  while (pos < size) {
    if (all[pos] == '\n') { pos++; continue; }
    long p = pos, n = 0;
    while (p < size && all[p] >= '0' && all[p] <= '9') n = n * 10 + (all[p++] - '0');
    if (p == pos || p >= size || all[p] != ':') die("bad frame file: expected <len>:");
    p++;
    if (p + n > size) die("bad frame file: truncated frame");
    if (ntmpl == MAX_FRAMES) die("too many frames");
    tmpl_t *t = &tmpls[ntmpl++];
    t->data = all + pos; t->prefix = p - pos; t->len = t->prefix + n;
    t->ph = malloc(sizeof(size_t) * (n / PH_LEN + 1)); t->nph = 0;
    for (size_t i = t->prefix; i + PH_LEN <= t->len;) {
      if (memcmp(t->data + i, PLACEHOLDER, PH_LEN) == 0) { t->ph[t->nph++] = i; i += PH_LEN; }
      else i++;
    }
    pos = p + n;
  }
  if (ntmpl == 0) die("no frames in the frame file");
}

static void record_latency(double l) {
  if (nlat == caplat) { caplat = caplat ? caplat * 2 : 65536; lat = realloc(lat, caplat * sizeof *lat); }
  lat[nlat++] = l;
}

static void release(conn_t *c) {
  if (c->fd >= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); }
  c->fd = -1; c->phase = IDLE; inflight--;
}

static void fail(conn_t *c, long long *counter) { (*counter)++; release(c); }

static void start(conn_t *c, double t) {
  tmpl_t *tp = &tmpls[started % ntmpl];
  c->fi = started % ntmpl; started++; inflight++;
  c->seq = next_seq++;
  if (use_seq && tp->nph) {
    memcpy(c->buf, tp->data, tp->len);
    char digits[32]; snprintf(digits, sizeof digits, "%012lld", c->seq % 1000000000000LL);
    for (int i = 0; i < tp->nph; i++) memcpy(c->buf + tp->ph[i], digits, PH_LEN);
  }
  c->len = tp->len; c->sent = 0; c->rlen = 0; c->t_start = t;
  c->deadline = t + connect_timeout_s;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) { fail(c, &connect_fail); return; }
  int one = 1; setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* RST on close: 20k+ connections/s would otherwise exhaust the ephemeral ports in TIME_WAIT. */
  struct linger lg = {1, 0}; setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
  if (r < 0 && errno != EINPROGRESS) { close(c->fd); c->fd = -1; fail(c, &connect_fail); return; }
  c->phase = CONNECTING;
  struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static const char *frame_data(conn_t *c) {
  tmpl_t *tp = &tmpls[c->fi];
  return (use_seq && tp->nph) ? c->buf : tp->data;
}

static void do_write(conn_t *c, double t) {
  const char *data = frame_data(c);
  size_t prefix = tmpls[c->fi].prefix;
  while (c->sent < c->len) {
    size_t upto = (split && c->sent < prefix) ? prefix : c->len;
    ssize_t w = write(c->fd, data + c->sent, upto - c->sent);
    if (w < 0) {
      if (errno == EAGAIN) return;
      fail(c, &reset_eof); return;
    }
    c->sent += w;
  }
  c->phase = READING; c->deadline = t + timeout_s;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void do_read(conn_t *c, double t) {
  for (;;) {
    ssize_t r = read(c->fd, c->rbuf + c->rlen, 4 - c->rlen);
    if (r < 0) { if (errno == EAGAIN) return; fail(c, &reset_eof); return; }
    if (r == 0) { fail(c, c->rlen ? &bad_reply : &reset_eof); return; }
    c->rlen += r;
    if (c->rlen == 4) {
      if (memcmp(c->rbuf, "2:OK", 4) == 0) {
        ok++; record_latency(t - c->t_start);
        if (acked) fprintf(acked, "%lld\n", c->seq);
        release(c);
      } else fail(c, &bad_reply);
      return;
    }
  }
}

static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
static double pct(double p) {
  if (!nlat) return 0;
  size_t i = (size_t)ceil(p * nlat) - 1; if (i >= nlat) i = nlat - 1;
  return lat[i];
}

static void usage(void) {
  fprintf(stderr,
    "usage: nwload --port P --frames FILE [--host 127.0.0.1] [--concurrency 16]\n"
    "              [--duration S | --count N] [--rate R] [--split] [--timeout 0.5]\n"
    "              [--connect-timeout 0.5] [--seq] [--seq-start 1] [--acked-file PATH]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *frames = NULL, *acked_path = NULL;
  int port = 0, conc = 16; double duration = 0, rate = 0; long long count = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
#define ARG (i + 1 < argc ? argv[++i] : (usage(), ""))
    if (!strcmp(a, "--host")) host = ARG;
    else if (!strcmp(a, "--port")) port = atoi(ARG);
    else if (!strcmp(a, "--frames")) frames = ARG;
    else if (!strcmp(a, "--concurrency")) conc = atoi(ARG);
    else if (!strcmp(a, "--duration")) duration = atof(ARG);
    else if (!strcmp(a, "--count")) count = atoll(ARG);
    else if (!strcmp(a, "--rate")) rate = atof(ARG);
    else if (!strcmp(a, "--split")) split = 1;
    else if (!strcmp(a, "--timeout")) timeout_s = atof(ARG);
    else if (!strcmp(a, "--connect-timeout")) connect_timeout_s = atof(ARG);
    else if (!strcmp(a, "--seq")) use_seq = 1;
    else if (!strcmp(a, "--seq-start")) next_seq = atoll(ARG);
    else if (!strcmp(a, "--acked-file")) acked_path = ARG;
    else usage();
  }
  if (!port || !frames || conc <= 0 || (duration <= 0 && count <= 0)) usage();
  if (acked_path) {
    use_seq = 1;
    acked = fopen(acked_path, "a");
    if (!acked) die("cannot open the acked file");
    setvbuf(acked, NULL, _IOFBF, 1 << 16);
  }
  signal(SIGPIPE, SIG_IGN);
  load_frames(frames);
  addr.sin_family = AF_INET; addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("--host must be an IPv4 address");
  size_t maxlen = 0;
  for (int i = 0; i < ntmpl; i++) if (tmpls[i].len > maxlen) maxlen = tmpls[i].len;
  ep = epoll_create1(0);
  conn_t *cs = calloc(conc, sizeof *cs);
  for (int i = 0; i < conc; i++) { cs[i].fd = -1; cs[i].buf = use_seq ? malloc(maxlen) : NULL; }
  struct epoll_event evs[512];
  double t0 = now(), t_end = duration > 0 ? t0 + duration : 1e300, last_scan = t0;
  double interval = rate > 0 ? 1.0 / rate : 0;
  int maxinflight = 0;
  for (;;) {
    double t = now();
    int more = t < t_end && (count <= 0 || started < count);
    if (!more && inflight == 0) break;
    /* Start what is due on the free connections. */
    if (more) {
      for (int i = 0; i < conc; i++) {
        if (cs[i].phase != IDLE) continue;
        if (count > 0 && started >= count) break;
        if (rate > 0) {
          double due = t0 + started * interval;
          if (due > t) break;
          if (t - due > 0.002) late++;
        }
        start(&cs[i], t);
      }
    }
    if (inflight > maxinflight) maxinflight = inflight;
    int wait_ms = 5;
    if (more && rate > 0 && inflight < conc) {
      double due = t0 + started * interval - now();
      /* Round up: never spin; frames due within the next millisecond start together. */
      wait_ms = due <= 0 ? 0 : (int)ceil(due * 1000);
    }
    int n = epoll_wait(ep, evs, 512, wait_ms);
    t = now();
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      if (c->phase == CONNECTING) {
        int err = 0; socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (e & (EPOLLERR | EPOLLHUP))) { fail(c, &connect_fail); continue; }
        c->phase = WRITING;
        do_write(c, t);
      } else if (c->phase == WRITING) {
        if (e & (EPOLLERR | EPOLLHUP)) { fail(c, &reset_eof); continue; }
        do_write(c, t);
      } else if (c->phase == READING) {
        do_read(c, t);
      }
    }
    if (t - last_scan > 0.005) {
      last_scan = t;
      for (int i = 0; i < conc; i++) {
        conn_t *c = &cs[i];
        if (c->phase == IDLE || t <= c->deadline) continue;
        if (c->phase == CONNECTING) { connect_timeout++; fail(c, &connect_fail); }
        else fail(c, &timeouts);
      }
    }
  }
  double elapsed = now() - t0;
  if (acked) fclose(acked);
  qsort(lat, nlat, sizeof *lat, cmp);
  double sum = 0; for (size_t i = 0; i < nlat; i++) sum += lat[i];
  struct rusage ru; getrusage(RUSAGE_SELF, &ru);
  long long errors = bad_reply + reset_eof;
  printf("{\"ok\":%lld,\"errors\":%lld,\"bad_reply\":%lld,\"reset_or_eof\":%lld,\"timeouts\":%lld,"
         "\"connect_failures\":%lld,\"connect_timeouts\":%lld,\"started\":%lld,\"seconds\":%.3f,\"payloads_per_s\":%.1f,"
         "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f,"
         "\"rate\":%.1f,\"late\":%lld,\"max_inflight\":%d,\"concurrency\":%d,\"split\":%s,"
         "\"frame_bytes\":%zu,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n",
         ok, errors, bad_reply, reset_eof, timeouts, connect_fail, connect_timeout, started, elapsed,
         ok / elapsed, pct(0.5) * 1e3, pct(0.9) * 1e3, pct(0.99) * 1e3,
         nlat ? lat[nlat - 1] * 1e3 : 0, nlat ? sum / nlat * 1e3 : 0, rate, late, maxinflight,
         conc, split ? "true" : "false", tmpls[0].len,
         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
  return 0;
}
