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
#include <inttypes.h>
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
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != 32)
		memset(md, 0, 32); /* matches no header a save writes */
	fg_hex(md, 32, out);
}

/*
 * The body is written field by field into a small buffer that goes to
 * the file (and into the checksum) whenever it fills: for 100,000 devices
 * a JSON tree would be a million small allocations, several times the
 * registry's own size, and one buffer for the whole body 16 MB, which
 * the loader thread's malloc arena would keep once freed. It is read back
 * with cJSON (fg_registry_load).
 */
#define SINK_FLUSH ((size_t)256 << 10)

struct sink {
	struct fg_buf buf;
	int fd;
	EVP_MD_CTX *md;
	int write_errno; /* of a failed write; buf.failed is set too */
};

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

static void sink_flush(struct sink *b)
{
	if (b->buf.failed || b->buf.len == 0)
		return;
	if (EVP_DigestUpdate(b->md, b->buf.p, b->buf.len) != 1) {
		b->buf.failed = true;
		return;
	}
	if (write_all(b->fd, b->buf.p, b->buf.len) != 0) {
		b->write_errno = errno;
		b->buf.failed = true;
		return;
	}
	/* The body holds password and API key hashes. */
	memset(b->buf.p, 0, b->buf.len);
	b->buf.len = 0;
}

static void put(struct sink *b, const char *s, size_t n)
{
	/* A failure stays in b->buf.failed. */
	if (fg_buf_add(&b->buf, s, n) == 0 && b->buf.len >= SINK_FLUSH)
		sink_flush(b);
}

static void put_raw(struct sink *b, const char *s)
{
	put(b, s, strlen(s));
}

/* A JSON string; NULL is null when nullable, and a failure otherwise. */
static void put_str(struct sink *b, const char *s, bool nullable)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t run = 0;

	if (s == NULL) {
		if (!nullable)
			b->buf.failed = true;
		put_raw(b, "null");
		return;
	}
	put(b, "\"", 1);
	for (;; u++) {
		char esc[6] = {'\\', 0, '0', '0', 0, 0};
		size_t n = 2;

		if (*u >= 0x20 && *u != '"' && *u != '\\') {
			run++;
			continue;
		}
		put(b, (const char *)u - run, run);
		run = 0;
		if (*u == '\0')
			break;
		switch (*u) {
		case '"':
		case '\\':
			esc[1] = (char)*u;
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			esc[1] = 'u';
			esc[4] = hex[*u >> 4];
			esc[5] = hex[*u & 0x0f];
			n = 6;
			break;
		}
		put(b, esc, n);
	}
	put(b, "\"", 1);
}

static void put_int(struct sink *b, int64_t v)
{
	char num[24];

	put(b, num, (size_t)snprintf(num, sizeof(num), "%" PRId64, v));
}

static void put_bool(struct sink *b, bool v)
{
	put_raw(b, v ? "true" : "false");
}

/* Before the first row of an array "[", before the others ",". */
static void row_start(struct sink *b, size_t i)
{
	put_raw(b, i == 0 ? "[" : ",[");
}

