/*
 * Paced client loops for the test and benchmark tools: each pass reads
 * what the sockets hold and never waits on them, then sleeps until a
 * fixed time after the pass began. A client that sleeps on its socket is
 * woken by the broker's write on loopback, inside the broker's own system
 * call, and the broker pays for it.
 */
#ifndef FG_PACE_H
#define FG_PACE_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>

static inline int64_t fg_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Read packets until the socket (and the TLS layer) holds no more, or max
 * of them; mosquitto_loop_read reads one packet and leaves errno at EAGAIN
 * once there is nothing more. Returns the last mosquitto_loop_read code. */
static inline int fg_read_ready(struct mosquitto *mosq, int max)
{
	int rc = MOSQ_ERR_SUCCESS;

	for (int i = 0; i < max && rc == MOSQ_ERR_SUCCESS; i++) {
		errno = 0;
		rc = mosquitto_loop_read(mosq, 1);
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
	}
	return rc;
}

/* Sleep until when (CLOCK_MONOTONIC, ns), or a signal. */
static inline void fg_sleep_until(int64_t when)
{
	struct timespec ts = {.tv_sec = (time_t)(when / 1000000000),
	                      .tv_nsec = (long)(when % 1000000000)};

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* The start of the pass after the one that began at *next: pace_us
 * later, or now when this pass took longer. Sleeps until then, or until
 * limit when that comes first (0: no limit). */
static inline void fg_pace_wait(int64_t *next, int pace_us, int64_t limit)
{
	int64_t now = fg_mono_ns();

	*next += (int64_t)pace_us * 1000;
	if (*next < now)
		*next = now;
	fg_sleep_until(limit > 0 && limit < *next ? limit : *next);
}

#endif
