/*
 * Admission decisions: pure functions of the registry and what the client
 * presents, so they can be tested without a broker.
 */
#include <string.h>

#include "auth.h"

const char *auth_reason_str(enum auth_reason r)
{
	static const char *const names[] = {
	    [AUTH_OK] = "ok",
	    [AUTH_UNKNOWN_CERTIFICATE] = "unknown_certificate",
	    [AUTH_CERTIFICATE_REVOKED] = "certificate_revoked",
	    [AUTH_CERTIFICATE_EXPIRED] = "certificate_expired",
	    [AUTH_CERTIFICATE_NOT_YET_VALID] = "certificate_not_yet_valid",
	    [AUTH_DEVICE_SUSPENDED] = "device_suspended",
	    [AUTH_DEVICE_DECOMMISSIONED] = "device_decommissioned",
	    [AUTH_CLIENT_ID_MISMATCH] = "client_id_mismatch",
	    [AUTH_INVALID_CLIENT_ID] = "invalid_client_id",
	    [AUTH_INVALID_USERNAME] = "invalid_username",
	    [AUTH_REGISTRY_UNAVAILABLE] = "registry_unavailable",
	    [AUTH_BAD_API_KEY] = "bad_api_key",
	    [AUTH_UNKNOWN_ACCOUNT] = "unknown_account",
	    [AUTH_BAD_PASSWORD] = "bad_password",
	    [AUTH_SERVER_BUSY] = "server_busy",
	    [AUTH_ACCOUNT_DISABLED] = "account_disabled",
	    [AUTH_NO_CREDENTIALS] = "no_credentials",
	    [AUTH_BAD_CERTIFICATE] = "bad_certificate",
	};

	if ((size_t)r < sizeof(names) / sizeof(names[0]) && names[r] != NULL)
		return names[r];
	return "unknown";
}

static enum auth_reason check_cert_window(const struct fg_cert *c,
                                          int64_t x509_nb, int64_t x509_na,
                                          int64_t now)
{
	if (c->revoked_at != 0 && now >= c->revoked_at)
		return AUTH_CERTIFICATE_REVOKED;
	if (now < c->not_before || now < x509_nb)
		return AUTH_CERTIFICATE_NOT_YET_VALID;
	if (now > c->not_after || now > x509_na)
		return AUTH_CERTIFICATE_EXPIRED;
	return AUTH_OK;
}

static enum auth_reason check_device(const struct fg_device *d)
{
	switch (d->status) {
	case FG_DEVICE_ACTIVE:
		return AUTH_OK;
	case FG_DEVICE_SUSPENDED:
		return AUTH_DEVICE_SUSPENDED;
	case FG_DEVICE_DECOMMISSIONED:
		return AUTH_DEVICE_DECOMMISSIONED;
	}
	return AUTH_DEVICE_SUSPENDED;
}

static bool needs_api_key(const struct auth_config *cfg,
                          const struct fg_device *d)
{
	return cfg->api_key == AUTH_API_KEY_ALL ||
	       (cfg->api_key == AUTH_API_KEY_PER_DEVICE && d->require_api_key);
}

/* A password or API key against its stored hash (NULL: none, refused). */
static enum auth_reason check_secret(const struct auth_config *cfg,
                                     const struct auth_request *req,
                                     const char *stored, enum auth_reason wrong)
{
	if (stored == NULL)
		return wrong;
	if (req->admitted_secret != 0 &&
	    fg_hash_str(stored) == req->admitted_secret)
		return AUTH_OK;
	switch (auth_pwcheck_verify(cfg->pwcheck, stored, req->password,
	                            fg_mono_ms())) {
	case AUTH_PW_MATCH:
		return AUTH_OK;
	case AUTH_PW_BUSY:
		return AUTH_SERVER_BUSY;
	default:
		return wrong;
	}
}

static enum auth_reason decide_device(const struct fg_registry *reg,
                                      const struct auth_config *cfg,
                                      const struct auth_request *req,
                                      int64_t now, struct auth_identity *id)
{
	const struct fg_cert *c = fg_registry_cert(reg, &req->fp);
	enum auth_reason r;

	if (c == NULL)
		return AUTH_UNKNOWN_CERTIFICATE;
	/* Known from here on, admitted or not: the audit row names it. */
	id->is_device = true;
	id->device = c->device;
	id->cert = c;
	r = check_cert_window(c, req->x509_not_before, req->x509_not_after,
	                      now);
	if (r != AUTH_OK)
		return r;
	r = check_device(c->device);
	if (r != AUTH_OK)
		return r;
	/* The client id must be the device's own, so that one device can
	 * never take over another's session. */
	if (strcmp(req->client_id, c->device->id) != 0)
		return AUTH_CLIENT_ID_MISMATCH;
	if (needs_api_key(cfg, c->device))
		return check_secret(cfg, req, c->device->api_key_hash,
		                    AUTH_BAD_API_KEY);
	return AUTH_OK;
}

