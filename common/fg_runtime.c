/*
 * The process-wide runtime: wiring of the loader, the audit writer and
 * the registry that the plugins read.
 */
#include "fg_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mosquitto_broker.h>

#include "fg_log.h"
#include "fg_shm.h"
#include "fg_sync.h"

#define LOG_PREFIX "fleetgate:"

/* The worker process's arena: address space reserved, pages only as
 * registries use them; less where the kernel will not map that much. */
#define ARENA_BYTES ((size_t)16 << 30)
#define ARENA_MIN_BYTES ((size_t)256 << 20)
/* How often TICK looks whether the worker process is still there. */
#define REAP_INTERVAL_MS 100
/* How long a stop waits for the worker process (the audit writer takes
 * up to 4 s to flush) before it is killed. */
#define WORKER_STOP_MS 8000
/* Restarts of a worker process that keeps dying back off up to this. */
#define RESTART_MAX_MS 30000
#define OLD_ARENAS_MAX 8

struct fg_runtime {
	int refs;
	struct fg_runtime_config given; /* what the plugins' options said */
	struct fg_runtime_config cfg;   /* effective values */
	struct fg_sync *sync;
	struct fg_audit *audit;
	struct fg_registry *registry;
	struct fg_withdrawn *withdrawn; /* since registry was read, or NULL */
	uint64_t generation;
	uint64_t withdrawn_generation;
	struct fg_clients *clients;
	int64_t last_tick_ms;
	fg_audit_sink_fn sink; /* a durable path for audit events, or NULL */
	void *sink_ctx;

	/* FG_WORKERS_PROCESS: the worker process, the write end of its
	 * control pipe (it stops when the pipe closes), the arena it builds
	 * registries in, and arenas of worker processes that died, unmapped
	 * once the registry in use is no longer in them. */
	pid_t worker;
	int worker_ctl;
	struct fg_arena *arena;
	struct fg_arena *old_arenas[OLD_ARENAS_MAX + 1];
	int nold_arenas;
	int64_t next_reap_ms, restart_at_ms, restart_delay_ms, started_ms;
};

static pthread_mutex_t runtime_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fg_runtime *runtime;

#define CFG_OFF(f) offsetof(struct fg_runtime_config, f)

static const char *const worker_choices[] = {"process", "thread", NULL};

static const struct fg_opt_spec runtime_specs[] = {
    {"db_conninfo", FG_OPT_STRING, CFG_OFF(db), 0, 0, NULL},
    {"snapshot_file", FG_OPT_STRING, CFG_OFF(snapshot_file), 0, 0, NULL},
    {"broker_id", FG_OPT_STRING, CFG_OFF(broker_id), 0, 0, NULL},
    {"statement_timeout_ms", FG_OPT_INT, CFG_OFF(statement_timeout_ms), 100,
     600000, NULL},
    {"connect_timeout_s", FG_OPT_INT, CFG_OFF(connect_timeout_s), 1, 600, NULL},
    {"retry_max_ms", FG_OPT_INT, CFG_OFF(retry_max_ms), 100, 600000, NULL},
    {"audit_queue_size", FG_OPT_INT, CFG_OFF(audit_queue_size), 16, 10000000,
     NULL},
    {"audit_batch_size", FG_OPT_INT, CFG_OFF(audit_batch_size), 1, 10000, NULL},
    {"audit_flush_ms", FG_OPT_INT, CFG_OFF(audit_flush_ms), 10, 60000, NULL},
    {"last_seen_interval_s", FG_OPT_INT, CFG_OFF(last_seen_interval_s), 1,
     86400, NULL},
    {"registry_reload_s", FG_OPT_INT, CFG_OFF(registry_reload_s), 5, 86400,
     NULL},
    {"workers", FG_OPT_ENUM, CFG_OFF(workers), 0, 0, worker_choices},
};
#define NSPECS (sizeof(runtime_specs) / sizeof(runtime_specs[0]))

void fg_runtime_config_init(struct fg_runtime_config *cfg)
{
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < NSPECS; i++) {
		if (runtime_specs[i].type == FG_OPT_INT ||
		    runtime_specs[i].type == FG_OPT_ENUM)
			*(int *)(void *)((char *)cfg +
			                 runtime_specs[i].offset) = -1;
	}
}

