/*
 * The journal's segment files: encoding, appending, reading back,
 * recovery at open, checkpoint and deletion. See persist_journal.h.
 */
#include "persist_journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fg_common.h"

#define MAGIC 0x31524746u /* "FGR1" */
#define HDR_LEN 12u
#define FIXED_LEN (4u + 8u * 4u + 4u * JF_COUNT)
#define ABSENT 0xffffffffu
#define DEFER_FLUSH_BYTES (64u << 10)
#define RBUF_LEN (JOURNAL_MAX_ENTRY + (256u << 10))
#define CHECKPOINT_EVERY_MS 1000
#define WAKE_BYTES (512u << 10)
/* Pages of the segment being appended to are made writable ahead of the
 * broker: this far ahead by the writer thread, the first bytes by the
 * broker at open. */
#define PREFAULT_AHEAD (4u << 20)
#define PREFAULT_FIRST (256u << 10)
/* The next segment, made ready by the writer thread (journal_prefault). */
#define SPARE_NAME "next.spare"
#define SPARE_RETRY_MS 1000
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

struct segment {
	uint64_t id;   /* sequence number of its first entry */
	uint64_t size; /* bytes of whole entries */
	int64_t mtime_ms;
};

struct journal {
	struct journal_settings s;
	int dirfd, lockfd;
	char id[33];

	pthread_mutex_t lock; /* guards the fields up to wake_gen */
	pthread_cond_t cond;
	struct segment *segs;
	size_t nsegs, capsegs;
	uint64_t disk_bytes;
	uint64_t committed;    /* everything <= is stored */
	uint64_t appended_seq; /* newest entry handed to the kernel */
	uint64_t unsignalled;  /* bytes appended since the writer was woken */
	/* Prefaulting the segment being appended to (journal_prefault): its
	 * id, mapping and size, how far the broker wrote, how far the pages
	 * are writable already. pf_off: the kernel cannot (before 5.14). */
	uint64_t pf_seg;
	unsigned char *pf_map;
	size_t pf_len, pf_written, pf_done;
	bool pf_off;
	bool dir_dirty; /* a segment was created since the directory sync */
	/* The next segment's file, created, allocated, mapped and its first
	 * pages writable by the writer, for the broker to rename at its next
	 * rotation: creating it there costs the broker a millisecond and
	 * more. spare_map NULL: none ready. Only the mapping is handed over:
	 * the writer's descriptors are in a table of its own. */
	unsigned char *spare_map;
	size_t spare_len, spare_ready;
	unsigned wake_gen;

	/* broker thread */
	int wfd;
	uint64_t wseg;
	unsigned char *map; /* the current segment, mapped for appending */
	size_t map_len;     /* its preallocated size */
	size_t wsize;       /* bytes of whole entries in it */
	uint64_t next_seq;
	unsigned char *dbuf, *ebuf;
	size_t dlen, dcap, ecap;
	uint64_t dfirst, dlast;
	/* disk_bytes as of the broker's last look: never below it, since
	 * only the broker adds to it, so an append that fits this fits. */
	uint64_t disk_seen;

	/* writer thread */
	int rfd;
	uint64_t rseg;
	unsigned char *rbuf;
	uint64_t rbuf_seg, rbuf_off; /* what rbuf holds */
	size_t rbuf_len;
	uint64_t sync_from; /* oldest segment that may hold unsynced data */
	/* The segment being appended to, mapped read-only by the writer so
	 * that it can sync a range of it (msync): fdatasync would also write
	 * back the pages made writable ahead of the broker, and the broker
	 * would then fault on every one of them again. */
	unsigned char *smap;
	size_t smap_len;
	uint64_t smap_seg;
	size_t sync_off;        /* bytes of smap_seg synced */
	int64_t spare_retry_ms; /* no spare before this after a failure */
	uint64_t ckpt_seq;
	int64_t ckpt_at_ms;
};

/* CRC-32C ----------------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t len)
{
	pthread_once(&crc_once, crc_init);
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
/* SSE 4.2 has an instruction for CRC-32C, eight bytes a step: the CRC of
 * every entry is computed on the broker thread. */
__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t c = crc;

	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		len -= 8;
	}
	crc = (uint32_t)c;
	while (len--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

uint32_t journal_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc_hw(crc, p, len);
#endif
	return ~crc_soft(crc, p, len);
}

/* Encoding ---------------------------------------------------------------- */

static unsigned char *put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
	return p + 4;
}

