/* Server and connection commands that need no client state. */
#include "kv.h"

static void cmd_ping(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc == 1)
        resp_add_status(c->out, "PONG");
    else
        resp_add_bulk(c->out, argv[1].ptr, argv[1].len);
}

static void cmd_echo(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    resp_add_bulk(c->out, argv[1].ptr, argv[1].len);
}

const kv_command kv_server_commands[] = {
    {"ping", -1, KV_CMD_FAST | KV_CMD_SENTINEL, 0, 0, 0, cmd_ping, NULL, "@fast @connection"},
    {"echo", 2, KV_CMD_FAST, 0, 0, 0, cmd_echo, NULL, "@fast @connection"},
    {"dbsize", 1, KV_CMD_READONLY | KV_CMD_FAST | KV_CMD_CONN, 0, 0, 0, NULL, NULL,
     "@keyspace @read @fast"},
    {"quit", -1, KV_CMD_CONN, 0, 0, 0, NULL, NULL, "@fast @connection"},
    {"command", -1, KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_CONN, 0, 0, 0, NULL, NULL,
     "@slow @connection"},
    {NULL},
};