struct fg_opt_table fg_runtime_opt_table(struct fg_runtime_config *cfg)
{
	struct fg_opt_table t = {runtime_specs, NSPECS, cfg};

	return t;
}

void fg_runtime_config_free(struct fg_runtime_config *cfg)
{
	struct fg_opt_table t = fg_runtime_opt_table(cfg);

	fg_opts_free(&t);
}

static int set_default_str(char **field, const char *v)
{
	if (*field != NULL)
		return 0;
	*field = strdup(v);
	return *field ? 0 : -1;
}

static void set_default_int(int *field, int v)
{
	if (*field < 0)
		*field = v;
}

/* Copy cfg into out, filling what was not given with defaults. */
static int effective_config(const struct fg_runtime_config *cfg,
                            struct fg_runtime_config *out)
{
	char host[256];
	size_t i;

	*out = *cfg;
	out->db = NULL;
	out->snapshot_file = NULL;
	out->broker_id = NULL;
	for (i = 0; i < NSPECS; i++) {
		if (runtime_specs[i].type != FG_OPT_STRING)
			continue;
		const char *src =
		    *(char *const *)(const void *)((const char *)cfg +
		                                   runtime_specs[i].offset);
		char **dst =
		    (char **)(void *)((char *)out + runtime_specs[i].offset);
		if (src != NULL && (*dst = strdup(src)) == NULL)
			return -1;
	}
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "broker");
	host[sizeof(host) - 1] = '\0';
	if (set_default_str(&out->db, "") != 0 ||
	    set_default_str(&out->broker_id, host) != 0)
		return -1;
	set_default_int(&out->statement_timeout_ms, 5000);
	set_default_int(&out->connect_timeout_s, 5);
	set_default_int(&out->retry_max_ms, 5000);
	set_default_int(&out->audit_queue_size, 65536);
	set_default_int(&out->audit_batch_size, 500);
	set_default_int(&out->audit_flush_ms, 200);
	set_default_int(&out->last_seen_interval_s, 30);
	set_default_int(&out->registry_reload_s, 300);
	set_default_int(&out->workers, FG_WORKERS_PROCESS);
	return 0;
}

/* An option two plugins both give must have the same value. */
static int check_same(const struct fg_runtime_config *given,
                      const struct fg_runtime_config *earlier, char *err,
                      size_t errlen)
{
	size_t i;

	for (i = 0; i < NSPECS; i++) {
		const char *g = (const char *)given + runtime_specs[i].offset;
		const char *e = (const char *)earlier + runtime_specs[i].offset;
		int differs;

		if (runtime_specs[i].type == FG_OPT_STRING) {
			const char *gs = *(char *const *)(const void *)g;
			const char *es = *(char *const *)(const void *)e;
			differs =
			    gs != NULL && es != NULL && strcmp(gs, es) != 0;
		} else {
			int gi = *(const int *)(const void *)g;
			int ei = *(const int *)(const void *)e;
			differs = gi >= 0 && ei >= 0 && gi != ei;
		}
		if (differs) {
			fg_seterr(err, errlen,
			          "plugin_opt_%s: differs from the value an "
			          "earlier fleetgate plugin in this broker "
			          "gave",
			          runtime_specs[i].key);
			return -1;
		}
	}
	return 0;
}

static void load_snapshot(struct fg_runtime *rt)
{
	char err[FG_ERRLEN];
	const char *path = rt->cfg.snapshot_file;

	if (path == NULL) {
		fg_log(MOSQ_LOG_WARNING, LOG_PREFIX
		       " no plugin_opt_snapshot_file: if the "
		       "database is unreachable at start, nobody is admitted");
		return;
	}
	if (access(path, F_OK) != 0 && errno == ENOENT) {
		fg_log(MOSQ_LOG_NOTICE,
		       LOG_PREFIX
		       " no registry snapshot at %s yet: nobody is "
		       "admitted until the registry is read from the database",
		       path);
		return;
	}
	rt->registry = fg_registry_load(path, err, sizeof(err));
	if (rt->registry == NULL) {
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX
		       " registry snapshot refused: %s; nobody is "
		       "admitted until the registry is read from the database",
		       err);
		return;
	}
	rt->generation++;
	fg_log(MOSQ_LOG_NOTICE,
	       LOG_PREFIX
	       " using registry snapshot file=%s devices=%zu "
	       "certificates=%zu accounts=%zu read_from_database_at=%lld "
	       "until the database answers",
	       path, fg_registry_device_count(rt->registry),
	       fg_registry_cert_count(rt->registry),
	       fg_registry_account_count(rt->registry),
	       (long long)fg_registry_loaded_at(rt->registry));
}

