/*
 * Options of the ratelimit plugin. The Redis password is never an option
 * value (a broker's configuration file is often readable, and options end
 * up in support bundles): the options name an environment variable or a
 * file that holds it.
 */
#include "rl_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fg_common.h"

#define OFF(f) offsetof(struct rl_config, f)

static const struct fg_opt_spec specs[] = {
    {"redis_host", FG_OPT_STRING, OFF(redis_host), 0, 0, NULL},
    {"redis_port", FG_OPT_INT, OFF(redis_port), 1, 65535, NULL},
    {"redis_unix_socket", FG_OPT_STRING, OFF(redis_unix_socket), 0, 0, NULL},
    {"redis_username", FG_OPT_STRING, OFF(redis_username), 0, 0, NULL},
    {"redis_password_env", FG_OPT_STRING, OFF(redis_password_env), 0, 0, NULL},
    {"redis_password_file", FG_OPT_STRING, OFF(redis_password_file), 0, 0,
     NULL},
    {"redis_timeout_ms", FG_OPT_INT, OFF(redis_timeout_ms), 10, 10000, NULL},
    {"redis_retry_max_ms", FG_OPT_INT, OFF(redis_retry_max_ms), 100, 600000,
     NULL},
    {"redis_key_prefix", FG_OPT_STRING, OFF(redis_key_prefix), 0, 0, NULL},
    {"sync_interval_ms", FG_OPT_INT, OFF(sync_interval_ms), 10, 100, NULL},
    {"local_share", FG_OPT_STRING, OFF(local_share), 0, 0, NULL},
    {"default_messages_per_window", FG_OPT_INT,
     OFF(default_messages_per_window), 0, 1000000000, NULL},
    {"default_bytes_per_window", FG_OPT_INT, OFF(default_bytes_per_window), 0,
     2000000000, NULL},
    {"default_window_s", FG_OPT_INT, OFF(default_window_s), 1, 86400, NULL},
    {"default_burst", FG_OPT_INT, OFF(default_burst), 0, 1000000000, NULL},
    {"kick_after_windows", FG_OPT_INT, OFF(kick_after_windows), 0, 1000, NULL},
    {"connect_limit_per_minute", FG_OPT_INT, OFF(connect_limit_per_minute), 0,
     100000, NULL},
    {"connect_cooldown_s", FG_OPT_INT, OFF(connect_cooldown_s), 1, 86400, NULL},
};

void rl_config_init(struct rl_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->redis_port = 6379;
	cfg->redis_timeout_ms = 200;
	cfg->redis_retry_max_ms = 2000;
	cfg->sync_interval_ms = 50;
	cfg->default_window_s = 60;
	cfg->connect_limit_per_minute = 20;
	cfg->connect_cooldown_s = 60;
	cfg->local_share_value = 0.5;
}

struct fg_opt_table rl_config_table(struct rl_config *cfg)
{
	struct fg_opt_table t = {specs, sizeof(specs) / sizeof(specs[0]), cfg};

	return t;
}

/* The first line of path, without its line end; -1 with err set. */
static int read_secret_file(const char *path, char **out, char *err,
                            size_t errlen)
{
	struct stat st;
	char buf[1024];
	FILE *f = fopen(path, "r");
	size_t len;
	int rc = -1;

	if (f == NULL) {
		fg_seterr(err, errlen,
		          "plugin_opt_redis_password_file: cannot "
		          "open %s: %s",
		          path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) != 0 || (st.st_mode & S_IROTH) != 0) {
		fg_seterr(err, errlen,
		          "plugin_opt_redis_password_file: %s is "
		          "readable by everyone; chmod o-r it",
		          path);
		goto out;
	}
	if (fgets(buf, sizeof(buf), f) == NULL) {
		fg_seterr(err, errlen,
		          "plugin_opt_redis_password_file: %s is "
		          "empty",
		          path);
		goto out;
	}
	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	if (len == 0) {
		fg_seterr(err, errlen,
		          "plugin_opt_redis_password_file: the "
		          "first line of %s is empty",
		          path);
		goto out;
	}
	*out = strdup(buf);
	if (*out == NULL)
		fg_seterr(err, errlen, "out of memory");
	else
		rc = 0;
out:
	memset(buf, 0, sizeof(buf));
	fclose(f);
	return rc;
}

static int read_password(struct rl_config *cfg, char *err, size_t errlen)
{
	const char *v;

	if (cfg->redis_password_env != NULL &&
	    cfg->redis_password_file != NULL) {
		fg_seterr(err, errlen,
		          "plugin_opt_redis_password_env and "
		          "plugin_opt_redis_password_file: give one");
		return -1;
	}
	if (cfg->redis_password_file != NULL)
		return read_secret_file(cfg->redis_password_file,
		                        &cfg->password, err, errlen);
	if (cfg->redis_password_env == NULL)
		return 0;
	v = getenv(cfg->redis_password_env);
	if (v == NULL || v[0] == '\0') {
		fg_seterr(err, errlen,
		          "plugin_opt_redis_password_env: the "
		          "environment variable %.64s is not set",
		          cfg->redis_password_env);
		return -1;
	}
	cfg->password = strdup(v);
	if (cfg->password == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int rl_config_finish(struct rl_config *cfg, char *err, size_t errlen)
{
	if (cfg->local_share != NULL) {
		char *end;

		errno = 0;
		cfg->local_share_value = strtod(cfg->local_share, &end);
		while (*end == ' ' || *end == '\t')
			end++;
		if (errno != 0 || end == cfg->local_share || *end != '\0' ||
		    !(cfg->local_share_value > 0.0 &&
		      cfg->local_share_value <= 1.0)) {
			fg_seterr(err, errlen,
			          "plugin_opt_local_share: a "
			          "number above 0 and at most 1");
			return -1;
		}
	}
	if (cfg->redis_key_prefix == NULL &&
	    (cfg->redis_key_prefix = strdup("fleetgate:rl:")) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	return read_password(cfg, err, errlen);
}

void rl_config_free(struct rl_config *cfg)
{
	struct fg_opt_table t = rl_config_table(cfg);

	if (cfg->password != NULL)
		memset(cfg->password, 0, strlen(cfg->password));
	free(cfg->password);
	cfg->password = NULL;
	fg_opts_free(&t);
}
