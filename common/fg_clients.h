/*
 * Who each connected client is, as the auth plugin established it, for
 * the other plugins of the broker (broker thread only).
 *
 * Entries are keyed by the client pointer. A client that disconnects is
 * only marked gone: the broker still checks its Will against the ACL
 * after DISCONNECT, so the entry stays readable until the next TICK.
 */
#ifndef FG_CLIENTS_H
#define FG_CLIENTS_H

#include <stdbool.h>

#include "fg_common.h"

struct fg_identity {
	const void *client;
	bool is_device;
	bool gone;
	char *name; /* device id or account username, whole */
	char *client_id;
	uint64_t epoch; /* unique per identity set; changes on re-auth */
	struct fg_identity *next;
};

struct fg_clients;

struct fg_clients *fg_clients_new(void);
void fg_clients_free(struct fg_clients *c);
/* Record the identity of a client; returns 0 or -1 when out of memory. */
int fg_clients_set(struct fg_clients *c, const void *client, bool is_device,
                   const char *name, const char *client_id);
/* The identity, or NULL when the client has none. */
const struct fg_identity *fg_clients_get(const struct fg_clients *c,
                                         const void *client);
/* Forget at once (refused clients). */
void fg_clients_forget(struct fg_clients *c, const void *client);
/* Mark gone; fg_clients_purge() drops it. */
void fg_clients_gone(struct fg_clients *c, const void *client);
void fg_clients_purge(struct fg_clients *c);

#endif
