/* keel — a shared-nothing, per-core runtime: one pinned io_uring loop per
 * core, futures and continuations, lock-free queues between cores.
 * Include this header to get the whole public API. */
#ifndef KEEL_KEEL_H
#define KEEL_KEEL_H

#include <keel/error.h>
#include <keel/future.h>
#include <keel/runtime.h>
#include <keel/net.h>
#include <keel/sched.h>
#include <keel/disk.h>

#define KEEL_VERSION "0.1.0"

#endif
