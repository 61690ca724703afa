/* keel-top — fetching a /metrics page over plain HTTP/1.1.
 *
 * A client tool's needs only: blocking name resolution, one connection per
 * scrape (Connection: close), a deadline on the whole exchange, and a way for
 * a key press to interrupt a slow server.
 */
#ifndef KEEL_TOOLS_SCRAPE_H
#define KEEL_TOOLS_SCRAPE_H

#include <stdbool.h>
#include <stddef.h>

struct scrape_target {
    char host[256];        /* for getaddrinfo: no brackets */
    char port[8];          /* decimal, 1..65535 */
    char path[256];        /* "/metrics" unless the argument named one */
    char display[300];     /* "127.0.0.1:9100", "[::1]:9100": for messages */
    char host_header[300]; /* the Host: header's value */
};

/* Parses PORT (127.0.0.1), HOST:PORT or [IPV6]:PORT, each optionally written
 * as a URL (http://HOST:PORT/PATH), as the apps print it at start.
 * Returns 0, or -1 with a message naming the problem in err. */
int scrape_target_parse(const char *arg, struct scrape_target *t, char *err, size_t err_len);

/* A growable buffer for the response, reused across scrapes. */
struct scrape_buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Called when input_fd is readable during a scrape; returning true abandons
 * the scrape (the user asked to quit). */
typedef bool (*scrape_input_fn)(void *arg);

/* GETs t->path from t. On success returns 0 and points *body, *body_len at
 * the (de-chunked) body inside buf. On failure returns -1 with a message in
 * err that names the problem and, where there is one, the fix; or -2 if
 * on_input abandoned it. timeout_ms bounds the whole exchange. input_fd may
 * be -1. */
int scrape_get(const struct scrape_target *t, int timeout_ms, int input_fd,
               scrape_input_fn on_input, void *arg, struct scrape_buf *buf, const char **body,
               size_t *body_len, char *err, size_t err_len);

void scrape_buf_free(struct scrape_buf *buf);

#endif