static unsigned char *put64(unsigned char *p, uint64_t v)
{
	memcpy(p, &v, 8);
	return p + 8;
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

size_t journal_entry_size(const struct journal_record *r)
{
	size_t n = HDR_LEN + FIXED_LEN;

	for (int i = 0; i < JF_COUNT; i++)
		if (r->f[i].p != NULL)
			n += r->f[i].len;
	return n;
}

static void encode(const struct journal_record *r, unsigned char *out,
                   size_t total)
{
	unsigned char *p = out + HDR_LEN;
	uint32_t body = (uint32_t)(total - HDR_LEN);

	*p++ = r->type;
	*p++ = r->qos;
	*p++ = 0;
	*p++ = 0;
	p = put64(p, r->seq);
	p = put64(p, (uint64_t)r->received_ms);
	p = put64(p, (uint64_t)r->measured_ms);
	p = put64(p, r->hash);
	for (int i = 0; i < JF_COUNT; i++)
		p = put32(p, r->f[i].p != NULL ? r->f[i].len : ABSENT);
	for (int i = 0; i < JF_COUNT; i++) {
		if (r->f[i].p != NULL && r->f[i].len > 0) {
			memcpy(p, r->f[i].p, r->f[i].len);
			p += r->f[i].len;
		}
	}
	put32(out, MAGIC);
	put32(out + 4, body);
	put32(out + 8, journal_crc32c(0, out + HDR_LEN, body));
}

/* Parse a body already checked against its CRC. Returns 0, or -1 when
 * its lengths do not add up. */
static int decode(const unsigned char *body, uint32_t len,
                  struct journal_record *r)
{
	const unsigned char *p = body, *end = body + len;
	uint64_t used = FIXED_LEN;

	if (len < FIXED_LEN)
		return -1;
	r->type = p[0];
	r->qos = p[1];
	p += 4;
	r->seq = get64(p);
	r->received_ms = (int64_t)get64(p + 8);
	r->measured_ms = (int64_t)get64(p + 16);
	r->hash = get64(p + 24);
	p += 32;
	for (int i = 0; i < JF_COUNT; i++) {
		uint32_t n = get32(p + 4 * i);
		r->f[i].len = n == ABSENT ? 0 : n;
		r->f[i].p = n == ABSENT ? NULL : "";
		if (n != ABSENT)
			used += n;
	}
	if (used != len)
		return -1;
	p += 4 * JF_COUNT;
	for (int i = 0; i < JF_COUNT; i++) {
		if (r->f[i].p != NULL && r->f[i].len > 0) {
			r->f[i].p = p;
			p += r->f[i].len;
		}
	}
	return p == end &&
	               (r->type == JOURNAL_READING || r->type == JOURNAL_AUDIT)
	           ? 0
	           : -1;
}

/* The wall clock in microseconds: where sequence numbers start. */
static uint64_t clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Segments ---------------------------------------------------------------- */

static void seg_name(char *buf, size_t len, uint64_t id)
{
	snprintf(buf, len, "%016" PRIx64 ".seg", id);
}

static int parse_seg_name(const char *name, uint64_t *id)
{
	char *end;

	if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0)
		return -1;
	errno = 0;
	*id = strtoull(name, &end, 16);
	return errno == 0 && end == name + 16 ? 0 : -1;
}

