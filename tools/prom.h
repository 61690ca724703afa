/* keel-top — a parser for the Prometheus text exposition format (0.0.4).
 *
 * The input comes from the network, so it is untrusted: the parser works on
 * (pointer, length) ranges, never reads past them, never needs a NUL
 * terminator, allocates nothing, and rejects a malformed line without
 * affecting the lines around it.
 */
#ifndef KEEL_TOOLS_PROM_H
#define KEEL_TOOLS_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* keel's series carry at most shard, group and le, keel_info three more:
 * labels past this many are parsed and dropped. */
#define PROM_MAX_LABELS 8
/* Longer label values are truncated (value_truncated is set). */
#define PROM_LABEL_VALUE_MAX 128

struct prom_label {
    const char *name; /* points into the input; not NUL-terminated */
    size_t name_len;
    char value[PROM_LABEL_VALUE_MAX]; /* unescaped, NUL-terminated */
    size_t value_len;
    bool value_truncated;
};

struct prom_sample {
    const char *name; /* points into the input; not NUL-terminated */
    size_t name_len;
    struct prom_label labels[PROM_MAX_LABELS];
    int nlabels;
    double value; /* may be NaN or +-Inf, as the format allows */
    bool has_timestamp;
    int64_t timestamp_ms;
};

/* Parses one line, without its '\n' (a trailing '\r' is tolerated).
 * Returns 1 and fills *out for a sample, 0 for a blank line or a comment
 * (# HELP, # TYPE, # EOF, any '#' line), -1 for a malformed line, in which
 * case *out is unspecified. */
int prom_parse_line(const char *line, size_t len, struct prom_sample *out);

typedef void (*prom_sample_fn)(const struct prom_sample *s, void *arg);

/* Parses a whole exposition, calling fn for each sample in order.
 * Returns the number of malformed lines skipped. */
size_t prom_parse(const char *buf, size_t len, prom_sample_fn fn, void *arg);

/* True if the sample's metric name is exactly name. */
bool prom_name_is(const struct prom_sample *s, const char *name);

/* The value of the sample's label called name, or NULL if it has none. */
const char *prom_label(const struct prom_sample *s, const char *name);

#endif