/* Is reg in memory of a worker process (live or dead)? */
static bool in_arena(const struct fg_runtime *rt, const void *reg)
{
	if (fg_arena_contains(rt->arena, reg))
		return true;
	for (int i = 0; i < rt->nold_arenas; i++)
		if (fg_arena_contains(rt->old_arenas[i], reg))
			return true;
	return false;
}

/* A registry the broker thread no longer reads: the worker process frees
 * what it built; a dead one's goes with its arena. */
static void retire_registry(struct fg_runtime *rt, struct fg_registry *reg)
{
	if (rt->arena == NULL || fg_arena_contains(rt->arena, reg))
		fg_sync_retire(rt->sync, reg);
	else if (!in_arena(rt, reg))
		fg_registry_free(reg); /* read from the snapshot file here */
}

/* Unmap the arenas of dead worker processes that hold nothing in use. */
static void release_old_arenas(struct fg_runtime *rt)
{
	int i = 0;

	while (i < rt->nold_arenas) {
		if (fg_arena_contains(rt->old_arenas[i], rt->registry)) {
			i++;
			continue;
		}
		fg_arena_destroy(rt->old_arenas[i]);
		rt->old_arenas[i] = rt->old_arenas[--rt->nold_arenas];
	}
}

/*
 * The worker process: the loader and audit writer threads, and this
 * thread waiting for the control pipe to close (the broker stopping or
 * gone), then stopping them as the broker would have.
 */
static void __attribute__((noreturn))
worker_main(struct fg_runtime *rt, int ctl)
{
	char err[FG_ERRLEN];
	int keep[5];
	struct pollfd pfd = {.fd = ctl, .events = POLLIN};
	char c;

	/* Stopping is the broker's to decide: a terminal's ^C or a hangup
	 * of the session reaches it too, and it closes the pipe. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	fg_log_enter_worker_process();
	fg_mem_use(rt->arena);
	keep[0] = ctl;
	fg_sync_fds(rt->sync, &keep[1]);
	fg_audit_fds(rt->audit, &keep[3]);
	fg_worker_begin("fg-worker", keep, 5);
	if (fg_sync_run(rt->sync, err, sizeof(err)) != 0 ||
	    fg_audit_run(rt->audit, err, sizeof(err)) != 0) {
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " worker process: %s", err);
		_exit(1);
	}
	for (;;) {
		if (poll(&pfd, 1, -1) < 0 && errno == EINTR)
			continue;
		if (read(ctl, &c, 1) <= 0)
			break;
	}
	fg_sync_halt(rt->sync);
	fg_audit_halt(rt->audit);
	_exit(0);
}

static int fork_worker(struct fg_runtime *rt, char *err, size_t errlen)
{
	int ctl[2];
	pid_t pid;

	if (pipe2(ctl, O_CLOEXEC) != 0) {
		fg_seterr(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		fg_seterr(err, errlen, "cannot start the worker process: %s",
		          strerror(errno));
		close(ctl[0]);
		close(ctl[1]);
		return -1;
	}
	if (pid == 0) {
		close(ctl[1]);
		worker_main(rt, ctl[0]);
	}
	close(ctl[0]);
	rt->worker = pid;
	rt->worker_ctl = ctl[1];
	rt->started_ms = fg_mono_ms();
	rt->next_reap_ms = rt->started_ms + REAP_INTERVAL_MS;
	return 0;
}

/* Close the control pipe and wait for the worker process to finish what
 * it was doing (killing it after WORKER_STOP_MS). */
static void stop_worker_process(struct fg_runtime *rt)
{
	int64_t deadline = fg_mono_ms() + WORKER_STOP_MS;
	int st;

	if (rt->worker <= 0)
		return;
	close(rt->worker_ctl);
	rt->worker_ctl = -1;
	while (waitpid(rt->worker, &st, WNOHANG) == 0) {
		if (fg_mono_ms() > deadline) {
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " the worker process did not stop "
			                  "within %d ms; killing it",
			       WORKER_STOP_MS);
			kill(rt->worker, SIGKILL);
			(void)waitpid(rt->worker, &st, 0);
			break;
		}
		usleep(5000);
	}
	rt->worker = 0;
}