static int add_segment(struct journal *j, uint64_t id, uint64_t size,
                       int64_t mtime_ms)
{
	if (fg_grow(&j->segs, &j->capsegs, j->nsegs, sizeof(*j->segs)) != 0)
		return -1;
	j->segs[j->nsegs].id = id;
	j->segs[j->nsegs].size = size;
	j->segs[j->nsegs].mtime_ms = mtime_ms;
	j->nsegs++;
	return 0;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int list_segments(struct journal *j, char *err, size_t errlen)
{
	int fd = openat(j->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	int rc = 0;

	if (d == NULL) {
		fg_seterr(err, errlen, "cannot list %s: %s", j->s.dir,
		          strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while (rc == 0 && (e = readdir(d)) != NULL) {
		struct stat st;
		uint64_t id;

		if (parse_seg_name(e->d_name, &id) != 0)
			continue;
		if (fstatat(j->dirfd, e->d_name, &st, 0) != 0) {
			fg_seterr(err, errlen, "cannot stat %s/%s: %s",
			          j->s.dir, e->d_name, strerror(errno));
			rc = -1;
		} else if (add_segment(j, id, (uint64_t)st.st_size,
		                       (int64_t)st.st_mtim.tv_sec * 1000) !=
		           0) {
			fg_seterr(err, errlen, "out of memory");
			rc = -1;
		} else {
			j->disk_bytes += (uint64_t)st.st_size;
		}
	}
	closedir(d);
	if (rc == 0 && j->nsegs > 1)
		qsort(j->segs, j->nsegs, sizeof(*j->segs), cmp_seg);
	return rc;
}

/* Lock, id and checkpoint files ------------------------------------------ */

static int take_lock(struct journal *j, char *err, size_t errlen)
{
	j->lockfd =
	    openat(j->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (j->lockfd < 0) {
		fg_seterr(err, errlen, "cannot create %s/LOCK: %s", j->s.dir,
		          strerror(errno));
		return -1;
	}
	if (flock(j->lockfd, LOCK_EX | LOCK_NB) != 0) {
		fg_seterr(err, errlen,
		          "journal %s is in use by another process (%s); "
		          "each broker needs its own journal_dir",
		          j->s.dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int read_small(struct journal *j, const char *name, char *buf,
                      size_t len)
{
	int fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 1;
}

/* Replace name atomically with data (write a temporary, rename it). */
static int write_small(struct journal *j, const char *name, const char *data,
                       bool sync)
{
	char tmp[64];
	size_t len = strlen(data);
	int fd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = openat(j->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	            0600);
	if (fd < 0)
		return -1;
	if (write(fd, data, len) == (ssize_t)len && (!sync || fsync(fd) == 0))
		rc = 0;
	close(fd);
	if (rc == 0)
		rc = renameat(j->dirfd, tmp, j->dirfd, name);
	if (rc == 0 && sync)
		fsync(j->dirfd);
	return rc;
}

static int load_id(struct journal *j, char *err, size_t errlen)
{
	char buf[64];
	unsigned char raw[16];
	int got = read_small(j, "journal-id", buf, sizeof(buf));

	if (got > 0 && strlen(buf) >= 32) {
		memcpy(j->id, buf, 32);
		j->id[32] = '\0';
		return 0;
	}
	if (got < 0 || getrandom(raw, sizeof(raw), 0) != sizeof(raw)) {
		fg_seterr(err, errlen,
		          "cannot read or create %s/journal-id: %s", j->s.dir,
		          strerror(errno));
		return -1;
	}
	for (int i = 0; i < 16; i++)
		snprintf(j->id + 2 * i, 3, "%02x", raw[i]);
	snprintf(buf, sizeof(buf), "%s\n", j->id);
	if (write_small(j, "journal-id", buf, true) != 0) {
		fg_seterr(err, errlen, "cannot write %s/journal-id: %s",
		          j->s.dir, strerror(errno));
		return -1;
	}
	return 0;
}

static void load_checkpoint(struct journal *j)
{
	char buf[128];
	unsigned long long v;

	if (read_small(j, "checkpoint", buf, sizeof(buf)) > 0 &&
	    sscanf(buf, "committed %llu", &v) == 1)
		j->committed = j->ckpt_seq = (uint64_t)v;
}

static int save_checkpoint(struct journal *j, uint64_t seq)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "committed %" PRIu64 "\n", seq);
	if (write_small(j, "checkpoint", buf,
	                j->s.sync != JOURNAL_SYNC_NEVER) != 0)
		return -1;
	j->ckpt_seq = seq;
	j->ckpt_at_ms = fg_time_ms();
	return 0;
}

/* Reading ----------------------------------------------------------------- */

int journal_dirfd(const struct journal *j)
{
	return j->dirfd;
}

static void sync_map_release(struct journal *j)
{
	if (j->smap != NULL)
		munmap(j->smap, j->smap_len);
	j->smap = NULL;
	j->smap_len = 0;
	j->sync_off = 0;
}

void journal_reader_release(struct journal *j)
{
	if (j->rfd >= 0)
		close(j->rfd);
	j->rfd = -1;
	j->rbuf_len = 0;
	sync_map_release(j);
}

static int reader_open(struct journal *j, uint64_t seg)
{
	char name[32];

	if (j->rfd >= 0 && j->rseg == seg)
		return 0;
	if (j->rfd >= 0)
		close(j->rfd);
	seg_name(name, sizeof(name), seg);
	j->rfd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
	j->rseg = seg;
	j->rbuf_len = 0;
	return j->rfd >= 0 ? 0 : -1;
}

/* Make rbuf hold [off, off + need) of the open segment, which has avail
 * bytes. Returns a pointer to off, or NULL when those bytes do not exist
 * or cannot be read. */
static const unsigned char *reader_at(struct journal *j, uint64_t off,
                                      size_t need, uint64_t avail)
{
	size_t want;
	ssize_t n;

	if (need > RBUF_LEN || off + need > avail)
		return NULL;
	if (j->rbuf_len > 0 && j->rbuf_seg == j->rseg && off >= j->rbuf_off &&
	    off + need <= j->rbuf_off + j->rbuf_len)
		return j->rbuf + (off - j->rbuf_off);
	want = (size_t)(avail - off < RBUF_LEN ? avail - off : RBUF_LEN);
	n = pread(j->rfd, j->rbuf, want, (off_t)off);
	if (n < (ssize_t)need) {
		j->rbuf_len = 0;
		return NULL;
	}
	j->rbuf_seg = j->rseg;
	j->rbuf_off = off;
	j->rbuf_len = (size_t)n;
	return j->rbuf;
}

/*
 * Are the bytes [off, end) of the open segment (avail bytes) all zero?
 * Zeros are space preallocated and never written: the end of the segment
 * the broker was appending to when it died, or of one whose cut had not
 * reached the disk when the power went.
 */
static bool zero_run(struct journal *j, uint64_t off, uint64_t end,
                     uint64_t avail)
{
	while (off < end) {
		size_t n = (size_t)(end - off < 65536 ? end - off : 65536);
		const unsigned char *p = reader_at(j, off, n, avail);

		if (p == NULL)
			return false;
		for (size_t i = 0; i < n; i++)
			if (p[i] != 0)
				return false;
		off += n;
	}
	return true;
}

/* Is there an intact entry at off? Fills r and *len (the whole entry). */
static bool entry_at(struct journal *j, uint64_t off, uint64_t avail,
                     struct journal_record *r, uint64_t *len)
{
	const unsigned char *h = reader_at(j, off, HDR_LEN, avail);
	uint32_t body;

	if (h == NULL || get32(h) != MAGIC)
		return false;
	body = get32(h + 4);
	if (body < FIXED_LEN || body > JOURNAL_MAX_ENTRY)
		return false;
	h = reader_at(j, off, HDR_LEN + body, avail);
	if (h == NULL || journal_crc32c(0, h + HDR_LEN, body) != get32(h + 8))
		return false;
	if (decode(h + HDR_LEN, body, r) != 0)
		return false;
	*len = HDR_LEN + body;
	return true;
}

static ssize_t find_segment(const struct journal *j, uint64_t id)
{
	for (size_t i = 0; i < j->nsegs; i++)
		if (j->segs[i].id == id)
			return (ssize_t)i;
	return -1;
}

void journal_cursor_init(struct journal *j, struct journal_cursor *c)
{
	pthread_mutex_lock(&j->lock);
	c->segment = j->nsegs > 0 ? j->segs[0].id : 0;
	pthread_mutex_unlock(&j->lock);
	c->offset = 0;
	c->skipped_bytes = 0;
}

int journal_next(struct journal *j, struct journal_cursor *c,
                 struct journal_record *r, char *err, size_t errlen)
{
	for (;;) {
		uint64_t avail, len, next = 0;
		bool has_next;
		ssize_t i;

		pthread_mutex_lock(&j->lock);
		i = find_segment(j, c->segment);
		if (i < 0 && j->nsegs > 0 && c->segment < j->segs[0].id) {
			/* Deleted under us (already stored): start at the
			 * oldest segment left. */
			i = 0;
			c->segment = j->segs[0].id;
			c->offset = 0;
		}
		avail = i >= 0 ? j->segs[i].size : 0;
		has_next = i >= 0 && (size_t)i + 1 < j->nsegs;
		if (has_next)
			next = j->segs[i + 1].id;
		pthread_mutex_unlock(&j->lock);

		if (i < 0)
			return 0;
		if (c->offset >= avail) {
			if (!has_next)
				return 0;
			c->segment = next;
			c->offset = 0;
			continue;
		}
		if (reader_open(j, c->segment) != 0) {
			fg_seterr(err, errlen,
			          "cannot open segment %016" PRIx64
			          " in %s: %s",
			          c->segment, j->s.dir, strerror(errno));
			return -1;
		}
		if (entry_at(j, c->offset, avail, r, &len)) {
			c->offset += len;
			return 1;
		}
		/* Unused space to the end, not damage. */
		if (zero_run(j, c->offset, avail, avail)) {
			c->offset = avail;
			continue;
		}
		/* Damaged: look for the next intact entry in this segment. */
		uint64_t off = c->offset + 1;
		while (off + HDR_LEN <= avail &&
		       !entry_at(j, off, avail, r, &len))
			off++;
		c->skipped_bytes +=
		    (off + HDR_LEN <= avail ? off : avail) - c->offset;
		if (off + HDR_LEN > avail) {
			c->offset = avail;
			continue;
		}
		c->offset = off + len;
		return 1;
	}
}

/* Open-time recovery ------------------------------------------------------ */

/* Scan the newest segment: find its last intact entry, cut anything torn
 * after it, and feed recent entries to scan. Returns 0 or -1. */
static int recover(struct journal *j, int64_t window_ms, journal_scan_fn scan,
                   void *ctx, char *err, size_t errlen)
{
	int64_t now = fg_time_ms();
	size_t first = 0;
	uint64_t max_seq = 0;
	bool cut = false;

	while (first < j->nsegs &&
	       j->segs[first].mtime_ms < now - window_ms - 1000)
		first++;
	if (first == j->nsegs && j->nsegs > 0)
		first = j->nsegs - 1;
	for (size_t i = first; i < j->nsegs; i++) {
		struct journal_cursor c = {j->segs[i].id, 0, 0};
		struct journal_record r;
		uint64_t good_end = 0, len;
		bool last = i + 1 == j->nsegs;

		if (reader_open(j, c.segment) != 0) {
			fg_seterr(err, errlen,
			          "cannot open segment %016" PRIx64 ": %s",
			          c.segment, strerror(errno));
			return -1;
		}
		while (c.offset < j->segs[i].size) {
			if (entry_at(j, c.offset, j->segs[i].size, &r, &len)) {
				c.offset += len;
				good_end = c.offset;
			} else {
				/* Resync byte by byte; the unused, zeroed end
				 * of a segment the broker was appending to when
				 * it died is passed a page at a time. */
				uint64_t size = j->segs[i].size;
				uint64_t page_end = c.offset + 4096 < size
				                        ? c.offset + 4096
				                        : size;

				c.offset += c.offset % 4096 == 0 &&
				                    zero_run(j, c.offset,
				                             page_end, size)
				                ? 4096
				                : 1;
				continue;
			}
			if (r.seq > max_seq)
				max_seq = r.seq;
			if (scan != NULL && r.received_ms >= now - window_ms)
				scan(ctx, &r);
		}
		if (last && good_end < j->segs[i].size) {
			char name[32];
			int fd;

			seg_name(name, sizeof(name), j->segs[i].id);
			fd = openat(j->dirfd, name, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || ftruncate(fd, (off_t)good_end) != 0) {
				fg_seterr(err, errlen,
				          "cannot cut torn tail "
				          "of %s: %s",
				          name, strerror(errno));
				if (fd >= 0)
					close(fd);
				return -1;
			}
			close(fd);
			j->disk_bytes -= j->segs[i].size - good_end;
			j->segs[i].size = good_end;
			cut = true;
			/* The read buffer may hold the bytes just cut; new
			 * entries can take their place when the segment was
			 * cut to nothing and is appended to again. */
			j->rbuf_len = 0;
		}
	}
	if (j->nsegs > 0 && j->segs[j->nsegs - 1].id > max_seq + 1)
		max_seq = j->segs[j->nsegs - 1].id - 1;
	j->next_seq = max_seq + 1;
	if (j->committed + 1 > j->next_seq)
		j->next_seq = j->committed + 1;
	/* After a cut, numbers continue from the clock: entries cut from a
	 * torn tail may have reached the database already, and their
	 * numbers must not be given to new entries (which would then be
	 * skipped as stored). */
	if (cut && clock_us() > j->next_seq)
		j->next_seq = clock_us();
	return 0;
}

/* Drop the segments whose every entry is at or below seq, never the
 * newest (the broker appends to it, and it holds the highest sequence
 * number). Caller holds the lock. */
static int delete_committed(struct journal *j, uint64_t seq)
{
	size_t n = 0;
	int rc = 0;

	while (n + 1 < j->nsegs && j->segs[n + 1].id - 1 <= seq) {
		char name[32];

		seg_name(name, sizeof(name), j->segs[n].id);
		if (unlinkat(j->dirfd, name, 0) != 0 && errno != ENOENT) {
			rc = -1;
			break;
		}
		j->disk_bytes -= j->segs[n].size;
		n++;
	}
	if (n > 0) {
		memmove(j->segs, j->segs + n,
		        (j->nsegs - n) * sizeof(*j->segs));
		j->nsegs -= n;
	}
	return rc;
}

struct journal *journal_open(const struct journal_settings *s,
                             int64_t scan_window_ms, journal_scan_fn scan,
                             void *ctx, char *err, size_t errlen)
{
	struct journal *j = calloc(1, sizeof(*j));

	if (j == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	j->s = *s;
	j->dirfd = j->lockfd = j->wfd = j->rfd = -1;
	j->map = NULL;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	j->rbuf = malloc(RBUF_LEN);
	if (j->rbuf == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	if (mkdir(s->dir, 0700) != 0 && errno != EEXIST) {
		fg_seterr(err, errlen, "cannot create journal_dir %s: %s",
		          s->dir, strerror(errno));
		goto fail;
	}
	j->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		fg_seterr(err, errlen, "cannot open journal_dir %s: %s", s->dir,
		          strerror(errno));
		goto fail;
	}
	if (take_lock(j, err, errlen) != 0 || load_id(j, err, errlen) != 0 ||
	    list_segments(j, err, errlen) != 0)
		goto fail;
	/* A spare left by an earlier run holds no entry. */
	(void)unlinkat(j->dirfd, SPARE_NAME, 0);
	load_checkpoint(j);
	if (j->nsegs == 0 && j->committed == 0) {
		/* A new journal starts its numbers at the clock (in
		 * microseconds), so that a broker whose journal was lost
		 * never reuses the numbers its old journal gave. */
		j->committed = clock_us();
		if (save_checkpoint(j, j->committed) != 0) {
			fg_seterr(err, errlen, "cannot write %s/checkpoint: %s",
			          s->dir, strerror(errno));
			goto fail;
		}
	}
	delete_committed(j, j->committed);
	if (recover(j, scan_window_ms, scan, ctx, err, errlen) != 0)
		goto fail;
	j->appended_seq = j->next_seq - 1;
	j->sync_from = j->nsegs > 0 ? j->segs[0].id : 0;
	j->disk_seen = j->disk_bytes;
	return j;
fail:
	journal_close(j);
	return NULL;
}

static void finish_segment(struct journal *j, bool sync);

void journal_close(struct journal *j)
{
	char err[128];

	if (j == NULL)
		return;
	/* Also when nothing undeferred was appended since open (no
	 * segment is open for writing yet): write_out opens one. */
	if (j->dlen > 0)
		journal_flush(j, err, sizeof(err));
	/* At a stop the broker may wait for the disk. */
	finish_segment(j, j->s.sync != JOURNAL_SYNC_NEVER);
	if (j->dir_dirty)
		fsync(j->dirfd);
	if (j->spare_map != NULL) {
		munmap(j->spare_map, j->spare_len);
		(void)unlinkat(j->dirfd, SPARE_NAME, 0);
	}
	if (j->rfd >= 0)
		close(j->rfd);
	sync_map_release(j);
	if (j->lockfd >= 0)
		close(j->lockfd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	free(j->segs);
	free(j->dbuf);
	free(j->ebuf);
	free(j->rbuf);
	free(j);
}

const char *journal_id(const struct journal *j)
{
	return j->id;
}

/* Appending --------------------------------------------------------------- */

/*
 * Close the segment being appended to: its preallocated tail is cut, so
 * that only the newest segment can end in unused space. It is not synced
 * here (sync false) with fsync batch: that would stall the broker for as
 * long as the disk takes to write a segment; the writer thread syncs it
 * (journal_sync). With always (every entry was synced as it was
 * written) and at a stop, sync makes the cut durable at once.
 */
static void finish_segment(struct journal *j, bool sync)
{
	pthread_mutex_lock(&j->lock);
	j->pf_map = NULL;
	pthread_mutex_unlock(&j->lock);
	if (j->map != NULL)
		munmap(j->map, j->map_len);
	if (j->wfd >= 0) {
		/* If this fails, recovery at the next start cuts the tail. */
		int rc = ftruncate(j->wfd, (off_t)j->wsize);
		(void)rc;
		if (sync)
			fdatasync(j->wfd);
		close(j->wfd);
	}
	j->map = NULL;
	j->map_len = 0;
	j->wfd = -1;
	j->wsize = 0;
}

/* Bytes to allocate for a segment that must hold need bytes: the
 * configured size, or more, in whole pages. The spare has need 0. */
static size_t segment_alloc_len(const struct journal *j, size_t need)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (size_t)j->s.segment_bytes;

	if (len < need)
		len = need;
	return (len + page - 1) / page * page;
}

/* The bytes of a new segment of len bytes made writable before the first
 * append. */
static size_t first_pages(size_t len)
{
	return len < PREFAULT_FIRST ? len : PREFAULT_FIRST;
}

/*
 * The spare the writer made ready, renamed to segment id's name and
 * opened: a descriptor of this thread's, the mapping, its size and
 * writable bytes in the out parameters. False when there is none of at
 * least len bytes, when a file of that name is already there (a segment
 * cut to nothing at recovery, appended to again), or when the rename or
 * the open fails (the spare is dropped then; a renamed file is used by
 * the caller as it would any file of the name).
 */
static bool take_spare(struct journal *j, uint64_t id, const char *name,
                       size_t len, int *fd, unsigned char **map, size_t *maplen,
                       size_t *ready)
{
	bool fresh;

	pthread_mutex_lock(&j->lock);
	fresh = j->nsegs == 0 || j->segs[j->nsegs - 1].id != id;
	if (!fresh || j->spare_map == NULL || j->spare_len < len) {
		pthread_mutex_unlock(&j->lock);
		return false;
	}
	*map = j->spare_map;
	*maplen = j->spare_len;
	*ready = j->spare_ready;
	j->spare_map = NULL;
	j->spare_len = j->spare_ready = 0;
	pthread_mutex_unlock(&j->lock);
	/* The writer creates a spare only where no file of the name is, so
	 * it cannot make another before this rename. */
	if (renameat(j->dirfd, SPARE_NAME, j->dirfd, name) != 0) {
		munmap(*map, *maplen);
		(void)unlinkat(j->dirfd, SPARE_NAME, 0);
		return false;
	}
	*fd = openat(j->dirfd, name, O_RDWR | O_CLOEXEC);
	if (*fd < 0) {
		munmap(*map, *maplen);
		return false;
	}
	return true;
}

/*
 * Start segment id for appending: its space is allocated on disk first
 * (so that a full disk is an error here, never a fault when the mapping is
 * written) and mapped. Appending is then a copy into the page cache: the
 * data belongs to the kernel at once, so it survives a SIGKILL of the
 * broker exactly as a write(2) would, at a fraction of the cost. The
 * writer thread's spare is used when there is one, so that the broker
 * only renames a file.
 */
/*
 * Create name in the journal directory (excl: 0 or O_EXCL), allocate its
 * len bytes on disk and map them writable. Returns the mapping, with the
 * descriptor in *fd; or NULL with errno set, and *fd -1 when the file
 * could not be created, or else the descriptor the failed file had (now
 * closed, and the file removed).
 */
static unsigned char *create_mapped(struct journal *j, const char *name,
                                    int excl, size_t len, int *fd)
{
	void *map = MAP_FAILED;
	int e;

	*fd = openat(j->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | excl, 0600);
	if (*fd < 0)
		return NULL;
	e = posix_fallocate(*fd, 0, (off_t)len);
	if (e == 0)
		map =
		    mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	else
		errno = e;
	if (map != MAP_FAILED)
		return map;
	e = errno;
	(void)unlinkat(j->dirfd, name, 0);
	close(*fd);
	errno = e;
	return NULL;
}

static int open_segment(struct journal *j, uint64_t id, size_t need, char *err,
                        size_t errlen)
{
	size_t len = segment_alloc_len(j, need), ready = 0;
	unsigned char *map;
	char name[32];
	int fd;

	/* With always the broker waits for the disk anyway: the cut tail
	 * reaches it too, at once. */
	finish_segment(j, j->s.sync == JOURNAL_SYNC_ALWAYS);
	seg_name(name, sizeof(name), id);
	if (!take_spare(j, id, name, len, &fd, &map, &len, &ready) &&
	    (map = create_mapped(j, name, 0, len, &fd)) == NULL) {
		if (fd < 0)
			fg_seterr(err, errlen, "cannot create %s/%s: %s",
			          j->s.dir, name, strerror(errno));
		else
			fg_seterr(err, errlen,
			          "cannot allocate %zu bytes for %s/%s: %s",
			          len, j->s.dir, name, strerror(errno));
		return -1;
	}
	/* The new name must reach the disk before an entry in it counts as
	 * synced: at once with always, by the writer's next sync with batch. */
	if (j->s.sync == JOURNAL_SYNC_ALWAYS)
		fsync(j->dirfd);
	pthread_mutex_lock(&j->lock);
	j->dir_dirty = j->s.sync == JOURNAL_SYNC_BATCH;
	if (j->nsegs == 0 || j->segs[j->nsegs - 1].id != id) {
		if (add_segment(j, id, 0, fg_time_ms()) != 0) {
			pthread_mutex_unlock(&j->lock);
			munmap(map, len);
			close(fd);
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
	}
	/* A page of a shared file mapping faults on its first write (the
	 * kernel tracks it dirty from then on): one fault every dozen
	 * readings. The first pages are made writable here in one call
	 * unless the spare's already are, the rest by the writer thread
	 * ahead of the appends. */
	if (ready == 0) {
		ready = first_pages(len);
		if (!j->pf_off &&
		    madvise(map, ready, MADV_POPULATE_WRITE) != 0 &&
		    errno == EINVAL)
			j->pf_off = true;
	}
	j->pf_seg = id;
	j->pf_map = map;
	j->pf_len = len;
	j->pf_written = 0;
	j->pf_done = ready;
	pthread_mutex_unlock(&j->lock);
	j->wfd = fd;
	j->wseg = id;
	j->map = map;
	j->map_len = len;
	j->wsize = 0;
	return 0;
}

/*
 * Writer thread: make the broker's next segment ready ahead (take_spare).
 * Its space is not counted in the journal's disk use: at most one
 * segment's worth, allocated and never written until it is taken.
 */
static void prepare_spare(struct journal *j)
{
	size_t len = segment_alloc_len(j, 0), ready = first_pages(len);
	bool want, pf_off;
	void *map;
	int fd;

	if (fg_mono_ms() < j->spare_retry_ms)
		return;
	pthread_mutex_lock(&j->lock);
	want = j->spare_map == NULL && j->pf_map != NULL;
	pf_off = j->pf_off;
	pthread_mutex_unlock(&j->lock);
	if (!want)
		return;
	/* O_EXCL: a spare the broker took and has not renamed yet is never
	 * opened again here. */
	map = create_mapped(j, SPARE_NAME, O_EXCL, len, &fd);
	if (map == NULL) {
		if (fd < 0 && errno == EEXIST)
			return;
		/* A full disk, say: the broker then creates its next segment
		 * itself, and says what fails. */
		j->spare_retry_ms = fg_mono_ms() + SPARE_RETRY_MS;
		return;
	}
	if (pf_off || madvise(map, ready, MADV_POPULATE_WRITE) != 0)
		ready = 0;
	close(fd); /* the broker opens the file by its new name */
	pthread_mutex_lock(&j->lock);
	j->spare_map = map;
	j->spare_len = len;
	j->spare_ready = ready;
	pthread_mutex_unlock(&j->lock);
}

void journal_prefault(struct journal *j)
{
	unsigned char *map;
	size_t from, to;
	uint64_t seg;

	prepare_spare(j);
	pthread_mutex_lock(&j->lock);
	map = j->pf_off ? NULL : j->pf_map;
	seg = j->pf_seg;
	from = j->pf_done > j->pf_written ? j->pf_done : j->pf_written;
	to = j->pf_written + PREFAULT_AHEAD;
	if (to > j->pf_len)
		to = j->pf_len;
	pthread_mutex_unlock(&j->lock);
	if (map == NULL || from >= to)
		return;
	from &= ~(size_t)4095;
	/*
	 * Without the lock, so that the broker's appends never wait for it.
	 * The broker may unmap the segment meanwhile (the kernel orders the
	 * two), and the address may even be mapped again: making pages
	 * writable changes no byte of any mapping, so the worst is a wasted
	 * call.
	 */
	if (madvise(map + from, to - from, MADV_POPULATE_WRITE) != 0) {
		if (errno == EINVAL) {
			pthread_mutex_lock(&j->lock);
			j->pf_off = true;
			pthread_mutex_unlock(&j->lock);
		}
		return;
	}
	pthread_mutex_lock(&j->lock);
	if (j->pf_seg == seg && j->pf_done < to)
		j->pf_done = to;
	pthread_mutex_unlock(&j->lock);
}

/* Copy iov (total bytes, entries first..last) into the current segment,
 * starting a new one first when it has no room. */
static int write_out(struct journal *j, const struct iovec *iov, int n,
                     size_t total, uint64_t first, uint64_t last, char *err,
                     size_t errlen)
{
	size_t at;

	if (j->map == NULL || j->wsize + total > j->map_len) {
		if (open_segment(j, first, total, err, errlen) != 0)
			return -1;
	}
	at = j->wsize;
	for (int i = 0; i < n; i++) {
		memcpy(j->map + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	if (j->s.sync == JOURNAL_SYNC_ALWAYS) {
		long page = sysconf(_SC_PAGESIZE);
		size_t from = j->wsize / (size_t)page * (size_t)page;

		if (msync(j->map + from, at - from, MS_SYNC) != 0) {
			fg_seterr(err, errlen, "journal sync failed in %s: %s",
			          j->s.dir, strerror(errno));
			return -1;
		}
	}
	j->wsize = at;
	pthread_mutex_lock(&j->lock);
	j->segs[j->nsegs - 1].size += total;
	j->disk_bytes += total;
	j->disk_seen = j->disk_bytes;
	j->pf_written = at;
	if (last > j->appended_seq)
		j->appended_seq = last;
	/* The writer polls every flush_ms; waking it for every entry would
	 * cost the broker a futex call and a context switch per message.
	 * It is woken early only when a batch's worth has piled up. */
	j->unsignalled += total;
	if (j->unsignalled >= WAKE_BYTES) {
		j->unsignalled = 0;
		j->wake_gen++;
		pthread_cond_signal(&j->cond);
	}
	pthread_mutex_unlock(&j->lock);
	return 0;
}

static int reserve(unsigned char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 4096;
	while (n < need)
		n *= 2;
	unsigned char *p = realloc(*buf, n);
	if (p == NULL)
		return -1;
	*buf = p;
	*cap = n;
	return 0;
}

/* Broker thread. The lock is taken only when the bytes seen at the last
 * append leave no room: the writer may have deleted segments since. */
static bool room_for(struct journal *j, size_t bytes)
{
	uint64_t budget = j->s.budget_bytes;

	if (j->disk_seen + j->dlen + bytes <= budget)
		return true;
	pthread_mutex_lock(&j->lock);
	j->disk_seen = j->disk_bytes;
	pthread_mutex_unlock(&j->lock);
	return j->disk_seen + j->dlen + bytes <= budget;
}

bool journal_has_room(struct journal *j, size_t payload_len)
{
	return room_for(j, HDR_LEN + FIXED_LEN + payload_len + 1024);
}

int journal_flush(struct journal *j, char *err, size_t errlen)
{
	struct iovec iov;
	int rc;

	if (j->dlen == 0)
		return 0;
	iov.iov_base = j->dbuf;
	iov.iov_len = j->dlen;
	rc = write_out(j, &iov, 1, j->dlen, j->dfirst, j->dlast, err, errlen);
	/* On failure the entries stay buffered for the next attempt: their
	 * appends were answered 0. */
	if (rc == 0)
		j->dlen = 0;
	return rc;
}

int journal_append(struct journal *j, struct journal_record *r, bool defer,
                   char *err, size_t errlen)
{
	size_t size = journal_entry_size(r);
	struct iovec iov[2];
	int n = 0, rc;

	if (size - HDR_LEN > JOURNAL_MAX_ENTRY) {
		fg_seterr(err, errlen,
		          "entry of %zu bytes is over the journal's "
		          "limit",
		          size);
		return -1;
	}
	if (!room_for(j, size))
		return JOURNAL_FULL;
	r->seq = j->next_seq++;
	if (defer) {
		if (reserve(&j->dbuf, &j->dcap, j->dlen + size) != 0) {
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
		encode(r, j->dbuf + j->dlen, size);
		if (j->dlen == 0)
			j->dfirst = r->seq;
		j->dlast = r->seq;
		j->dlen += size;
		if (j->dlen >= DEFER_FLUSH_BYTES)
			return journal_flush(j, err, errlen);
		return 0;
	}
	if (reserve(&j->ebuf, &j->ecap, size) != 0) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	encode(r, j->ebuf, size);
	if (j->dlen > 0) {
		iov[n].iov_base = j->dbuf;
		iov[n++].iov_len = j->dlen;
	}
	iov[n].iov_base = j->ebuf;
	iov[n++].iov_len = size;
	rc = write_out(j, iov, n, j->dlen + size, j->dlen ? j->dfirst : r->seq,
	               r->seq, err, errlen);
	if (rc == 0)
		j->dlen = 0;
	return rc;
}

/* Writer side ------------------------------------------------------------- */

void journal_wait(struct journal *j, int timeout_ms)
{
	struct timespec ts;
	unsigned gen;

	fg_timespec_in(&ts, CLOCK_REALTIME, timeout_ms);
	pthread_mutex_lock(&j->lock);
	gen = j->wake_gen;
	while (gen == j->wake_gen)
		if (pthread_cond_timedwait(&j->cond, &j->lock, &ts) != 0)
			break;
	pthread_mutex_unlock(&j->lock);
}

void journal_wake(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	j->wake_gen++;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
}

/* Sync one finished segment, by name: all of its pages are final. */
static int sync_finished(struct journal *j, uint64_t id, char *err,
                         size_t errlen)
{
	char name[32];
	int fd;

	seg_name(name, sizeof(name), id);
	fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0; /* stored and deleted meanwhile */
	if (fd < 0 || fdatasync(fd) != 0) {
		fg_seterr(err, errlen, "cannot sync %s/%s: %s", j->s.dir, name,
		          strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/*
 * Sync bytes [sync_off, upto) of segment id, the one the broker appends
 * to (len bytes preallocated), through the writer's own read-only mapping
 * of it: msync syncs that range of the file and nothing beyond it, so the
 * pages ahead of the broker stay writable. The partly written last page
 * is written back too, which costs the broker one fault on it.
 */
static int sync_current(struct journal *j, uint64_t id, size_t len, size_t upto,
                        char *err, size_t errlen)
{
	size_t from;

	if (j->smap == NULL || j->smap_seg != id) {
		char name[32];
		void *map;
		int fd;

		sync_map_release(j);
		seg_name(name, sizeof(name), id);
		fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			return 0;
		map = fd < 0 ? MAP_FAILED
		             : mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			fg_seterr(err, errlen,
			          "cannot map %s/%s to sync it: %s", j->s.dir,
			          name, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		j->smap = map;
		j->smap_len = len;
		j->smap_seg = id;
		j->sync_off = 0;
	}
	if (upto > j->smap_len)
		upto = j->smap_len;
	if (upto <= j->sync_off)
		return 0;
	from = j->sync_off & ~(size_t)4095;
	if (msync(j->smap + from, upto - from, MS_SYNC) != 0) {
		fg_seterr(err, errlen,
		          "cannot sync segment %016" PRIx64 " in %s: %s", id,
		          j->s.dir, strerror(errno));
		return -1;
	}
	j->sync_off = upto;
	return 0;
}

int journal_sync(struct journal *j, char *err, size_t errlen)
{
	uint64_t ids[64], cur = 0, next_from;
	size_t n = 0, cur_len = 0, cur_upto = 0;
	bool open_seg, dir, more = false;

	pthread_mutex_lock(&j->lock);
	open_seg = j->pf_map != NULL;
	if (open_seg) {
		cur = j->pf_seg;
		cur_len = j->pf_len;
		cur_upto = j->pf_written;
	}
	for (size_t i = 0; i < j->nsegs; i++) {
		uint64_t id = j->segs[i].id;

		if (id < j->sync_from || (open_seg && id == cur))
			continue;
		if (n == sizeof(ids) / sizeof(ids[0])) {
			more = true;
			break;
		}
		ids[n++] = id;
	}
	dir = j->dir_dirty;
	j->dir_dirty = false;
	pthread_mutex_unlock(&j->lock);

	if (dir && fsync(j->dirfd) != 0) {
		fg_seterr(err, errlen, "cannot sync %s: %s", j->s.dir,
		          strerror(errno));
		pthread_mutex_lock(&j->lock);
		j->dir_dirty = true;
		pthread_mutex_unlock(&j->lock);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (sync_finished(j, ids[i], err, errlen) != 0)
			return -1;
	if (open_seg &&
	    sync_current(j, cur, cur_len, cur_upto, err, errlen) != 0)
		return -1;
	/* From here on only the open segment (which may be finished before
	 * the next sync: it is then synced whole) and newer ones need it. */
	next_from = more       ? ids[n - 1] + 1
	            : open_seg ? cur
	            : n > 0    ? ids[n - 1] + 1
	                       : j->sync_from;
	if (next_from > j->sync_from)
		j->sync_from = next_from;
	return 0;
}

int journal_committed(struct journal *j, uint64_t seq, bool force, char *err,
                      size_t errlen)
{
	size_t before;
	int rc;

	pthread_mutex_lock(&j->lock);
	if (seq > j->appended_seq)
		seq = j->appended_seq; /* never beyond what exists */
	if (seq > j->committed)
		j->committed = seq;
	before = j->nsegs;
	rc = delete_committed(j, j->committed);
	seq = j->committed;
	bool deleted = j->nsegs != before;
	pthread_mutex_unlock(&j->lock);
	if (rc != 0) {
		fg_seterr(err, errlen,
		          "cannot delete a stored segment in %s: %s", j->s.dir,
		          strerror(errno));
		return -1;
	}
	/* The database is the authority on what is stored; the checkpoint
	 * only spares a restart the work of skipping stored entries, so it
	 * is written when segments go and otherwise once a second. */
	if (seq != j->ckpt_seq &&
	    (force || deleted ||
	     fg_time_ms() - j->ckpt_at_ms >= CHECKPOINT_EVERY_MS) &&
	    save_checkpoint(j, seq) != 0) {
		fg_seterr(err, errlen, "cannot write %s/checkpoint: %s",
		          j->s.dir, strerror(errno));
		return -1;
	}
	return 0;
}

uint64_t journal_checkpoint(const struct journal *j)
{
	return j->ckpt_seq;
}

void journal_stats(struct journal *j, struct journal_stats *out)
{
	pthread_mutex_lock(&j->lock);
	out->next_seq = j->next_seq;
	out->committed_seq = j->committed;
	out->disk_bytes = j->disk_bytes + j->dlen;
	out->budget_bytes = j->s.budget_bytes;
	out->pending_entries =
	    j->next_seq - 1 > j->committed ? j->next_seq - 1 - j->committed : 0;
	out->segments = j->nsegs;
	out->prefaulted_bytes = j->pf_map != NULL ? j->pf_done : 0;
	pthread_mutex_unlock(&j->lock);
}
