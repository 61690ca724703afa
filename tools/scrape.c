/* keel-top — one HTTP/1.1 GET of a metrics page; see scrape.h. */
#define _GNU_SOURCE
#include "scrape.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A metrics page is tens of kilobytes; a server that sends more than this is
 * not one, and must not make keel-top eat the machine's memory. */
#define SCRAPE_MAX_BYTES (64u << 20)

static bool copy_str(char *dst, size_t size, const char *src, size_t n)
{
    if (n >= size)
        return false;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return true;
}

static bool valid_port(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

int scrape_target_parse(const char *arg, struct scrape_target *t, char *err, size_t err_len)
{
    memset(t, 0, sizeof *t);
    const char *p = arg;
    if (strncasecmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://")) {
        snprintf(err, err_len, "'%s': only http:// URLs are supported", arg);
        return -1;
    }
    const char *slash = strchr(p, '/');
    const char *hp_end = slash ? slash : p + strlen(p);
    if (!copy_str(t->path, sizeof t->path, slash ? slash : "/metrics",
                  slash ? strlen(slash) : strlen("/metrics"))) {
        snprintf(err, err_len, "'%s': path too long", arg);
        return -1;
    }
    for (const char *c = t->path; *c; c++) {
        /* The path goes into the request line verbatim. */
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            snprintf(err, err_len, "'%s': the path has a space or control character", arg);
            return -1;
        }
    }

    const char *host = NULL, *port = NULL;
    size_t host_len = 0, port_len = 0;
    bool v6 = false;
    if (hp_end > p && *p == '[') {
        const char *close = memchr(p, ']', (size_t)(hp_end - p));
        if (!close || close + 1 >= hp_end || close[1] != ':') {
            snprintf(err, err_len, "'%s': write an IPv6 address as [ADDR]:PORT", arg);
            return -1;
        }
        host = p + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
        v6 = true;
    } else {
        const char *colon = memchr(p, ':', (size_t)(hp_end - p));
        if (colon && memchr(colon + 1, ':', (size_t)(hp_end - colon - 1))) {
            snprintf(err, err_len, "'%s': write an IPv6 address as [ADDR]:PORT", arg);
            return -1;
        }
        if (colon) {
            host = p;
            host_len = (size_t)(colon - p);
            port = colon + 1;
        } else {
            host = "127.0.0.1"; /* PORT alone: the app on this machine */
            host_len = strlen(host);
            port = p;
        }
    }
    port_len = (size_t)(hp_end - port);
    if (!valid_port(port, port_len)) {
        snprintf(err, err_len,
                 "'%s': expected HOST:PORT, PORT or [IPV6]:PORT with PORT in 1..65535", arg);
        return -1;
    }
    if (host_len == 0 || !copy_str(t->host, sizeof t->host, host, host_len)) {
        snprintf(err, err_len, "'%s': missing or too long host name", arg);
        return -1;
    }
    for (const char *c = t->host; *c; c++) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            snprintf(err, err_len, "'%s': the host has a space or control character", arg);
            return -1;
        }
    }
    copy_str(t->port, sizeof t->port, port, port_len);
    snprintf(t->display, sizeof t->display, v6 ? "[%s]:%s" : "%s:%s", t->host, t->port);
    snprintf(t->host_header, sizeof t->host_header, "%s", t->display);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct waiter {
    int64_t deadline_ms;
    int input_fd;
    scrape_input_fn on_input;
    void *arg;
};

/* Waits for events on fd, serving input_fd meanwhile. Returns 1 when fd is
 * ready, 0 on the deadline, -2 if the user abandoned the scrape, -errno. */
static int wait_fd(const struct waiter *w, int fd, short events)
{
    for (;;) {
        int64_t left = w->deadline_ms - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd[2] = {{.fd = fd, .events = events},
                                {.fd = w->input_fd, .events = POLLIN}};
        int n = poll(pfd, w->input_fd >= 0 ? 2 : 1, (int)left);
        if (n < 0) {
            if (errno == EINTR) {
                /* A signal (SIGINT, SIGWINCH): let the caller look at it. */
                if (w->on_input && w->on_input(w->arg))
                    return -2;
                continue;
            }
            return -errno;
        }
        if (w->input_fd >= 0 && pfd[1].revents) {
            if (w->on_input && w->on_input(w->arg))
                return -2;
        }
        if (pfd[0].revents)
            return 1;
    }
}

/* Connects to one address before the deadline. Returns the socket, or
 * -errno (-ETIMEDOUT on the deadline, -ECANCELED if abandoned). */