static void stop_workers(struct fg_runtime *rt)
{
	if (rt->arena == NULL) {
		fg_sync_stop(rt->sync);
		fg_audit_stop(rt->audit);
	} else {
		stop_worker_process(rt);
		fg_log_drain();
		fg_sync_destroy(rt->sync);
		fg_audit_destroy(rt->audit);
		/* Its arena outlives it while the registry in use is there
		 * (watch_worker leaves room for this one). */
		if (fg_arena_contains(rt->arena, rt->registry))
			rt->old_arenas[rt->nold_arenas++] = rt->arena;
		else
			fg_arena_destroy(rt->arena);
		rt->arena = NULL;
	}
	rt->sync = NULL;
	rt->audit = NULL;
}

static void fill_settings(const struct fg_runtime *rt,
                          struct fg_sync_settings *ss,
                          struct fg_audit_settings *as)
{
	memset(ss, 0, sizeof(*ss));
	ss->pg.conninfo = rt->cfg.db;
	ss->pg.application_name = "fleetgate-registry";
	ss->pg.connect_timeout_s = rt->cfg.connect_timeout_s;
	ss->pg.statement_timeout_ms = rt->cfg.statement_timeout_ms;
	ss->snapshot_file = rt->cfg.snapshot_file;
	ss->retry_max_ms = rt->cfg.retry_max_ms;
	ss->full_reload_s = rt->cfg.registry_reload_s;

	memset(as, 0, sizeof(*as));
	as->pg = ss->pg;
	as->pg.application_name = "fleetgate-audit";
	as->broker_id = rt->cfg.broker_id;
	as->queue_size = rt->cfg.audit_queue_size;
	as->batch_size = rt->cfg.audit_batch_size;
	as->flush_ms = rt->cfg.audit_flush_ms;
	as->last_seen_interval_s = rt->cfg.last_seen_interval_s;
	as->retry_max_ms = rt->cfg.retry_max_ms;
}

static int start_worker_process(struct fg_runtime *rt,
                                const struct fg_sync_settings *ss,
                                const struct fg_audit_settings *as, char *err,
                                size_t errlen)
{
	rt->arena = fg_arena_new(ARENA_BYTES, ARENA_MIN_BYTES);
	if (rt->arena == NULL) {
		fg_seterr(err, errlen,
		          "cannot map the worker process's "
		          "shared memory");
		return -1;
	}
	rt->sync = fg_sync_create(ss, rt->arena, err, errlen);
	if (rt->sync != NULL)
		rt->audit = fg_audit_create(as, true, err, errlen);
	if (rt->audit != NULL && fork_worker(rt, err, errlen) == 0)
		return 0;
	fg_audit_destroy(rt->audit);
	fg_sync_destroy(rt->sync);
	fg_arena_destroy(rt->arena);
	rt->arena = NULL;
	rt->sync = NULL;
	rt->audit = NULL;
	return -1;
}

static int start_workers(struct fg_runtime *rt, char *err, size_t errlen)
{
	struct fg_sync_settings ss;
	struct fg_audit_settings as;

	rt->restart_delay_ms = 0;
	fill_settings(rt, &ss, &as);
	if (rt->cfg.workers == FG_WORKERS_PROCESS) {
		char perr[FG_ERRLEN];

		if (start_worker_process(rt, &ss, &as, perr, sizeof(perr)) == 0)
			return 0;
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX " %s: the loader and audit writer run as "
		                  "threads of the broker instead",
		       perr);
	}
	rt->sync = fg_sync_start(&ss, err, errlen);
	if (rt->sync == NULL)
		return -1;
	rt->audit = fg_audit_start(&as, err, errlen);
	if (rt->audit == NULL) {
		fg_sync_stop(rt->sync);
		rt->sync = NULL;
		return -1;
	}
	return 0;
}

/*
 * TICK, with a worker process: when it is gone, start the next one (at
 * once the first time, then backing off while they keep dying), with an
 * arena of its own. Until it has read the database, the broker keeps the
 * registry it has, which still refuses what it refused.
 */
