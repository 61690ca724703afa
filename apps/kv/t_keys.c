/* Generic key commands. */
#include <stdlib.h>
#include <string.h>

#include "kv.h"

static void cmd_del(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++)
        n += kv_del(c, &argv[i]);
    resp_add_int(c->out, n);
}

static void cmd_exists(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++)
        n += kv_lookup(c, &argv[i]) != NULL;
    resp_add_int(c->out, n);
}

const kv_command kv_key_commands[] = {
    {"del", -2, KV_CMD_WRITE, 1, -1, 1, cmd_del, NULL, "@keyspace @write @slow"},
    {"unlink", -2, KV_CMD_WRITE | KV_CMD_FAST, 1, -1, 1, cmd_del, NULL, "@keyspace @write @fast"},
    {"exists", -2, KV_CMD_READONLY | KV_CMD_FAST, 1, -1, 1, cmd_exists, NULL,
     "@keyspace @read @fast"},
    {NULL},
};
