/*
 * Thread-safe logging: direct on the broker thread, queued elsewhere.
 */
#include "fg_log.h"
#include "fg_shm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto_broker.h>

#define LOG_QUEUE_MAX 1024
#define LOG_LINE_MAX 1024

struct log_line {
	int level;
	char text[LOG_LINE_MAX];
};

/* The queue lives in a shared mapping, so that the worker process's lines
 * reach the broker's log too. */
struct log_queue {
	pthread_mutex_t lock;
	size_t head, count;
	uint64_t lost;
	struct log_line lines[LOG_QUEUE_MAX];
};

static struct log_queue *queue;
static pthread_t broker_thread;
static int broker_thread_set;
static int worker_process;  /* this process is the worker process */
static atomic_int detached; /* read by worker threads too */

void fg_log_init(void)
{
	broker_thread = pthread_self();
	broker_thread_set = 1;
	if (queue == NULL && (queue = fg_shm_map(sizeof(*queue))) != NULL &&
	    fg_shm_mutex_init(&queue->lock, true) != 0) {
		fg_shm_unmap(queue, sizeof(*queue));
		queue = NULL;
	}
}

void fg_log_enter_worker_process(void)
{
	worker_process = 1;
}

int fg_on_broker_thread(void)
{
	return !worker_process && broker_thread_set &&
	       pthread_equal(broker_thread, pthread_self());
}

void fg_log(int level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);

	if (detached && !worker_process) {
		fprintf(stderr, "%s\n", line);
		return;
	}
	if (fg_on_broker_thread()) {
		mosquitto_log_printf(level, "%s", line);
		return;
	}
	if (queue == NULL)
		return;
	fg_shm_lock(&queue->lock);
	if (queue->count == LOG_QUEUE_MAX) {
		queue->lost++;
	} else {
		struct log_line *slot =
		    &queue->lines[(queue->head + queue->count) % LOG_QUEUE_MAX];
		slot->level = level;
		memcpy(slot->text, line, sizeof(slot->text));
		queue->count++;
	}
	pthread_mutex_unlock(&queue->lock);
}

void fg_log_drain(void)
{
	struct log_line line;
	uint64_t lost;

	if (queue == NULL)
		return;
	for (;;) {
		/* Not held for good by a stopped worker process: next TICK. */
		if (fg_shm_lock_within(&queue->lock, 0) != 0)
			return;
		if (queue->count == 0 || queue->count > LOG_QUEUE_MAX) {
			lost = queue->lost;
			queue->lost = 0;
			queue->count = 0;
			pthread_mutex_unlock(&queue->lock);
			break;
		}
		line = queue->lines[queue->head % LOG_QUEUE_MAX];
		line.text[sizeof(line.text) - 1] = '\0';
		queue->head = (queue->head + 1) % LOG_QUEUE_MAX;
		queue->count--;
		pthread_mutex_unlock(&queue->lock);
		mosquitto_log_printf(line.level, "%s", line.text);
	}
	if (lost > 0)
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     "fleetgate: log queue full, lost=%llu "
		                     "lines from worker threads",
		                     (unsigned long long)lost);
}

void fg_log_detach(void)
{
	detached = 1;
}

void fg_log_shutdown(void)
{
	fg_log_drain();
	if (queue != NULL) {
		pthread_mutex_destroy(&queue->lock);
		fg_shm_unmap(queue, sizeof(*queue));
		queue = NULL;
	}
}

int fg_throttle_hit(struct fg_throttle *t, int64_t interval_ms,
                    uint64_t *suppressed)
{
	int64_t now = fg_mono_ms();

	if (t->last_ms != 0 && now - t->last_ms < interval_ms) {
		t->suppressed++;
		return 0;
	}
	*suppressed = t->suppressed;
	t->suppressed = 0;
	t->last_ms = now;
	return 1;
}