static void watch_worker(struct fg_runtime *rt, int64_t now)
{
	char err[FG_ERRLEN];
	struct fg_arena *next;
	uint64_t lost;
	pid_t pid;
	int st;

	if (rt->nold_arenas > 0)
		release_old_arenas(rt);
	if (now < rt->next_reap_ms)
		return;
	rt->next_reap_ms = now + REAP_INTERVAL_MS;
	if (rt->worker > 0) {
		pid = waitpid(rt->worker, &st, WNOHANG);
		if (pid == 0 || (pid < 0 && errno == EINTR))
			return;
		fg_log_drain();
		if (WIFSIGNALED(st))
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " the worker process (pid %d) was "
			                  "killed by signal %d",
			       (int)rt->worker, WTERMSIG(st));
		else
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " the worker process (pid %d) exited "
			                  "with status %d",
			       (int)rt->worker,
			       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		close(rt->worker_ctl);
		rt->worker_ctl = -1;
		rt->worker = 0;
		/* A worker that lived a while is restarted at once. */
		if (now - rt->started_ms > RESTART_MAX_MS)
			rt->restart_delay_ms = 0;
		rt->restart_at_ms = now + rt->restart_delay_ms;
		rt->restart_delay_ms =
		    rt->restart_delay_ms == 0 ? 1000 : rt->restart_delay_ms * 2;
		if (rt->restart_delay_ms > RESTART_MAX_MS)
			rt->restart_delay_ms = RESTART_MAX_MS;
	}
	if (now < rt->restart_at_ms)
		return;
	if (rt->nold_arenas == OLD_ARENAS_MAX) {
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX
		       " too many worker processes died: not restarting");
		rt->restart_at_ms = INT64_MAX;
		return;
	}
	next = fg_arena_new(ARENA_BYTES, ARENA_MIN_BYTES);
	if (next == NULL) {
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX
		       " cannot map shared memory for a new worker process; "
		       "trying again");
		rt->restart_at_ms = now + 1000;
		return;
	}
	rt->old_arenas[rt->nold_arenas++] = rt->arena;
	rt->arena = next;
	fg_sync_adopt(rt->sync, next);
	lost = fg_audit_adopt(rt->audit);
	if (fork_worker(rt, err, sizeof(err)) != 0) {
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " %s; trying again", err);
		rt->restart_at_ms = now + 1000;
		return;
	}
	fg_log(MOSQ_LOG_WARNING,
	       LOG_PREFIX " started a new worker process (pid %d); "
	                  "audit_events_lost=%llu with the old one",
	       (int)rt->worker, (unsigned long long)lost);
	release_old_arenas(rt);
}

/*
 * Copy into dst every option src gives that dst does not; returns how
 * many were copied, or -1 when out of memory.
 */
static int merge_given(struct fg_runtime_config *dst,
                       const struct fg_runtime_config *src)
{
	size_t i;
	int n = 0;

	for (i = 0; i < NSPECS; i++) {
		const char *sf = (const char *)src + runtime_specs[i].offset;
		char *df = (char *)dst + runtime_specs[i].offset;

		if (runtime_specs[i].type == FG_OPT_STRING) {
			const char *sv = *(char *const *)(const void *)sf;
			char **dv = (char **)(void *)df;

			if (sv == NULL || *dv != NULL)
				continue;
			*dv = strdup(sv);
			if (*dv == NULL)
				return -1;
			n++;
		} else {
			int sv = *(const int *)(const void *)sf;
			int *dv = (int *)(void *)df;

			if (sv < 0 || *dv >= 0)
				continue;
			*dv = sv;
			n++;
		}
	}
	return n;
}

static struct fg_runtime *runtime_start(const struct fg_runtime_config *cfg,
                                        char *err, size_t errlen)
{
	struct fg_runtime *rt = calloc(1, sizeof(*rt));

	if (rt == NULL)
		goto oom;
	fg_runtime_config_init(&rt->given);
	if (merge_given(&rt->given, cfg) < 0 ||
	    effective_config(&rt->given, &rt->cfg) != 0)
		goto oom;
	rt->worker_ctl = -1;
	rt->clients = fg_clients_new();
	if (rt->clients == NULL)
		goto oom;
	load_snapshot(rt);
	if (start_workers(rt, err, errlen) != 0)
		goto fail;
	rt->refs = 1;
	return rt;
oom:
	fg_seterr(err, errlen, "out of memory");
fail:
	if (rt != NULL) {
		fg_registry_free(rt->registry);
		fg_clients_free(rt->clients);
		fg_runtime_config_free(&rt->cfg);
		fg_runtime_config_free(&rt->given);
		free(rt);
	}
	return NULL;
}

