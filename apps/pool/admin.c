/* keel-pool's admin console: the virtual database "pgbouncer". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

keel_future *admin_query(pclient *c, const char *sql, pgbuf *out)
{
    (void)c;
    (void)sql;
    pgbuf_error(out, 'E', "ERROR", "08P01", "not yet");
    pgbuf_ready(out, 'I');
    return keel_make_ready(0);
}

keel_future *admin_reload(void)
{
    return keel_make_ready(0);
}

void admin_pause_all(bool pause)
{
    (void)pause;
}

void admin_shutdown_when_idle(void)
{
    keel_stop();
}
