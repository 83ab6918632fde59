/*
 * Options of the ratelimit plugin, and the Redis password they point to.
 */
#ifndef RL_CONFIG_H
#define RL_CONFIG_H

#include <stddef.h>

#include "fg_opts.h"

struct rl_config {
	char *redis_host;
	int redis_port;
	char *redis_unix_socket;
	char *redis_username;
	char *redis_password_env;  /* name of an environment variable */
	char *redis_password_file; /* path of a file holding it */
	int redis_timeout_ms;
	int redis_retry_max_ms;
	char *redis_key_prefix;
	int sync_interval_ms;
	char *local_share; /* text, parsed into local_share_value */
	int default_messages_per_window;
	int default_bytes_per_window;
	int default_window_s;
	int default_burst;
	int kick_after_windows;
	int connect_limit_per_minute;
	int connect_cooldown_s;

	/* Derived by rl_config_finish. */
	double local_share_value;
	char *password; /* NULL: no AUTH; wiped by rl_config_free */
};

/* Defaults, and the option table bound to cfg. */
void rl_config_init(struct rl_config *cfg);
struct fg_opt_table rl_config_table(struct rl_config *cfg);

/*
 * Check what the table cannot (local_share, the password options) and read
 * the password (broker thread, at start). Returns 0, or -1 with a message
 * naming the option in err; the message never holds the password.
 */
int rl_config_finish(struct rl_config *cfg, char *err, size_t errlen);

void rl_config_free(struct rl_config *cfg);

#endif
