/* keel-top's Prometheus text parser (prom.c): the format's corner cases
 * parse as the format says, and garbage, random or mutated from a real
 * scrape, never makes it read outside its input or return nonsense.
 * Built and run by tests/integ/cmake/keel_top.cmake; under the sanitizer
 * build, each input sits in a buffer of exactly its size, so ASan catches
 * a one-byte overread. */
#include "prom.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

__attribute__((format(printf, 3, 4))) static void check(bool ok, int line, const char *fmt, ...)
{
    if (ok)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL (prom_test.c:%d): ", line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}
#define CHECK(cond, ...) check((cond), __LINE__, __VA_ARGS__)

/* Parses s from a heap copy of exactly its length (no NUL after it). */
static int parse(const char *s, struct prom_sample *out)
{
    size_t n = strlen(s);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, s, n);
    int r = prom_parse_line(copy, n, out);
    /* Names point into the input: keep what the checks need, then free. */
    static char name[256];
    if (r == 1) {
        snprintf(name, sizeof name, "%.*s", (int)out->name_len, out->name);
        out->name = name;
        for (int i = 0; i < out->nlabels; i++) {
            static char lnames[PROM_MAX_LABELS][64];
            snprintf(lnames[i], sizeof lnames[i], "%.*s", (int)out->labels[i].name_len,
                     out->labels[i].name);
            out->labels[i].name = lnames[i];
        }
    }
    free(copy);
    return r;
}

static void well_formed_lines_parse_as_the_format_says(void)
{
    struct prom_sample s;
    CHECK(parse("keel_shards 2", &s) == 1 && prom_name_is(&s, "keel_shards") && s.value == 2 &&
              s.nlabels == 0 && !s.has_timestamp,
          "a bare sample");
    CHECK(parse("a{b=\"c\"} 2.5 1700000000000", &s) == 1 && s.value == 2.5 && s.has_timestamp &&
              s.timestamp_ms == 1700000000000LL && strcmp(prom_label(&s, "b"), "c") == 0,
          "labels and a timestamp");
    CHECK(parse("a{b=\"x\\\"y\\\\z\\n\"} +Inf", &s) == 1 && isinf(s.value) && s.value > 0 &&
              strcmp(prom_label(&s, "b"), "x\"y\\z\n") == 0,
          "escaped label value and +Inf");
    CHECK(parse("a{b=\"\\q\"} -Inf", &s) == 1 && isinf(s.value) && s.value < 0 &&
              strcmp(prom_label(&s, "b"), "\\q") == 0,
          "an unknown escape is kept verbatim");
    CHECK(parse("a{} NaN", &s) == 1 && isnan(s.value) && s.nlabels == 0, "empty labels, NaN");
    CHECK(parse("a{b=\"1\",c=\"2\",} 1e-06", &s) == 1 && s.nlabels == 2 && s.value == 1e-6,
          "trailing comma, exponent");
    CHECK(parse("a{b=\"c\"}3", &s) == 1 && s.value == 3, "no blank after the label set");
    CHECK(parse("  a { b = \"c\" , d=\"\" }\t7 \r", &s) == 1 && s.value == 7 &&
              strcmp(prom_label(&s, "d"), "") == 0 && prom_label(&s, "e") == NULL,
          "blanks around tokens, CR at the end");
    CHECK(parse("keel_x:y_z 0", &s) == 1 && prom_name_is(&s, "keel_x:y_z"), "colon in a name");
    CHECK(parse("", &s) == 0 && parse("   ", &s) == 0 && parse("# HELP a b", &s) == 0 &&
              parse("# TYPE a counter", &s) == 0 && parse("# EOF", &s) == 0 &&
              parse("  # indented comment", &s) == 0,
          "blank and comment lines");

    char many[512] = "a{";
    for (int i = 0; i < PROM_MAX_LABELS + 4; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "l%d=\"%d\",", i, i);
    strcat(many, "} 1");
    CHECK(parse(many, &s) == 1 && s.nlabels == PROM_MAX_LABELS && prom_label(&s, "l0") &&
              !prom_label(&s, "l11"),
          "labels past the limit are dropped, the sample kept");

    char longv[600];
    snprintf(longv, sizeof longv, "a{b=\"%0400d\"} 1", 0);
    CHECK(parse(longv, &s) == 1 && s.labels[0].value_truncated &&
              s.labels[0].value_len == PROM_LABEL_VALUE_MAX - 1 &&
              strlen(s.labels[0].value) == PROM_LABEL_VALUE_MAX - 1,
          "a long label value is truncated");
}