static int connect_one(const struct addrinfo *ai, const struct waiter *w)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int r;
    do
        r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return fd;
    if (errno != EINPROGRESS) {
        r = -errno;
        close(fd);
        return r;
    }
    r = wait_fd(w, fd, POLLOUT);
    if (r <= 0) {
        close(fd);
        return r == 0 ? -ETIMEDOUT : r == -2 ? -ECANCELED : r;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr != 0) {
        close(fd);
        return -soerr;
    }
    return fd;
}

static int buf_reserve(struct scrape_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap - b->len < extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

void scrape_buf_free(struct scrape_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

/* Finds a header's value in [h, end) (the lines after the status line).
 * Returns its start and sets *len, or NULL. */
static const char *find_header(const char *h, const char *end, const char *name, size_t *len)
{
    size_t n = strlen(name);
    while (h < end) {
        const char *eol = memchr(h, '\n', (size_t)(end - h));
        if (!eol)
            eol = end;
        if ((size_t)(eol - h) > n && strncasecmp(h, name, n) == 0 && h[n] == ':') {
            const char *v = h + n + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        h = eol + 1;
    }
    return NULL;
}

/* Decodes a chunked body in place. Returns its length, or -1 if malformed
 * or cut short. */
static long dechunk(char *body, size_t len)
{
    size_t in = 0, out = 0;
    for (;;) {
        const char *eol = memchr(body + in, '\n', len - in);
        if (!eol)
            return -1;
        size_t size = 0;
        size_t i = in, digits = 0;
        for (; i < (size_t)(eol - body); i++, digits++) {
            char c = body[i];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                break; /* ';' extensions, '\r' */
            if (size > (SCRAPE_MAX_BYTES >> 4))
                return -1;
            size = size * 16 + (size_t)d;
        }
        if (digits == 0)
            return -1;
        in = (size_t)(eol - body) + 1;
        if (size == 0)
            return (long)out; /* trailers, if any, are of no interest */
        if (len - in < size)
            return -1;
        memmove(body + out, body + in, size);
        out += size;
        in += size;
        if (in < len && body[in] == '\r')
            in++;
        if (in >= len || body[in] != '\n')
            return -1;
        in++;
    }
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

int scrape_get(const struct scrape_target *t, int timeout_ms, int input_fd,
               scrape_input_fn on_input, void *arg, struct scrape_buf *buf, const char **body,
               size_t *body_len, char *err, size_t err_len)
{
    const struct waiter w = {now_ms() + timeout_ms, input_fd, on_input, arg};
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(t->host, t->port, &hints, &res);
    if (r != 0) {
        snprintf(err, err_len, "cannot resolve %s: %s — check the host name", t->host,
                 r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        return -1;
    }
    int fd = -ENOENT;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = connect_one(ai, &w);
        if (fd >= 0 || fd == -ECANCELED || fd == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (fd == -ECANCELED)
        return -2;
    if (fd == -ETIMEDOUT) {
        snprintf(err, err_len,
                 "cannot connect to %s: no answer within %d ms — is the address reachable?",
                 t->display, timeout_ms);
        return -1;
    }
    if (fd < 0) {
        snprintf(err, err_len,
                 "cannot connect to %s: %s — is the app running with --metrics-port %s?",
                 t->display, strerror(-fd), t->port);
        return -1;
    }

    int ret = -1;
    char req[1024];
    int req_len = snprintf(req, sizeof req,
                           "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: keel-top\r\n"
                           "Accept: text/plain\r\nConnection: close\r\n\r\n",
                           t->path, t->host_header);
    for (int sent = 0; sent < req_len;) {
        ssize_t n = send(fd, req + sent, (size_t)(req_len - sent), MSG_NOSIGNAL);
        if (n > 0) {
            sent += (int)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            r = wait_fd(&w, fd, POLLOUT);
            if (r == 1)
                continue;
            if (r == -2)
                ret = -2;
            else
                snprintf(err, err_len, "%s: cannot send the request: %s", t->display,
                         r == 0 ? "timed out" : strerror(-r));
            goto out;
        }
        snprintf(err, err_len, "%s: cannot send the request: %s", t->display, strerror(errno));
        goto out;
    }

    buf->len = 0;
    size_t header_len = 0; /* through the blank line; 0 until seen */
    long content_length = -1;
    bool chunked = false;
    for (;;) {
        if (buf->len >= SCRAPE_MAX_BYTES) {
            snprintf(err, err_len,
                     "%s: the reply is over %u MiB — is this a keel app's metrics port?",
                     t->display, SCRAPE_MAX_BYTES >> 20);
            goto out;
        }
        if (buf_reserve(buf, 16 * 1024) < 0) {
            snprintf(err, err_len, "out of memory reading the reply from %s", t->display);
            goto out;
        }
        ssize_t n = recv(fd, buf->data + buf->len, buf->cap - buf->len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            r = wait_fd(&w, fd, POLLIN);
            if (r == 1)
                continue;
            if (r == -2)
                ret = -2;
            else if (r == 0)
                snprintf(err, err_len,
                         "%s: no complete reply within %d ms — is this a keel app's metrics port?",
                         t->display, timeout_ms);
            else
                snprintf(err, err_len, "%s: %s", t->display, strerror(-r));
            goto out;
        }
        if (n < 0) {
            snprintf(err, err_len, "%s: connection lost: %s", t->display, strerror(errno));
            goto out;
        }
        bool eof = n == 0;
        buf->len += (size_t)n;
        buf->data[buf->len] = '\0'; /* room was reserved: a C string for strstr */

        /* Anything else, e.g. the app's own service port echoing the
         * request back, fails at once rather than at the deadline. */
        size_t cmp = buf->len < 5 ? buf->len : 5;
        if (memcmp(buf->data, "HTTP/", cmp) != 0) {
            snprintf(err, err_len,
                     "%s did not answer in HTTP — is %s the app's --metrics-port, not its service "
                     "port?",
                     t->display, t->port);
            goto out;
        }
        if (header_len == 0) {
            char *blank = strstr(buf->data, "\r\n\r\n");
            char *blank_lf = strstr(buf->data, "\n\n");
            if (blank && (!blank_lf || blank < blank_lf))
                header_len = (size_t)(blank - buf->data) + 4;
            else if (blank_lf)
                header_len = (size_t)(blank_lf - buf->data) + 2;
            if (header_len) {
                int status = 0;
                if (sscanf(buf->data, "HTTP/%*d.%*d %3d", &status) != 1) {
                    snprintf(err, err_len, "%s: malformed HTTP status line", t->display);
                    goto out;
                }
                if (status != 200) {
                    const char *eol = strpbrk(buf->data, "\r\n");
                    int line_len = (int)(eol - buf->data);
                    snprintf(err, err_len,
                             "%s%s answered \"%.*s\" — is it a keel app's metrics port?",
                             t->display, t->path, line_len > 60 ? 60 : line_len, buf->data);
                    goto out;
                }
                const char *hdrs = buf->data, *hend = buf->data + header_len;
                size_t vlen;
                const char *v = find_header(hdrs, hend, "Transfer-Encoding", &vlen);
                chunked = v && vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0;
                v = find_header(hdrs, hend, "Content-Length", &vlen);
                if (v && !chunked) {
                    char *stop;
                    long cl = strtol(v, &stop, 10);
                    if (stop == v || cl < 0 || cl > (long)SCRAPE_MAX_BYTES) {
                        snprintf(err, err_len, "%s: bad Content-Length", t->display);
                        goto out;
                    }
                    content_length = cl;
                }
            }
        }
        /* Done at EOF, or earlier when the body is complete, in case the
         * server keeps the connection open despite Connection: close. */
        bool complete = false;
        if (header_len) {
            size_t have = buf->len - header_len;
            if (content_length >= 0)
                complete = have >= (size_t)content_length;
            else if (chunked)
                complete = ends_with(buf->data, buf->len, "\r\n0\r\n\r\n") ||
                           (have == 5 && ends_with(buf->data, buf->len, "0\r\n\r\n"));
        }
        if (!complete && !eof)
            continue;
        if (!header_len) {
            snprintf(err, err_len, "%s: the connection closed before the HTTP headers ended",
                     t->display);
            goto out;
        }
        char *b = buf->data + header_len;
        size_t blen = buf->len - header_len;
        if (content_length >= 0) {
            if (blen < (size_t)content_length) {
                snprintf(err, err_len, "%s: the reply was cut short", t->display);
                goto out;
            }
            blen = (size_t)content_length;
        } else if (chunked) {
            long dl = dechunk(b, blen);
            if (dl < 0) {
                snprintf(err, err_len, "%s: malformed or cut-short chunked reply", t->display);
                goto out;
            }
            blen = (size_t)dl;
        }
        *body = b;
        *body_len = blen;
        ret = 0;
        goto out;
    }
out:
    close(fd);
    return ret;
}
