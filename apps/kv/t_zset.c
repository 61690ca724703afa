/* zset commands and the zset object (issue 5: being written). */
#include "kv.h"

static void obj_free(void *obj)
{
    (void)obj;
}

static void *obj_dup(const void *obj)
{
    (void)obj;
    return NULL;
}

static size_t obj_mem(const void *obj)
{
    (void)obj;
    return 0;
}

static const char *obj_encoding(const void *obj)
{
    (void)obj;
    return "unknown";
}

static size_t obj_len(const void *obj)
{
    (void)obj;
    return 0;
}

const kv_type_ops kv_zset_type = {"zset", obj_free, obj_dup, obj_mem, obj_encoding, obj_len};

const kv_command kv_zset_commands[] = {
    {NULL},
};
