/*
 * Thread-safe logging: direct on the broker thread, queued elsewhere.
 */
#include "fg_log.h"

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

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_line *log_queue; /* ring of LOG_QUEUE_MAX lines */
static size_t log_head, log_count;
static uint64_t log_lost;
static pthread_t broker_thread;
static int broker_thread_set;
static atomic_int detached; /* read by worker threads too */

void fg_log_init(void)
{
	broker_thread = pthread_self();
	broker_thread_set = 1;
}

int fg_on_broker_thread(void)
{
	return broker_thread_set &&
	       pthread_equal(broker_thread, pthread_self());
}

void fg_log(int level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);

	if (detached) {
		fprintf(stderr, "%s\n", line);
		return;
	}
	if (fg_on_broker_thread()) {
		mosquitto_log_printf(level, "%s", line);
		return;
	}

	pthread_mutex_lock(&log_lock);
	if (log_queue == NULL)
		log_queue = calloc(LOG_QUEUE_MAX, sizeof(*log_queue));
	if (log_queue == NULL || log_count == LOG_QUEUE_MAX) {
		log_lost++;
	} else {
		struct log_line *slot =
		    &log_queue[(log_head + log_count) % LOG_QUEUE_MAX];
		slot->level = level;
		memcpy(slot->text, line, sizeof(slot->text));
		log_count++;
	}
	pthread_mutex_unlock(&log_lock);
}

void fg_log_drain(void)
{
	struct log_line line;
	uint64_t lost;

	for (;;) {
		pthread_mutex_lock(&log_lock);
		if (log_count == 0) {
			lost = log_lost;
			log_lost = 0;
			pthread_mutex_unlock(&log_lock);
			break;
		}
		line = log_queue[log_head];
		log_head = (log_head + 1) % LOG_QUEUE_MAX;
		log_count--;
		pthread_mutex_unlock(&log_lock);
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
	pthread_mutex_lock(&log_lock);
	free(log_queue);
	log_queue = NULL;
	log_head = 0;
	log_count = 0;
	pthread_mutex_unlock(&log_lock);
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
