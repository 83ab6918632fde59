/*
 * A Mosquitto plugin that only starts one idle thread: the fan-out
 * benchmark's "thread" broker. The thread takes a descriptor table of its
 * own and keeps none of the broker's descriptors, as fleetgate's workers
 * do (fg_worker_begin), then sleeps until cleanup. It registers no
 * callback, so the broker decides everything as the bare broker does.
 * What it costs against the bare broker is what a second thread in the
 * process costs (glibc's multi-threaded paths): the floor under any
 * plugin with a worker thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static pthread_t idle_thread;
static int stop_pipe[2] = {-1, -1};

static void *idle_main(void *arg)
{
	int keep = stop_pipe[0];
	char c;

	(void)arg;
	(void)pthread_setname_np(pthread_self(), "fg-idle");
	if (unshare(CLONE_FILES) == 0) {
		if (keep > 3)
			(void)close_range(3, (unsigned)keep - 1, 0);
		(void)close_range((unsigned)keep + 1, ~0U, 0);
	}
	while (read(keep, &c, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

int mosquitto_plugin_version(int count, const int *versions)
{
	for (int i = 0; i < count; i++)
		if (versions[i] == 5)
			return 5;
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **userdata,
                          struct mosquitto_opt *opts, int nopts)
{
	(void)id;
	(void)opts;
	(void)nopts;
	*userdata = NULL;
	if (pipe2(stop_pipe, O_CLOEXEC) != 0 ||
	    pthread_create(&idle_thread, NULL, idle_main, NULL) != 0) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "fg-threadbase: %s",
		                     strerror(errno));
		return MOSQ_ERR_UNKNOWN;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, "fg-threadbase: one idle thread");
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts,
                             int nopts)
{
	(void)userdata;
	(void)opts;
	(void)nopts;
	if (write(stop_pipe[1], "x", 1) == 1)
		pthread_join(idle_thread, NULL);
	close(stop_pipe[0]);
	close(stop_pipe[1]);
	return MOSQ_ERR_SUCCESS;
}
