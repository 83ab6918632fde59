/*
 * Logging that is safe from any thread.
 *
 * The broker's log function may only be called from the broker thread.
 * fg_log() called on the broker thread logs at once; called on a worker
 * thread it queues the line, and fg_log_drain() (run on TICK) writes the
 * queue out. The queue is bounded; lines that do not fit are counted and
 * the count is logged when the queue drains.
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <mosquitto.h>

#include "fg_common.h"

/* Record the calling thread as the broker thread. */
FG_API void fg_log_init(void);

/* Log one line. level is a MOSQ_LOG_* value; the line carries no prefix of
 * its own, so callers start fmt with theirs ("fleetgate-auth: ..."). */
FG_API void fg_log(int level, const char *fmt, ...) FG_PRINTF(2, 3);

/* Write queued lines; broker thread only. */
FG_API void fg_log_drain(void);

/* Write what is queued and free the queue; once no worker thread runs. */
FG_API void fg_log_shutdown(void);

/* From now on write to stderr instead of the broker's log: for use while
 * the process exits, when the broker's logging is already torn down. */
FG_API void fg_log_detach(void);

/* In the worker process (forked from the broker): every line is queued
 * for the broker's TICK, none is written here. */
FG_API void fg_log_enter_worker_process(void);
/* True on the thread that called fg_log_init(), in the broker process. */
FG_API int fg_on_broker_thread(void);

/*
 * A throttle for a repeated warning: fg_throttle_hit() returns 1 when the
 * line should be written now (at most once per interval_ms) and reports in
 * *suppressed how many hits were swallowed since the last written one.
 */
struct fg_throttle {
	int64_t last_ms;
	uint64_t suppressed;
};
FG_API int fg_throttle_hit(struct fg_throttle *t, int64_t interval_ms,
                           uint64_t *suppressed);

#endif
