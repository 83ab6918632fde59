/*
 * Shared start-up and shut-down of the fleetgate plugins.
 */
#include "fg_plugin.h"

#include <stdio.h>

#include <mosquitto.h>
#include <mosquitto_plugin.h>

int fg_plugin_version(int count, const int *versions)
{
	int i;

	for (i = 0; i < count; i++) {
		if (versions[i] == 5)
			return 5;
	}
	return -1;
}

struct fg_runtime *fg_plugin_runtime(const struct fg_opt_table *own,
                                     const struct mosquitto_opt *opts,
                                     int count, char *err, size_t errlen)
{
	struct fg_runtime_config rcfg;
	struct fg_opt_table tables[2];
	struct fg_runtime *rt = NULL;

	fg_runtime_config_init(&rcfg);
	tables[0] = *own;
	tables[1] = fg_runtime_opt_table(&rcfg);
	if (fg_opts_parse(tables, 2, opts, count, err, errlen) == 0)
		rt = fg_runtime_acquire(&rcfg, err, errlen);
	fg_runtime_config_free(&rcfg);
	return rt;
}

void fg_plugin_unregister(mosquitto_plugin_id_t *id,
                          const struct fg_callback *cbs, size_t n)
{
	size_t i;

	for (i = 0; id != NULL && i < n; i++)
		mosquitto_callback_unregister(id, cbs[i].event, cbs[i].cb,
		                              NULL);
}

int fg_plugin_register(mosquitto_plugin_id_t *id, const struct fg_callback *cbs,
                       size_t n, void *userdata, char *err, size_t errlen)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (mosquitto_callback_register(id, cbs[i].event, cbs[i].cb,
		                                NULL,
		                                userdata) != MOSQ_ERR_SUCCESS) {
			fg_seterr(err, errlen,
			          "cannot register callback for event %d",
			          cbs[i].event);
			fg_plugin_unregister(id, cbs, i);
			return -1;
		}
	}
	return 0;
}