static enum auth_reason decide_account(const struct fg_registry *reg,
                                       const struct auth_config *cfg,
                                       const struct auth_request *req,
                                       struct auth_identity *id)
{
	const struct fg_account *a = fg_registry_account(reg, req->username);
	enum auth_reason r;

	if (a == NULL)
		return AUTH_UNKNOWN_ACCOUNT;
	if (a->disabled)
		return AUTH_ACCOUNT_DISABLED;
	r = check_secret(cfg, req, a->password_hash, AUTH_BAD_PASSWORD);
	if (r != AUTH_OK)
		return r;
	id->is_device = false;
	id->account = a;
	return AUTH_OK;
}

enum auth_reason auth_decide(const struct fg_registry *reg,
                             const struct auth_config *cfg,
                             const struct auth_request *req, int64_t now,
                             struct auth_identity *id)
{
	size_t max = (size_t)cfg->max_id_length;

	memset(id, 0, sizeof(*id));
	if (fg_ident_check(req->client_id, max) != FG_IDENT_OK)
		return AUTH_INVALID_CLIENT_ID;
	if (req->username != NULL &&
	    fg_ident_check(req->username, max) != FG_IDENT_OK)
		return AUTH_INVALID_USERNAME;
	if (!req->has_cert && req->username == NULL)
		return AUTH_NO_CREDENTIALS;
	if (reg == NULL)
		return AUTH_REGISTRY_UNAVAILABLE;
	if (req->has_cert)
		return decide_device(reg, cfg, req, now, id);
	return decide_account(reg, cfg, req, id);
}

enum auth_reason auth_withdrawn(const struct fg_withdrawn *w, bool is_device,
                                const char *name, const fg_fingerprint *fp)
{
	enum fg_withdrawn_why why;

	if (w == NULL)
		return AUTH_OK;
	if (!is_device)
		return fg_withdrawn_has(w, FG_WD_ACCOUNT, name, &why)
		           ? (why == FG_WD_DISABLED ? AUTH_ACCOUNT_DISABLED
		                                    : AUTH_UNKNOWN_ACCOUNT)
		           : AUTH_OK;
	if (fp != NULL && fg_withdrawn_has(w, FG_WD_CERT, fp->hex, &why))
		return why == FG_WD_REVOKED ? AUTH_CERTIFICATE_REVOKED
		                            : AUTH_UNKNOWN_CERTIFICATE;
	if (fg_withdrawn_has(w, FG_WD_DEVICE, name, &why)) {
		switch (why) {
		case FG_WD_SUSPENDED:
			return AUTH_DEVICE_SUSPENDED;
		case FG_WD_DECOMMISSIONED:
			return AUTH_DEVICE_DECOMMISSIONED;
		default:
			/* its certificates went with it */
			return AUTH_UNKNOWN_CERTIFICATE;
		}
	}
	return AUTH_OK;
}

enum auth_reason auth_recheck(const struct fg_registry *reg,
                              const struct auth_config *cfg,
                              const struct auth_session *s, int64_t now)
{
	if (reg == NULL)
		return AUTH_OK; /* nothing new to judge by */
	if (s->is_device) {
		const struct fg_cert *c = fg_registry_cert(reg, &s->fp);
		enum auth_reason r;

		if (c == NULL)
			return AUTH_UNKNOWN_CERTIFICATE;
		r = check_cert_window(c, INT64_MIN, s->x509_not_after, now);
		if (r == AUTH_OK)
			r = check_device(c->device);
		if (r == AUTH_OK && strcmp(c->device->id, s->name) != 0)
			r = AUTH_CLIENT_ID_MISMATCH;
		/* A key changed or newly required since the device logged in
		 * means its session was opened with the wrong credentials. */
		if (r == AUTH_OK && needs_api_key(cfg, c->device) &&
		    (c->device->api_key_hash == NULL ||
		     fg_hash_str(c->device->api_key_hash) != s->secret_hash))
			r = AUTH_BAD_API_KEY;
		return r;
	} else {
		const struct fg_account *a = fg_registry_account(reg, s->name);

		if (a == NULL)
			return AUTH_UNKNOWN_ACCOUNT;
		if (a->disabled)
			return AUTH_ACCOUNT_DISABLED;
		if (fg_hash_str(a->password_hash) != s->secret_hash)
			return AUTH_BAD_PASSWORD;
		return AUTH_OK;
	}
}