static void registry_body(const struct fg_registry *reg, struct sink *b)
{
	const struct fg_device *dev = fg_registry__devices(reg);
	const struct fg_cert *crt = fg_registry__certs(reg);
	const struct fg_account *acc = fg_registry__accounts(reg);
	const struct fg_rule *rule;
	const struct fg_limit *limit;
	size_t i, nrules, nlimits;

	put_raw(b, "{\"schema_version\":");
	put_int(b, fg_registry_schema_version(reg));
	put_raw(b, ",\"loaded_at\":");
	put_int(b, fg_registry_loaded_at(reg));
	put_raw(b, ",\"devices\":[");
	for (i = 0; i < fg_registry_device_count(reg); i++) {
		row_start(b, i);
		put_str(b, dev[i].id, false);
		put_raw(b, ",");
		put_str(b, dev[i].municipality, false);
		put_raw(b, ",");
		put_str(b, fg_device_status_str(dev[i].status), false);
		put_raw(b, ",");
		put_bool(b, dev[i].require_api_key);
		put_raw(b, ",");
		put_str(b, dev[i].api_key_hash, true);
		put_raw(b, "]");
	}
	put_raw(b, "],\"certificates\":[");
	for (i = 0; i < fg_registry_cert_count(reg); i++) {
		row_start(b, i);
		put_str(b, crt[i].fp.hex, false);
		put_raw(b, ",");
		put_str(b, crt[i].device_id, false);
		put_raw(b, ",");
		put_int(b, crt[i].not_before);
		put_raw(b, ",");
		put_int(b, crt[i].not_after);
		put_raw(b, ",");
		put_int(b, crt[i].revoked_at);
		put_raw(b, "]");
	}
	put_raw(b, "],\"accounts\":[");
	for (i = 0; i < fg_registry_account_count(reg); i++) {
		row_start(b, i);
		put_str(b, acc[i].username, false);
		put_raw(b, ",");
		put_str(b, acc[i].password_hash, false);
		put_raw(b, ",");
		put_str(b, acc[i].role, false);
		put_raw(b, ",");
		put_str(b, acc[i].municipality, true);
		put_raw(b, ",");
		put_bool(b, acc[i].cross_municipality);
		put_raw(b, ",");
		put_bool(b, acc[i].disabled);
		put_raw(b, "]");
	}
	put_raw(b, "],\"rules\":[");
	rule = fg_registry_rules(reg, &nrules);
	for (i = 0; i < nrules; i++) {
		row_start(b, i);
		put_int(b, rule[i].id);
		put_raw(b, ",");
		put_str(b, fg_rule_subject_str(rule[i].kind), false);
		put_raw(b, ",");
		put_str(b, rule[i].subject, true);
		put_raw(b, ",");
		put_str(b, rule[i].pattern, false);
		put_raw(b, ",");
		put_str(b, fg_rule_access_str(rule[i].access), false);
		put_raw(b, ",");
		put_bool(b, rule[i].allow);
		put_raw(b, ",");
		put_int(b, rule[i].priority);
		put_raw(b, "]");
	}
	put_raw(b, "],\"has_rules\":");
	put_bool(b, fg_registry_has_rules(reg));
	put_raw(b, ",\"limits\":[");
	limit = fg_registry_limits(reg, &nlimits);
	for (i = 0; i < nlimits; i++) {
		row_start(b, i);
		put_str(b, fg_limit_scope_str(limit[i].kind), false);
		put_raw(b, ",");
		put_str(b, limit[i].scope, true);
		put_raw(b, ",");
		put_int(b, limit[i].messages);
		put_raw(b, ",");
		put_int(b, limit[i].bytes);
		put_raw(b, ",");
		put_int(b, limit[i].window_s);
		put_raw(b, ",");
		put_int(b, limit[i].burst);
		put_raw(b, "]");
	}
	put_raw(b, "],\"has_limits\":");
	put_bool(b, fg_registry_has_limits(reg));
	put_raw(b, "}");
}

/* The header line, of the same length whatever the checksum. */
static void header_line(char *out, size_t len, const char *sum)
{
	snprintf(out, len, "%s %d sha256=%s\n", SNAPSHOT_MAGIC, SNAPSHOT_FORMAT,
	         sum);
}

int fg_registry_save(const struct fg_registry *reg, const char *path, char *err,
                     size_t errlen)
{
	char tmp[4096], header[128], sum[65];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	struct sink b = {.fd = -1};
	int rc = -1;
	size_t hlen;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		fg_seterr(err, errlen, "snapshot path too long");
		return -1;
	}
	b.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (b.fd < 0) {
		fg_seterr(err, errlen, "cannot create %s: %s", tmp,
		          strerror(errno));
		return -1;
	}
	/* The body follows a placeholder of the header's length; the header
	 * is written over it once the checksum is known. */
	memset(sum, '0', 64);
	sum[64] = '\0';
	header_line(header, sizeof(header), sum);
	hlen = strlen(header);
	b.md = EVP_MD_CTX_new();
	/* An existing file keeps its mode through O_TRUNC; force 0600. */
	if (b.md == NULL || EVP_DigestInit_ex(b.md, EVP_sha256(), NULL) != 1 ||
	    fchmod(b.fd, 0600) != 0 || write_all(b.fd, header, hlen) != 0) {
		fg_seterr(err, errlen, "cannot write %s: %s", tmp,
		          strerror(errno));
		goto out;
	}
	registry_body(reg, &b);
	sink_flush(&b);
	if (b.write_errno != 0) {
		fg_seterr(err, errlen, "cannot write %s: %s", tmp,
		          strerror(b.write_errno));
		goto out;
	}
	if (b.buf.failed || EVP_DigestFinal_ex(b.md, md, &mdlen) != 1 ||
	    mdlen < 32) {
		fg_seterr(err, errlen,
		          "out of memory, or a registry row "
		          "without a required field");
		goto out;
	}
	fg_hex(md, 32, sum);
	header_line(header, sizeof(header), sum);
	if (pwrite(b.fd, header, hlen, 0) != (ssize_t)hlen ||
	    fsync(b.fd) != 0) {
		fg_seterr(err, errlen, "cannot write %s: %s", tmp,
		          strerror(errno));
		goto out;
	}
	if (close(b.fd) != 0) {
		b.fd = -1;
		fg_seterr(err, errlen, "cannot write %s: %s", tmp,
		          strerror(errno));
		goto out;
	}
	b.fd = -1;
	if (rename(tmp, path) != 0) {
		fg_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path,
		          strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (b.fd >= 0)
		close(b.fd);
	if (rc != 0)
		unlink(tmp);
	EVP_MD_CTX_free(b.md);
	if (b.buf.p != NULL) {
		memset(b.buf.p, 0, b.buf.cap);
		free(b.buf.p);
	}
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