/*
 * A later plugin gives runtime options the earlier ones did not: take
 * them and restart the worker threads with them. This happens only while
 * the broker loads its plugins, before any client is connected.
 */
static int runtime_extend(struct fg_runtime *rt,
                          const struct fg_runtime_config *cfg, char *err,
                          size_t errlen)
{
	struct fg_runtime_config eff;
	char *old_snapshot;
	int n;

	if (check_same(cfg, &rt->given, err, errlen) != 0)
		return -1;
	n = merge_given(&rt->given, cfg);
	if (n <= 0 || effective_config(&rt->given, &eff) != 0) {
		if (n < 0)
			fg_seterr(err, errlen, "out of memory");
		return n < 0 ? -1 : 0;
	}
	stop_workers(rt);
	old_snapshot = rt->cfg.snapshot_file;
	rt->cfg.snapshot_file = NULL;
	fg_runtime_config_free(&rt->cfg);
	rt->cfg = eff;
	if (rt->registry == NULL && rt->cfg.snapshot_file != NULL &&
	    (old_snapshot == NULL ||
	     strcmp(old_snapshot, rt->cfg.snapshot_file) != 0))
		load_snapshot(rt);
	free(old_snapshot);
	return start_workers(rt, err, errlen);
}

/*
 * When a later plugin fails to start, the broker exits without calling
 * the cleanup of the plugins already loaded, and the worker threads would
 * run on while the process tears down the libraries they use. Stop them
 * first. (A normal cleanup has released the runtime: nothing to do.)
 */
static void stop_at_exit(void)
{
	pthread_mutex_lock(&runtime_lock);
	if (runtime != NULL) {
		fg_log_detach();
		stop_workers(runtime);
	}
	pthread_mutex_unlock(&runtime_lock);
}

struct fg_runtime *fg_runtime_acquire(const struct fg_runtime_config *cfg,
                                      char *err, size_t errlen)
{
	static bool exit_hook;
	struct fg_runtime *rt = NULL;

	pthread_mutex_lock(&runtime_lock);
	fg_log_init();
	if (!exit_hook && atexit(stop_at_exit) == 0)
		exit_hook = true;
	if (runtime == NULL) {
		runtime = runtime_start(cfg, err, errlen);
		rt = runtime;
	} else if (runtime_extend(runtime, cfg, err, errlen) == 0) {
		runtime->refs++;
		rt = runtime;
	}
	pthread_mutex_unlock(&runtime_lock);
	return rt;
}

void fg_runtime_release(struct fg_runtime *rt)
{
	if (rt == NULL)
		return;
	pthread_mutex_lock(&runtime_lock);
	if (--rt->refs == 0) {
		stop_workers(rt);
		fg_log_shutdown();
		if (!in_arena(rt, rt->registry))
			fg_registry_free(rt->registry);
		rt->registry = NULL;
		release_old_arenas(rt);
		fg_withdrawn_free(rt->withdrawn);
		fg_clients_free(rt->clients);
		fg_runtime_config_free(&rt->cfg);
		fg_runtime_config_free(&rt->given);
		free(rt);
		runtime = NULL;
	}
	pthread_mutex_unlock(&runtime_lock);
}

/* Access withdrawn ahead of the next registry: in force from now until
 * that registry is installed. */
static void take_withdrawn(struct fg_runtime *rt, struct fg_withdrawn *wd)
{
	if (rt->withdrawn != NULL) {
		/* Out of memory, the older set stays whole (it is in force
		 * already) and the newer one's entries wait for the registry,
		 * as every change did before these sets. */
		if (fg_withdrawn_merge(rt->withdrawn, wd) != 0)
			fg_log(MOSQ_LOG_WARNING, LOG_PREFIX
			       " out of memory for access withdrawn "
			       "ahead of the registry reload; it waits "
			       "for the reload");
		fg_withdrawn_seal(rt->withdrawn);
		fg_withdrawn_free(wd);
	} else {
		rt->withdrawn = wd;
	}
	rt->withdrawn_generation++;
	fg_log(MOSQ_LOG_INFO,
	       LOG_PREFIX " access withdrawn ahead of the registry reload: "
	                  "certificates=%zu devices=%zu accounts=%zu",
	       fg_withdrawn_count(rt->withdrawn, FG_WD_CERT),
	       fg_withdrawn_count(rt->withdrawn, FG_WD_DEVICE),
	       fg_withdrawn_count(rt->withdrawn, FG_WD_ACCOUNT));
}

