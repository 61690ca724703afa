/* Prepared statements across pooled server connections: see prep.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "prep.h"

bool prep_wants(const pclient *c, uint8_t t)
{
    (void)c;
    (void)t;
    return false;
}

size_t prep_need(pclient *c, keel_conn *cc, size_t off, uint8_t t, uint32_t len)
{
    (void)c;
    (void)cc;
    (void)off;
    (void)t;
    return (size_t)len + 1;
}

int prep_rewrite(pclient *c, pserver *s, uint8_t t, uint32_t len)
{
    (void)c;
    (void)s;
    (void)t;
    (void)len;
    return -EPROTO;
}

bool prep_inspects_reply(const pserver *s, uint8_t t)
{
    (void)s;
    (void)t;
    return false;
}

int prep_reply(pserver *s, const uint8_t *m, size_t len, bool *drop)
{
    (void)s;
    (void)m;
    (void)len;
    (void)drop;
    return 0;
}

void prep_server_reset(pserver *s)
{
    (void)s;
}

void prep_server_free(pserver *s)
{
    (void)s;
}

void prep_client_free(pclient *c)
{
    (void)c;
}
