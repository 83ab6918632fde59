/*
 * Who each client is, as the auth plugin established it, for the other
 * plugins of the broker (broker thread only).
 *
 * Entries are keyed by the client pointer. They outlive the connection
 * where the broker still needs them:
 *   - a client whose session ends is marked gone and dropped on the next
 *     TICK, because the broker checks its Will after DISCONNECT;
 *   - a client whose session persists keeps its identity while offline,
 *     because the broker checks every message it queues for the session;
 *     it is dropped when the client id authenticates again (the session
 *     moves to a new context) or when its deadline passes.
 */
#ifndef FG_CLIENTS_H
#define FG_CLIENTS_H

#include <stdbool.h>

#include "fg_common.h"

struct fg_identity {
	const void *client;
	bool is_device;
	bool gone;
	int64_t offline_until_ms; /* 0: online, or offline with no deadline */
	bool offline;
	char *name; /* device id or account username, whole */
	char *client_id;
	uint64_t epoch; /* unique per identity set; changes on re-auth */
	struct fg_identity *next, *next_by_id;
};

struct fg_clients;

struct fg_clients *fg_clients_new(void);
void fg_clients_free(struct fg_clients *c);
/* Record the identity of a client; other contexts of the same client id
 * are marked gone. Returns 0 or -1 when out of memory. */
int fg_clients_set(struct fg_clients *c, const void *client, bool is_device,
                   const char *name, const char *client_id);
/* The identity, or NULL when the client has none. */
const struct fg_identity *fg_clients_get(const struct fg_clients *c,
                                         const void *client);
/* Forget at once (refused clients). */
void fg_clients_forget(struct fg_clients *c, const void *client);
/* The session ended: drop it on the next fg_clients_purge(). */
void fg_clients_gone(struct fg_clients *c, const void *client);
/* The connection closed but the session may persist: keep the identity
 * until deadline_ms (0: until the client id authenticates again). */
void fg_clients_offline(struct fg_clients *c, const void *client,
                        int64_t deadline_ms);
/* Drop gone entries, and offline ones past their deadline (checked at
 * most once a minute). */
void fg_clients_purge(struct fg_clients *c, int64_t now_ms);

#endif