static void malformed_lines_are_rejected(void)
{
    static const char *const bad[] = {
        "a",
        "a ",
        "a{b=\"c\"}",
        "a{b=\"c\" 1",
        "a{b=c} 1",
        "{b=\"c\"} 1",
        "a 1 2 3",
        "a 1x",
        "a{b=\"c\\\"} 1",
        "1a 2",
        "a 1 ts",
        "a{=\"c\"} 1",
        "a{b\"c\"} 1",
        "a{b=\"c\"d=\"e\"} 1",
        "a{b=\"c\"}} 1",
        "a-b 1",
        "a{:b=\"c\"} 1",
        "a 0x",
        "a{b=\"c\\",
    };
    struct prom_sample s;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(parse(bad[i], &s) == -1, "'%s' is malformed", bad[i]);
}

struct counts {
    const char *buf;
    size_t len;
    size_t samples;
    double sum;
};

/* Every sample a parse hands out must be sane, whatever the input was. */
static void on_sample(const struct prom_sample *s, void *arg)
{
    struct counts *c = arg;
    c->samples++;
    const char *end = c->buf + c->len;
    CHECK(s->name >= c->buf && s->name_len > 0 && s->name + s->name_len <= end,
          "name inside the input");
    CHECK(s->nlabels >= 0 && s->nlabels <= PROM_MAX_LABELS, "label count in range");
    for (int i = 0; i < s->nlabels; i++) {
        const struct prom_label *l = &s->labels[i];
        CHECK(l->name >= c->buf && l->name_len > 0 && l->name + l->name_len <= end,
              "label name inside the input");
        CHECK(l->value_len < PROM_LABEL_VALUE_MAX && l->value[l->value_len] == '\0',
              "label value terminated");
    }
    if (!isnan(s->value))
        c->sum += s->value;
}

static void whole_expositions_count_samples_and_bad_lines(void)
{
    static const char text[] = "# HELP keel_tasks_total Tasks\n"
                               "# TYPE keel_tasks_total counter\n"
                               "keel_tasks_total{shard=\"0\"} 3\r\n"
                               "keel_tasks_total{shard=\"1\"} 4\n"
                               "garbage here\n"
                               "\n"
                               "keel_shards 2"; /* no final newline */
    char *buf = malloc(sizeof text - 1);
    memcpy(buf, text, sizeof text - 1);
    struct counts c = {buf, sizeof text - 1, 0, 0};
    size_t bad = prom_parse(buf, sizeof text - 1, on_sample, &c);
    CHECK(bad == 1 && c.samples == 3 && c.sum == 9, "3 samples, 1 bad line (got %zu, %zu)",
          c.samples, bad);
    free(buf);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void garbage_never_breaks_the_parser(void)
{
    /* The format's own characters, so that random input often gets deep
     * into the label and value code rather than failing at the name. */
    static const char alphabet[] = "{}=\"\\,# \n\t\r+-.eEInfNa0123456789_:kel\x01\xff";
    static const char seed[] =
        "# HELP keel_cpu_seconds_total CPU\n# TYPE keel_cpu_seconds_total counter\n"
        "keel_cpu_seconds_total{shard=\"0\"} 0.25\n"
        "keel_sched_group_wait_seconds_bucket{shard=\"1\",group=\"main\",le=\"+Inf\"} 3\n"
        "keel_info{app=\"keel-echo\",backend=\"io_uring\",version=\"0.1.0\"} 1 1700000000000\n"
        "keel_x{a=\"\\\\\\\"\\n\"} NaN\n";
    size_t samples = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t len;
        char *buf;
        if (iter % 2 == 0) {
            len = next_rand() % 300;
            buf = malloc(len ? len : 1);
            for (size_t i = 0; i < len; i++)
                buf[i] = next_rand() % 4 == 0 ? (char)next_rand()
                                              : alphabet[next_rand() % (sizeof alphabet - 1)];
        } else {
            /* A real-looking scrape with a few bytes changed and cut short. */
            len = sizeof seed - 1 - next_rand() % 40;
            buf = malloc(len);
            memcpy(buf, seed, len);
            for (int m = 0, n = 1 + (int)(next_rand() % 4); m < n; m++)
                buf[next_rand() % len] = next_rand() % 2
                                             ? (char)next_rand()
                                             : alphabet[next_rand() % (sizeof alphabet - 1)];
        }
        struct counts c = {buf, len, 0, 0};
        size_t bad = prom_parse(buf, len, on_sample, &c);
        size_t lines = 1;
        for (size_t i = 0; i < len; i++)
            lines += buf[i] == '\n';
        CHECK(c.samples + bad <= lines, "no more samples and bad lines than lines");
        samples += c.samples;
        free(buf);
        if (failures > 20)
            break;
    }
    CHECK(samples > 1000, "the mutated inputs still yield samples (%zu)", samples);
}

int main(void)
{
    well_formed_lines_parse_as_the_format_says();
    malformed_lines_are_rejected();
    whole_expositions_count_samples_and_bad_lines();
    garbage_never_breaks_the_parser();
    if (failures) {
        fprintf(stderr, "prom_test: %d failure(s)\n", failures);
        return 1;
    }
    printf("prom_test: OK\n");
    return 0;
}
