/*
 * The registry snapshot file: what lets the broker admit known devices
 * when PostgreSQL is unreachable at start.
 *
 * Layout: one header line
 *     fleetgate-registry-snapshot 1 sha256=<hex of the body>
 * followed by the body, a JSON object with arrays of rows. The file is
 * written to a temporary name with mode 0600, flushed to disk and renamed
 * over the old one, so a crash leaves either the old or the new file.
 */
#include "fg_registry.h"
#include "fg_registry_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#define SNAPSHOT_MAGIC "fleetgate-registry-snapshot"
#define SNAPSHOT_FORMAT 1
#define SNAPSHOT_MAX_BYTES (512L * 1024 * 1024)

static void sha256_hex(const char *data, size_t len, char out[65])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (i = 0; i < 32 && i < mdlen; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 0x0f];
	}
	out[64] = '\0';
}

static cJSON *str_or_null(const char *s)
{
	return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* Append a row (a JSON array of items) to arr; 0 or -1. */
static int add_row(cJSON *arr, cJSON *const *items, size_t n)
{
	cJSON *row = cJSON_CreateArray();
	size_t i;
	int rc = 0;

	for (i = 0; i < n; i++) {
		if (row == NULL || items[i] == NULL ||
		    !cJSON_AddItemToArray(row, items[i])) {
			cJSON_Delete(items[i]);
			rc = -1;
		}
	}
	if (row == NULL || rc != 0 || !cJSON_AddItemToArray(arr, row)) {
		cJSON_Delete(row);
		return -1;
	}
	return 0;
}

static cJSON *registry_to_json(const struct fg_registry *reg)
{
	const struct fg_device *dev = fg_registry__devices(reg);
	const struct fg_cert *crt = fg_registry__certs(reg);
	const struct fg_account *acc = fg_registry__accounts(reg);
	cJSON *root = cJSON_CreateObject();
	cJSON *devices, *certs, *accounts, *rules, *limits;
	const struct fg_rule *rule;
	const struct fg_limit *limit;
	size_t i, nrules, nlimits;

	if (root == NULL)
		return NULL;
	cJSON_AddNumberToObject(root, "schema_version",
	                        fg_registry_schema_version(reg));
	cJSON_AddNumberToObject(root, "loaded_at",
	                        (double)fg_registry_loaded_at(reg));
	devices = cJSON_AddArrayToObject(root, "devices");
	certs = cJSON_AddArrayToObject(root, "certificates");
	accounts = cJSON_AddArrayToObject(root, "accounts");
	rules = cJSON_AddArrayToObject(root, "rules");
	cJSON_AddBoolToObject(root, "has_rules", fg_registry_has_rules(reg));
	limits = cJSON_AddArrayToObject(root, "limits");
	cJSON_AddBoolToObject(root, "has_limits", fg_registry_has_limits(reg));
	if (devices == NULL || certs == NULL || accounts == NULL ||
	    rules == NULL || limits == NULL)
		goto fail;
	limit = fg_registry_limits(reg, &nlimits);
	for (i = 0; i < nlimits; i++) {
		cJSON *items[] = {
		    cJSON_CreateString(fg_limit_scope_str(limit[i].kind)),
		    str_or_null(limit[i].scope),
		    cJSON_CreateNumber((double)limit[i].messages),
		    cJSON_CreateNumber((double)limit[i].bytes),
		    cJSON_CreateNumber((double)limit[i].window_s),
		    cJSON_CreateNumber((double)limit[i].burst),
		};
		if (add_row(limits, items, 6) != 0)
			goto fail;
	}
	rule = fg_registry_rules(reg, &nrules);
	for (i = 0; i < nrules; i++) {
		cJSON *items[] = {
		    cJSON_CreateNumber((double)rule[i].id),
		    cJSON_CreateString(fg_rule_subject_str(rule[i].kind)),
		    str_or_null(rule[i].subject),
		    cJSON_CreateString(rule[i].pattern),
		    cJSON_CreateString(fg_rule_access_str(rule[i].access)),
		    cJSON_CreateBool(rule[i].allow),
		    cJSON_CreateNumber(rule[i].priority),
		};
		if (add_row(rules, items, 7) != 0)
			goto fail;
	}
	for (i = 0; i < fg_registry_device_count(reg); i++) {
		cJSON *items[] = {
		    cJSON_CreateString(dev[i].id),
		    cJSON_CreateString(dev[i].municipality),
		    cJSON_CreateString(fg_device_status_str(dev[i].status)),
		    cJSON_CreateBool(dev[i].require_api_key),
		    str_or_null(dev[i].api_key_hash),
		};
		if (add_row(devices, items, 5) != 0)
			goto fail;
	}
	for (i = 0; i < fg_registry_cert_count(reg); i++) {
		cJSON *items[] = {
		    cJSON_CreateString(crt[i].fp.hex),
		    cJSON_CreateString(crt[i].device_id),
		    cJSON_CreateNumber((double)crt[i].not_before),
		    cJSON_CreateNumber((double)crt[i].not_after),
		    cJSON_CreateNumber((double)crt[i].revoked_at),
		};
		if (add_row(certs, items, 5) != 0)
			goto fail;
	}
	for (i = 0; i < fg_registry_account_count(reg); i++) {
		cJSON *items[] = {
		    cJSON_CreateString(acc[i].username),
		    cJSON_CreateString(acc[i].password_hash),
		    cJSON_CreateString(acc[i].role),
		    str_or_null(acc[i].municipality),
		    cJSON_CreateBool(acc[i].cross_municipality),
		    cJSON_CreateBool(acc[i].disabled),
		};
		if (add_row(accounts, items, 6) != 0)
			goto fail;
	}
	return root;
fail:
	cJSON_Delete(root);
	return NULL;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int fg_registry_save(const struct fg_registry *reg, const char *path, char *err,
                     size_t errlen)
{
	char tmp[4096], header[128], sum[65];
	cJSON *root = NULL;
	char *body = NULL;
	int fd = -1, rc = -1;
	size_t len;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		fg_seterr(err, errlen, "snapshot path too long");
		return -1;
	}
	root = registry_to_json(reg);
	body = root ? cJSON_PrintUnformatted(root) : NULL;
	if (body == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	len = strlen(body);
	sha256_hex(body, len, sum);
	snprintf(header, sizeof(header), "%s %d sha256=%s\n", SNAPSHOT_MAGIC,
	         SNAPSHOT_FORMAT, sum);

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fg_seterr(err, errlen, "cannot create %s: %s", tmp,
		          strerror(errno));
		goto out;
	}
	/* An existing file keeps its mode through O_TRUNC; force 0600. */
	if (fchmod(fd, 0600) != 0 ||
	    write_all(fd, header, strlen(header)) != 0 ||
	    write_all(fd, body, len) != 0 || fsync(fd) != 0) {
		fg_seterr(err, errlen, "cannot write %s: %s", tmp,
		          strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		fg_seterr(err, errlen, "cannot write %s: %s", tmp,
		          strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		fg_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path,
		          strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	if (body != NULL) {
		memset(body, 0, strlen(body));
		free(body);
	}
	cJSON_Delete(root);
	return rc;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t off = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fg_seterr(err, errlen, "cannot open %s: %s", path,
		          strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || st.st_size > SNAPSHOT_MAX_BYTES) {
		fg_seterr(err, errlen, "%s: unreadable or too large", path);
		goto fail;
	}
	if ((st.st_mode & 077) != 0) {
		fg_seterr(err, errlen,
		          "%s: mode %03o lets other users read it; expected "
		          "0600",
		          path, (unsigned)(st.st_mode & 0777));
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	while (off < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fg_seterr(err, errlen, "cannot read %s", path);
			goto fail;
		}
		off += (size_t)r;
	}
	buf[off] = '\0';
	*len = off;
	close(fd);
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

static const char *row_str(const cJSON *row, int i, bool nullable, int *bad)
{
	const cJSON *item = cJSON_GetArrayItem(row, i);

	if (nullable && cJSON_IsNull(item))
		return NULL;
	if (!cJSON_IsString(item)) {
		*bad = 1;
		return NULL;
	}
	return item->valuestring;
}

static int64_t row_int(const cJSON *row, int i, int *bad)
{
	const cJSON *item = cJSON_GetArrayItem(row, i);

	if (!cJSON_IsNumber(item)) {
		*bad = 1;
		return 0;
	}
	return (int64_t)item->valuedouble;
}

static bool row_bool(const cJSON *row, int i, int *bad)
{
	const cJSON *item = cJSON_GetArrayItem(row, i);

	if (!cJSON_IsBool(item)) {
		*bad = 1;
		return false;
	}
	return cJSON_IsTrue(item);
}

static int json_to_registry(const cJSON *root, struct fg_registry *reg,
                            char *err, size_t errlen)
{
	const cJSON *devices = cJSON_GetObjectItem(root, "devices");
	const cJSON *certs = cJSON_GetObjectItem(root, "certificates");
	const cJSON *accounts = cJSON_GetObjectItem(root, "accounts");
	const cJSON *row, *rows;
	int bad = 0;

	if (!cJSON_IsArray(devices) || !cJSON_IsArray(certs) ||
	    !cJSON_IsArray(accounts)) {
		fg_seterr(err, errlen, "snapshot lacks its row arrays");
		return -1;
	}
	cJSON_ArrayForEach (row, devices) {
		enum fg_device_status st;
		const char *status = row_str(row, 2, false, &bad);

		if (bad || fg_device_status_parse(status, &st) != 0 ||
		    fg_registry_add_device(reg, row_str(row, 0, false, &bad),
		                           row_str(row, 1, false, &bad), st,
		                           row_bool(row, 3, &bad),
		                           row_str(row, 4, true, &bad)) != 0 ||
		    bad)
			goto bad_row;
	}
	cJSON_ArrayForEach (row, certs) {
		fg_fingerprint fp;

		if (fg_fingerprint_parse(row_str(row, 0, false, &bad), &fp) !=
		        0 ||
		    fg_registry_add_cert(reg, &fp, row_str(row, 1, false, &bad),
		                         row_int(row, 2, &bad),
		                         row_int(row, 3, &bad),
		                         row_int(row, 4, &bad)) != 0 ||
		    bad)
			goto bad_row;
	}
	cJSON_ArrayForEach (row, accounts) {
		if (fg_registry_add_account(reg, row_str(row, 0, false, &bad),
		                            row_str(row, 1, false, &bad),
		                            row_str(row, 2, false, &bad),
		                            row_str(row, 3, true, &bad),
		                            row_bool(row, 4, &bad),
		                            row_bool(row, 5, &bad)) != 0 ||
		    bad)
			goto bad_row;
	}
	rows = cJSON_GetObjectItem(root, "rules");
	cJSON_ArrayForEach (row, rows) {
		enum fg_rule_subject kind;
		enum fg_rule_access access;

		if (fg_rule_subject_parse(row_str(row, 1, false, &bad),
		                          &kind) != 0 ||
		    fg_rule_access_parse(row_str(row, 4, false, &bad),
		                         &access) != 0 ||
		    fg_registry_add_rule(reg, row_int(row, 0, &bad), kind,
		                         row_str(row, 2, true, &bad),
		                         row_str(row, 3, false, &bad), access,
		                         row_bool(row, 5, &bad),
		                         (int)row_int(row, 6, &bad)) != 0 ||
		    bad)
			goto bad_row;
	}
	fg_registry_set_has_rules(
	    reg, cJSON_IsTrue(cJSON_GetObjectItem(root, "has_rules")));
	/* Rate limits, in snapshots written since they are kept; an older
	 * snapshot has none, and the ratelimit plugin says so. */
	rows = cJSON_GetObjectItem(root, "limits");
	cJSON_ArrayForEach (row, rows) {
		enum fg_limit_scope kind;

		if (fg_limit_scope_parse(row_str(row, 0, false, &bad), &kind) !=
		        0 ||
		    fg_registry_add_limit(
		        reg, kind, row_str(row, 1, true, &bad),
		        row_int(row, 2, &bad), row_int(row, 3, &bad),
		        row_int(row, 4, &bad), row_int(row, 5, &bad)) != 0 ||
		    bad)
			goto bad_row;
	}
	fg_registry_set_has_limits(
	    reg, cJSON_IsTrue(cJSON_GetObjectItem(root, "has_limits")));
	return 0;
bad_row:
	fg_seterr(err, errlen, "snapshot holds a malformed row");
	return -1;
}

struct fg_registry *fg_registry_load(const char *path, char *err, size_t errlen)
{
	char expect[128], sum[65];
	struct fg_registry *reg = NULL;
	cJSON *root = NULL;
	const cJSON *item;
	char *buf, *body;
	size_t len, hlen;

	buf = read_file(path, &len, err, errlen);
	if (buf == NULL)
		return NULL;
	body = memchr(buf, '\n', len);
	if (body == NULL) {
		fg_seterr(err, errlen, "%s: no snapshot header", path);
		goto fail;
	}
	body++;
	hlen = (size_t)(body - buf);
	sha256_hex(body, len - hlen, sum);
	snprintf(expect, sizeof(expect), "%s %d sha256=%s\n", SNAPSHOT_MAGIC,
	         SNAPSHOT_FORMAT, sum);
	if (hlen != strlen(expect) || memcmp(buf, expect, hlen) != 0) {
		fg_seterr(err, errlen,
		          "%s: not a snapshot of format %d, or its checksum "
		          "does not match (torn or edited file)",
		          path, SNAPSHOT_FORMAT);
		goto fail;
	}
	root = cJSON_ParseWithLength(body, len - hlen);
	reg = fg_registry_new();
	if (root == NULL || reg == NULL) {
		fg_seterr(err, errlen, "%s: unparsable snapshot", path);
		goto fail;
	}
	if (json_to_registry(root, reg, err, errlen) != 0 ||
	    fg_registry_finalise(reg, err, errlen) != 0)
		goto fail;
	item = cJSON_GetObjectItem(root, "loaded_at");
	fg_registry_set_meta(reg, FG_REGISTRY_FROM_SNAPSHOT,
	                     (int)cJSON_GetNumberValue(
	                         cJSON_GetObjectItem(root, "schema_version")),
	                     cJSON_IsNumber(item) ? (int64_t)item->valuedouble
	                                          : 0);
	cJSON_Delete(root);
	memset(buf, 0, len);
	free(buf);
	return reg;
fail:
	fg_registry_free(reg);
	cJSON_Delete(root);
	memset(buf, 0, len);
	free(buf);
	return NULL;
}
