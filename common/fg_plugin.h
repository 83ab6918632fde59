/*
 * What every fleetgate plugin does the same way at load and unload: pick
 * the plugin interface version, parse its options together with the
 * runtime's, take the runtime, and register its callbacks from one table.
 */
#ifndef FG_PLUGIN_H
#define FG_PLUGIN_H

#include <stddef.h>

#include <mosquitto_broker.h>

#include "fg_opts.h"
#include "fg_runtime.h"

struct fg_callback {
	int event;
	MOSQ_FUNC_generic_callback cb;
};

/* The answer to mosquitto_plugin_version(): 5, or -1 when the broker does
 * not offer it. */
FG_API int fg_plugin_version(int count, const int *versions);

/*
 * Parse options against the plugin's table (bound to its configuration
 * struct) and the runtime's, then take the runtime. Returns it, or NULL
 * with a message naming the option in err.
 */
FG_API struct fg_runtime *fg_plugin_runtime(const struct fg_opt_table *own,
                                            const struct mosquitto_opt *opts,
                                            int count, char *err,
                                            size_t errlen);

/*
 * The two entry points every fleetgate plugin defines alike: the plugin
 * interface version, and cleanup handing the userdata of init to
 * free_fn (which must accept NULL and unregister the callbacks).
 */
#define FG_PLUGIN_COMMON_ENTRY_POINTS(free_fn)                                 \
	FG_PLUGIN_ENTRY int mosquitto_plugin_version(int count,                \
	                                             const int *versions)      \
	{                                                                      \
		return fg_plugin_version(count, versions);                     \
	}                                                                      \
	FG_PLUGIN_ENTRY int mosquitto_plugin_cleanup(                          \
	    void *userdata, struct mosquitto_opt *options, int option_count)   \
	{                                                                      \
		(void)options;                                                 \
		(void)option_count;                                            \
		free_fn(userdata);                                             \
		return MOSQ_ERR_SUCCESS;                                       \
	}

/* Register every callback, or none (those done are undone). Returns 0, or
 * -1 with err set. */
FG_API int fg_plugin_register(mosquitto_plugin_id_t *id,
                              const struct fg_callback *cbs, size_t n,
                              void *userdata, char *err, size_t errlen);
FG_API void fg_plugin_unregister(mosquitto_plugin_id_t *id,
                                 const struct fg_callback *cbs, size_t n);

#endif
