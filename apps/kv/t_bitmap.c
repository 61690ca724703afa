/* Bitmap commands (issue 5: being written). */
#include "kv.h"

const kv_command kv_bitmap_commands[] = {
    {NULL},
};