void fg_runtime_tick(struct fg_runtime *rt)
{
	struct fg_registry *fresh;
	struct fg_withdrawn *wd = NULL;
	int64_t now;

	if (!fg_tick_due(&rt->last_tick_ms))
		return;
	now = fg_mono_ms();
	fg_log_drain();
	fg_clients_purge(rt->clients, now);
	fresh = fg_sync_take(rt->sync, &wd);
	if (fresh != NULL) {
		int first =
		    rt->registry == NULL || fg_registry_origin(rt->registry) !=
		                                FG_REGISTRY_FROM_DATABASE;

		size_t nrules;

		fg_registry_rules(fresh, &nrules);
		retire_registry(rt, rt->registry);
		rt->registry = fresh;
		/* It holds every change the withdrawn set was read from. */
		fg_withdrawn_free(rt->withdrawn);
		rt->withdrawn = NULL;
		rt->generation++;
		fg_log(first ? MOSQ_LOG_NOTICE : MOSQ_LOG_INFO,
		       LOG_PREFIX " registry %s from database "
		                  "devices=%zu certificates=%zu accounts=%zu "
		                  "rules=%zu schema_version=%d",
		       fg_registry_depth(fresh) > 0 ? "patched" : "loaded",
		       fg_registry_device_count(fresh),
		       fg_registry_cert_count(fresh),
		       fg_registry_account_count(fresh), nrules,
		       fg_registry_schema_version(fresh));
	}
	if (wd != NULL)
		take_withdrawn(rt, wd);
	fg_audit_tick(rt->audit);
	if (rt->arena != NULL)
		watch_worker(rt, now);
}

const struct fg_registry *fg_runtime_registry(struct fg_runtime *rt)
{
	return rt->registry;
}

const struct fg_withdrawn *fg_runtime_withdrawn(struct fg_runtime *rt)
{
	return rt->withdrawn;
}

uint64_t fg_runtime_withdrawn_generation(struct fg_runtime *rt)
{
	return rt->withdrawn_generation;
}

uint64_t fg_runtime_generation(struct fg_runtime *rt)
{
	return rt->generation;
}

const struct fg_runtime_config *fg_runtime_settings(struct fg_runtime *rt)
{
	return &rt->cfg;
}

const char *fg_runtime_broker_id(struct fg_runtime *rt)
{
	return rt->cfg.broker_id;
}

void fg_runtime_audit(struct fg_runtime *rt, const struct fg_audit_event *ev)
{
	if (rt->sink != NULL && rt->sink(rt->sink_ctx, ev) == 0)
		return;
	fg_audit_push(rt->audit, ev);
}

void fg_runtime_set_audit_sink(struct fg_runtime *rt, fg_audit_sink_fn fn,
                               void *ctx)
{
	rt->sink = fn;
	rt->sink_ctx = ctx;
}

void fg_runtime_seen(struct fg_runtime *rt, const char *device_id)
{
	fg_audit_seen(rt->audit, device_id);
}

int fg_runtime_set_identity(struct fg_runtime *rt, const void *client,
                            bool is_device, const char *name,
                            const char *client_id)
{
	return fg_clients_set(rt->clients, client, is_device, name, client_id);
}

const struct fg_identity *fg_runtime_identity(struct fg_runtime *rt,
                                              const void *client)
{
	return fg_clients_get(rt->clients, client);
}

void fg_runtime_forget_identity(struct fg_runtime *rt, const void *client)
{
	fg_clients_forget(rt->clients, client);
}

void fg_runtime_client_gone(struct fg_runtime *rt, const void *client)
{
	fg_clients_gone(rt->clients, client);
}

void fg_runtime_client_offline(struct fg_runtime *rt, const void *client,
                               int64_t keep_ms)
{
	fg_clients_offline(rt->clients, client,
	                   keep_ms > 0 ? fg_mono_ms() + keep_ms : 0);
}
