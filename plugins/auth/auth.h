/*
 * The auth plugin: who may connect.
 *
 * Devices are identified by the SHA-256 fingerprint of their client
 * certificate and must use their device id as client id; dashboards and
 * services (accounts) log in with a username and a password hash written
 * by mosquitto_passwd. Every decision is a lookup in the registry held in
 * memory by the runtime. Connected clients are tracked so that a revoked
 * certificate, a suspended device or a removed account is disconnected as
 * soon as the registry says so.
 */
#ifndef AUTH_H
#define AUTH_H

#include <stdbool.h>

#include "fg_ident.h"
#include "fg_registry.h"
#include "fg_withdrawn.h"
#include "fg_runtime.h"

#define AUTH_LOG "fleetgate-auth:"

enum auth_api_key_mode {
	AUTH_API_KEY_OFF = 0,
	AUTH_API_KEY_PER_DEVICE,
	AUTH_API_KEY_ALL,
};

struct auth_pwcheck;

struct auth_config {
	int api_key;            /* enum auth_api_key_mode */
	int max_id_length;      /* bytes, for client ids and usernames */
	int password_cache_s;   /* 0: no cache */
	int password_budget_ms; /* of hashing per second */
	/* Where passwords and API keys are checked (NULL: hashed each time,
	 * without a budget). */
	struct auth_pwcheck *pwcheck;
};

/* Why a client was admitted or refused; names as in the audit table. */
enum auth_reason {
	AUTH_OK = 0,
	AUTH_UNKNOWN_CERTIFICATE,
	AUTH_CERTIFICATE_REVOKED,
	AUTH_CERTIFICATE_EXPIRED,
	AUTH_CERTIFICATE_NOT_YET_VALID,
	AUTH_DEVICE_SUSPENDED,
	AUTH_DEVICE_DECOMMISSIONED,
	AUTH_CLIENT_ID_MISMATCH,
	AUTH_INVALID_CLIENT_ID,
	AUTH_INVALID_USERNAME,
	AUTH_REGISTRY_UNAVAILABLE,
	AUTH_BAD_API_KEY,
	AUTH_UNKNOWN_ACCOUNT,
	AUTH_BAD_PASSWORD,
	AUTH_ACCOUNT_DISABLED,
	AUTH_NO_CREDENTIALS,
	AUTH_BAD_CERTIFICATE,
	AUTH_SERVER_BUSY, /* a password check over the hashing budget */
};

const char *auth_reason_str(enum auth_reason r);

/* What a connecting client presents. */
struct auth_request {
	const char *client_id;
	const char *username; /* NULL when none was sent */
	const char *password; /* NULL when none was sent */
	bool has_cert;
	fg_fingerprint fp;       /* when has_cert */
	int64_t x509_not_before; /* when has_cert */
	int64_t x509_not_after;  /* when has_cert */
	/* On a re-check of a connected client (SIGHUP): the fg_hash_str of
	 * the password or API key hash it was admitted with, 0 otherwise.
	 * While the stored hash is the same, the password (the one sent at
	 * CONNECT) is not hashed again. */
	uint64_t admitted_secret;
};

/* The identity a decision established. */
struct auth_identity {
	bool is_device;
	const struct fg_device *device;   /* devices */
	const struct fg_cert *cert;       /* devices */
	const struct fg_account *account; /* accounts */
};

/*
 * Decide whether a client may connect, from the registry alone (NULL
 * registry: nothing is known, so everyone is refused). Returns AUTH_OK
 * and fills id, or the reason for refusal; a refused device whose
 * certificate is registered still has id->device set, for the audit row.
 */
enum auth_reason auth_decide(const struct fg_registry *reg,
                             const struct auth_config *cfg,
                             const struct auth_request *req, int64_t now,
                             struct auth_identity *id);

/*
 * Password and API key checks with a cache of recent outcomes and a
 * budget of broker time for hashing (auth_pwcheck.c). Broker thread only.
 */
enum auth_pw {
	AUTH_PW_MATCH,
	AUTH_PW_MISMATCH, /* also a malformed hash, or no password */
	AUTH_PW_BUSY,     /* not checked: the hashing budget is spent */
};

struct auth_pwcheck_stats {
	uint64_t cached; /* answered from the cache */
	uint64_t hashed; /* answered by hashing */
	uint64_t busy;   /* refused for want of budget */
};

/* cache_s: how long an outcome is kept (0: not at all); budget_ms: the
 * hashing time allowed per second. NULL when out of memory. */
struct auth_pwcheck *auth_pwcheck_new(int cache_s, int budget_ms);
void auth_pwcheck_free(struct auth_pwcheck *pc);
/* Check password against a stored hash; now_ms is fg_mono_ms. With a
 * NULL pc: hashed every time, never busy. */
enum auth_pw auth_pwcheck_verify(struct auth_pwcheck *pc, const char *stored,
                                 const char *password, int64_t now_ms);
void auth_pwcheck_get_stats(const struct auth_pwcheck *pc,
                            struct auth_pwcheck_stats *out);

/*
 * A connected client, as remembered for re-checks: enough to find its
 * registry rows again and to notice that the credentials it was admitted
 * with have changed.
 */
struct auth_session {
	void *client; /* struct mosquitto *, the key */
	bool is_device;
	char client_id[260];
	char name[260]; /* device id or account username */
	char address[64];
	fg_fingerprint fp;
	int64_t x509_not_after;
	uint64_t secret_hash; /* of the api key or password hash used */
	struct auth_session *next;
};

/*
 * Access withdrawn since the registry was read (fg_withdrawn.h): for a
 * device its certificate (fp) and its id (name), for an account its
 * username. Returns AUTH_OK when w withdraws none of them (or is NULL),
 * else the reason the registry will give once it has the change.
 */
enum auth_reason auth_withdrawn(const struct fg_withdrawn *w, bool is_device,
                                const char *name, const fg_fingerprint *fp);

/*
 * Re-check a connected client against a (new) registry. Returns AUTH_OK
 * if it may stay, or the reason to disconnect it.
 */
enum auth_reason auth_recheck(const struct fg_registry *reg,
                              const struct auth_config *cfg,
                              const struct auth_session *s, int64_t now);

/* The table of connected clients, keyed by the client pointer. */
struct auth_sessions {
	struct auth_session **buckets;
	size_t nbuckets, count;
};

int auth_sessions_init(struct auth_sessions *t, size_t nbuckets);
void auth_sessions_free(struct auth_sessions *t);
struct auth_session *auth_sessions_get(struct auth_sessions *t, void *client);
/* Insert or replace; returns the entry (owned by the table) or NULL. */
struct auth_session *auth_sessions_put(struct auth_sessions *t,
                                       const struct auth_session *s);
/* Remove if present (idempotent). */
void auth_sessions_remove(struct auth_sessions *t, void *client);

#endif
