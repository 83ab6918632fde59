/*
 * Link-seam stubs of the broker functions the plugins call, so that unit
 * tests run without a broker. Log lines are kept for assertions.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "stubs.h"

char stub_last_log[2048];
int stub_log_count;
char stub_kicked[16][128];
int stub_kick_count;

void mosquitto_log_printf(int level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	va_start(ap, fmt);
	vsnprintf(stub_last_log, sizeof(stub_last_log), fmt, ap);
	va_end(ap);
	stub_log_count++;
}

int mosquitto_kick_client_by_clientid(const char *clientid, bool with_will)
{
	(void)with_will;
	if (stub_kick_count < 16)
		snprintf(stub_kicked[stub_kick_count++], 128, "%s", clientid);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event,
				MOSQ_FUNC_generic_callback cb,
				const void *event_data, void *userdata)
{
	(void)identifier;
	(void)event;
	(void)cb;
	(void)event_data;
	(void)userdata;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier,
				  int event, MOSQ_FUNC_generic_callback cb,
				  const void *event_data)
{
	(void)identifier;
	(void)event;
	(void)cb;
	(void)event_data;
	return MOSQ_ERR_SUCCESS;
}

const char *mosquitto_client_id(const struct mosquitto *client)
{
	(void)client;
	return "stub-client";
}

const char *mosquitto_client_address(const struct mosquitto *client)
{
	(void)client;
	return "127.0.0.1";
}

void *mosquitto_client_certificate(const struct mosquitto *client)
{
	(void)client;
	return NULL;
}

int mosquitto_set_username(struct mosquitto *client, const char *username)
{
	(void)client;
	(void)username;
	return MOSQ_ERR_SUCCESS;
}
