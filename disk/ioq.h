/* disk/ internals shared by file.c and ioq.c. */
#ifndef KEEL_DISK_IOQ_H
#define KEEL_DISK_IOQ_H

#include "internal.h"

/* Queues fo in its class, or sends it to the device now if there is room
 * and nothing waits. */
void keel__ioq_submit(keel__shard *s, keel__fop *fo);
/* fo finished (its last completion): frees its room and dispatches what
 * waits. Call before resolving fo's future. */
void keel__ioq_done(keel__shard *s, const keel__fop *fo);
/* Sends fo to the device (file.c): the ring, or the blocking pool. */
void keel__fop_dispatch(keel__shard *s, keel__fop *fo);
uint8_t keel__ioq_class_index(const keel_io_class *c);

#endif
