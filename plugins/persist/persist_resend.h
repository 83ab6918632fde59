/*
 * Resend detection for the persist plugin.
 *
 * MQTT resends an unacknowledged QoS 1 or 2 PUBLISH when the client
 * reconnects, and the broker calls the MESSAGE callback again for it. If
 * the first copy was journaled (the broker died, or the connection broke,
 * before the acknowledgement got out), storing the resent copy would make
 * a duplicate row. A copy counts as resent when the same client id sent a
 * message with the same topic and payload on an earlier connection within
 * the window. Two identical readings on one connection are both stored:
 * clients resend only after reconnecting.
 *
 * Broker thread only.
 */
#ifndef PERSIST_RESEND_H
#define PERSIST_RESEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct resend;

/* window_ms: how long a copy is remembered. NULL when out of memory. */
struct resend *resend_new(int64_t window_ms);
void resend_free(struct resend *rs);

/* A hash of topic and payload. */
uint64_t resend_hash(const char *topic, const void *payload, size_t len);

/* Was this message already stored from an earlier connection of
 * client_id? conn identifies the connection (the client pointer). */
bool resend_seen(struct resend *rs, const char *client_id, const void *conn,
                 uint64_t hash, int64_t now_ms);

/* Remember a stored message. conn NULL: from an earlier run of the broker
 * (read back from the journal at start). Returns 0, -1 out of memory. */
int resend_note(struct resend *rs, const char *client_id, size_t id_len,
                const void *conn, uint64_t hash, int64_t at_ms);

/* The connection closed. */
void resend_disconnect(struct resend *rs, const char *client_id,
                       const void *conn);

/* Forget clients silent for longer than the window (the table is swept
 * at most once a minute; calls in between return at once). */
void resend_purge(struct resend *rs, int64_t now_ms);

size_t resend_clients(const struct resend *rs);

#endif
