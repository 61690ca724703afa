/* keel-top — Prometheus text exposition format parser; see prom.h. */
#include "prom.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && is_blank(*p))
        p++;
    return p;
}

/* Copies the token [p, end) into buf as a C string; false if it does not fit
 * (no number we accept is that long) or is empty. */
static bool token_to_cstr(const char *p, const char *end, char *buf, size_t size)
{
    size_t n = (size_t)(end - p);
    if (n == 0 || n >= size)
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return true;
}

/* The value: a Go ParseFloat number, which includes "+Inf", "-Inf" and
 * "NaN"; strtod reads all of those in the C locale, which keel-top never
 * leaves (it does not call setlocale, so '.' is the decimal point). */
static bool parse_value(const char *p, const char *end, double *out)
{
    char buf[64];
    if (!token_to_cstr(p, end, buf, sizeof buf))
        return false;
    char *stop;
    errno = 0;
    double v = strtod(buf, &stop);
    /* ERANGE for a denormal or an overflow still yields a usable value
     * (tiny or +-HUGE_VAL), so it is not an error. */
    if (stop == buf || *stop != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_timestamp(const char *p, const char *end, int64_t *out)
{
    char buf[32];
    if (!token_to_cstr(p, end, buf, sizeof buf))
        return false;
    char *stop;
    errno = 0;
    long long v = strtoll(buf, &stop, 10);
    if (stop == buf || *stop != '\0' || errno == ERANGE)
        return false;
    *out = v;
    return true;
}

/* Parses label="value" pairs after the '{' at *pp up to and including '}'.
 * Advances *pp past the '}'. */
static bool parse_labels(const char **pp, const char *end, struct prom_sample *s)
{
    const char *p = *pp;
    for (;;) {
        p = skip_blanks(p, end);
        if (p < end && *p == '}')
            break; /* empty set, or a trailing comma before '}' */
        if (p >= end || !is_name_start(*p) || *p == ':')
            return false;
        const char *name = p;
        while (p < end && is_name_char(*p) && *p != ':')
            p++;
        size_t name_len = (size_t)(p - name);
        p = skip_blanks(p, end);
        if (p >= end || *p != '=')
            return false;
        p = skip_blanks(p + 1, end);
        if (p >= end || *p != '"')
            return false;
        p++;

        /* Labels past the limit are still parsed, into a scratch slot, so
         * the rest of the line is checked the same way. */
        struct prom_label scratch;
        struct prom_label *l = s->nlabels < PROM_MAX_LABELS ? &s->labels[s->nlabels] : &scratch;
        l->name = name;
        l->name_len = name_len;
        l->value_len = 0;
        l->value_truncated = false;
        bool closed = false;
        while (p < end) {
            char c = *p++;
            if (c == '"') {
                closed = true;
                break;
            }
            if (c == '\\') {
                if (p >= end)
                    return false;
                char e = *p++;
                switch (e) {
                case 'n': c = '\n'; break;
                case '\\': c = '\\'; break;
                case '"': c = '"'; break;
                default:
                    /* Not one of the three escapes the format defines:
                     * keep it verbatim rather than reject the sample, as
                     * Prometheus's own parser does. */
                    p--;
                    c = '\\';
                    break;
                }
            }
            if (l->value_len + 1 < PROM_LABEL_VALUE_MAX)
                l->value[l->value_len++] = c;
            else
                l->value_truncated = true;
        }
        if (!closed)
            return false;
        l->value[l->value_len] = '\0';
        if (l != &scratch)
            s->nlabels++;

        p = skip_blanks(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            break;
        return false;
    }
    *pp = p + 1; /* past the '}' */
    return true;
}

int prom_parse_line(const char *line, size_t len, struct prom_sample *out)
{
    const char *p = line, *end = line + len;
    if (end > p && end[-1] == '\r')
        end--;
    p = skip_blanks(p, end);
    if (p == end || *p == '#')
        return 0;

    memset(out, 0, sizeof *out);
    if (!is_name_start(*p))
        return -1;
    out->name = p;
    while (p < end && is_name_char(*p))
        p++;
    out->name_len = (size_t)(p - out->name);

    const char *after_name = p;
    p = skip_blanks(p, end);
    if (p < end && *p == '{') {
        p++;
        if (!parse_labels(&p, end, out))
            return -1;
        p = skip_blanks(p, end);
    } else if (p == after_name) {
        return -1; /* the value must be apart from a bare name */
    }
    const char *tok = p;
    while (p < end && !is_blank(*p))
        p++;
    if (!parse_value(tok, p, &out->value))
        return -1;

    p = skip_blanks(p, end);
    if (p < end) {
        tok = p;
        while (p < end && !is_blank(*p))
            p++;
        if (!parse_timestamp(tok, p, &out->timestamp_ms))
            return -1;
        out->has_timestamp = true;
        if (skip_blanks(p, end) != end)
            return -1;
    }
    return 1;
}

size_t prom_parse(const char *buf, size_t len, prom_sample_fn fn, void *arg)
{
    size_t bad = 0;
    const char *p = buf, *end = buf + len;
    struct prom_sample s;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        int r = prom_parse_line(p, (size_t)(eol - p), &s);
        if (r > 0)
            fn(&s, arg);
        else if (r < 0)
            bad++;
        p = nl ? nl + 1 : end;
    }
    return bad;
}

bool prom_name_is(const struct prom_sample *s, const char *name)
{
    size_t n = strlen(name);
    return s->name_len == n && memcmp(s->name, name, n) == 0;
}

const char *prom_label(const struct prom_sample *s, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < s->nlabels; i++) {
        const struct prom_label *l = &s->labels[i];
        if (l->name_len == n && memcmp(l->name, name, n) == 0)
            return l->value;
    }
    return NULL;
}
