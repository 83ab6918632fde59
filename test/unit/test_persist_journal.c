/*
 * Unit tests: the persist plugin's journal (appending, reading back,
 * recovery of torn and damaged segments, rotation, deletion of committed
 * segments, the disk budget, the lock and the open-time scan) and resend
 * detection. The journal is exercised through its public API on real
 * files in a temporary directory under /tmp, which each test removes at
 * its end; a failing test leaves its directory behind for inspection.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "persist_journal.h"
#include "persist_resend.h"
#include "unit_run.h"

#define BASE_MS INT64_C(1700000000000)
#define MAX_SEGS 4096

/* The temporary directory of the running test; the journal lives in its
 * subdirectory "j", which journal_open creates. */
static char tmp[64];
static char jdir[80];

static void make_tmp(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/fg-journal-test.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(jdir, sizeof(jdir), "%s/j", tmp);
}

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_tmp(void)
{
	if (tmp[0] != '\0')
		nftw(tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	tmp[0] = '\0';
}

/* Sample entries ---------------------------------------------------------- */

/* Entry i of a test: both types, NULL and empty fields, payloads of many
 * lengths and, for i == 7, one with every byte value. */
struct sample {
	struct journal_record r;
	char dev[32], muni[32], client[32], topic[64];
	unsigned char payload[256];
};

static void sample_make(struct sample *s, unsigned i, int64_t received_ms)
{
	uint32_t plen = i == 7 ? 256u : i % 61;

	memset(&s->r, 0, sizeof(s->r));
	s->r.type = i % 3 == 0 ? JOURNAL_AUDIT : JOURNAL_READING;
	s->r.qos = (uint8_t)(i % 3);
	s->r.received_ms = received_ms;
	s->r.measured_ms = BASE_MS - (int64_t)i * 1000;
	s->r.hash = (uint64_t)i * UINT64_C(0x9e3779b97f4a7c15);
	snprintf(s->dev, sizeof(s->dev), "dev-%u", i);
	snprintf(s->muni, sizeof(s->muni), "muni-%u", i % 7);
	snprintf(s->client, sizeof(s->client), "client-%u", i);
	snprintf(s->topic, sizeof(s->topic), "water/muni-%u/dev-%u/readings",
	         i % 7, i);
	for (uint32_t k = 0; k < plen; k++)
		s->payload[k] =
		    (unsigned char)(i == 7 ? k : (i * 31 + k) & 0xff);
	/* Device: absent, empty or set. */
	if (i % 4 != 0)
		s->r.f[JF_DEVICE].p = s->dev;
	s->r.f[JF_DEVICE].len = i % 4 > 1 ? (uint32_t)strlen(s->dev) : 0;
	if (i % 5 != 0) {
		s->r.f[JF_MUNICIPALITY].p = s->muni;
		s->r.f[JF_MUNICIPALITY].len = (uint32_t)strlen(s->muni);
	}
	if (i % 2 == 0)
		s->r.f[JF_ACCOUNT].p = ""; /* present and empty */
	s->r.f[JF_CLIENT].p = s->client;
	s->r.f[JF_CLIENT].len = (uint32_t)strlen(s->client);
	s->r.f[JF_TOPIC].p = s->topic;
	s->r.f[JF_TOPIC].len = (uint32_t)strlen(s->topic);
	s->r.f[JF_PAYLOAD].p = s->payload;
	s->r.f[JF_PAYLOAD].len = plen;
}

/* Does got hold exactly the fields of sample i? Returns 0, or the number
 * of the first field (1-based) that differs, or -1 for a fixed field. */
static int sample_diff(const struct journal_record *got, unsigned i,
                       int64_t received_ms)
{
	struct sample s;

	sample_make(&s, i, received_ms);
	if (got->type != s.r.type || got->qos != s.r.qos ||
	    got->received_ms != s.r.received_ms ||
	    got->measured_ms != s.r.measured_ms || got->hash != s.r.hash)
		return -1;
	for (int k = 0; k < JF_COUNT; k++) {
		const struct journal_bytes *a = &got->f[k], *b = &s.r.f[k];
		if ((a->p == NULL) != (b->p == NULL) || a->len != b->len ||
		    (a->len > 0 && memcmp(a->p, b->p, a->len) != 0))
			return k + 1;
	}
	return 0;
}

static void assert_sample(const struct journal_record *got, unsigned i,
                          int64_t received_ms)
{
	int d = sample_diff(got, i, received_ms);

	ck_assert_msg(d == 0, "entry %u differs in field %d", i, d);
}

/* Journal helpers --------------------------------------------------------- */

static struct journal *open_sync(uint64_t segment_bytes, uint64_t budget,
                                 int64_t window_ms, journal_scan_fn scan,
                                 void *ctx, enum journal_sync sync)
{
	struct journal_settings s = {jdir, segment_bytes, budget, sync};
	char err[256] = "";
	struct journal *j =
	    journal_open(&s, window_ms, scan, ctx, err, sizeof(err));

	ck_assert_msg(j != NULL, "journal_open: %s", err);
	return j;
}

static struct journal *open_with(uint64_t segment_bytes, uint64_t budget,
                                 int64_t window_ms, journal_scan_fn scan,
                                 void *ctx)
{
	return open_sync(segment_bytes, budget, window_ms, scan, ctx,
	                 JOURNAL_SYNC_NEVER);
}

static struct journal *open_default(void)
{
	return open_with(1u << 20, 1u << 30, 0, NULL, NULL);
}

/* Append sample i; returns its sequence number. */
static uint64_t append_sample(struct journal *j, unsigned i, bool defer)
{
	struct sample s;
	char err[256] = "";
	int rc;

	sample_make(&s, i, BASE_MS + i);
	rc = journal_append(j, &s.r, defer, err, sizeof(err));
	ck_assert_msg(rc == 0, "append %u: rc %d: %s", i, rc, err);
	return s.r.seq;
}

/* Read the next entry, which must exist. */
static void next_entry(struct journal *j, struct journal_cursor *c,
                       struct journal_record *r)
{
	char err[256] = "";
	int rc = journal_next(j, c, r, err, sizeof(err));

	ck_assert_msg(rc == 1, "journal_next: rc %d: %s", rc, err);
}

static void assert_caught_up(struct journal *j, struct journal_cursor *c)
{
	struct journal_record r;
	char err[256] = "";

	ck_assert_int_eq(journal_next(j, c, &r, err, sizeof(err)), 0);
}

/* The segment ids in the journal directory, sorted. */
static size_t list_segs(uint64_t *ids, size_t max)
{
	DIR *d = opendir(jdir);
	struct dirent *e;
	size_t n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		if (len == 20 && strcmp(e->d_name + 16, ".seg") == 0 && n < max)
			ids[n++] = strtoull(e->d_name, NULL, 16);
	}
	closedir(d);
	for (size_t a = 1; a < n; a++)
		for (size_t b = a; b > 0 && ids[b - 1] > ids[b]; b--) {
			uint64_t t = ids[b];
			ids[b] = ids[b - 1];
			ids[b - 1] = t;
		}
	return n;
}

static void seg_path(char *buf, size_t len, uint64_t id)
{
	snprintf(buf, len, "%s/%016" PRIx64 ".seg", jdir, id);
}

static off_t file_size(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_size;
}

static size_t sample_size(unsigned i)
{
	struct sample s;

	sample_make(&s, i, BASE_MS + i);
	return journal_entry_size(&s.r);
}

/* The only segment of the journal (the tests that damage files write one). */
static void only_segment(char *path, size_t len)
{
	uint64_t ids[4];

	ck_assert_uint_eq(list_segs(ids, 4), 1);
	seg_path(path, len, ids[0]);
}

/* Appending and reading back ---------------------------------------------- */

START_TEST(entries_read_back_in_order_with_every_field_intact)
{
	enum { N = 300 };
	static uint64_t seqs[N];
	struct journal_cursor c;
	struct journal_record r;
	struct journal *j;
	char err[256];

	make_tmp();
	j = open_default();
	for (unsigned i = 0; i < N; i++) {
		/* Runs of deferred entries, each ended by an undeferred one. */
		seqs[i] = append_sample(j, i, i % 5 != 4 && i != N - 1);
		if (i > 0)
			ck_assert_uint_gt(seqs[i], seqs[i - 1]);
	}
	journal_cursor_init(j, &c);
	for (unsigned i = 0; i < N; i++) {
		next_entry(j, &c, &r);
		ck_assert_uint_eq(r.seq, seqs[i]);
		assert_sample(&r, i, BASE_MS + i);
	}
	ck_assert_int_eq(journal_next(j, &c, &r, err, sizeof(err)), 0);
	ck_assert_uint_eq(c.skipped_bytes, 0);
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(deferred_entries_stay_invisible_until_flushed)
{
	struct journal_cursor c;
	struct journal_record r;
	struct journal *j;
	uint64_t a, b;
	char err[256] = "";

	make_tmp();
	j = open_default();
	journal_cursor_init(j, &c);
	a = append_sample(j, 1, true);
	b = append_sample(j, 2, true);
	ck_assert_uint_eq(b, a + 1);
	assert_caught_up(j, &c);
	ck_assert_int_eq(journal_flush(j, err, sizeof(err)), 0);
	next_entry(j, &c, &r);
	ck_assert_uint_eq(r.seq, a);
	assert_sample(&r, 1, BASE_MS + 1);
	next_entry(j, &c, &r);
	ck_assert_uint_eq(r.seq, b);
	assert_caught_up(j, &c);
	/* Nothing deferred: a flush writes nothing. */
	ck_assert_int_eq(journal_flush(j, err, sizeof(err)), 0);
	assert_caught_up(j, &c);
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(closing_flushes_deferred_entries)
{
	struct journal_cursor c;
	struct journal_record r;
	struct journal *j;
	uint64_t a;

	make_tmp();
	j = open_default();
	a = append_sample(j, 3, true);
	journal_close(j);
	j = open_default();
	journal_cursor_init(j, &c);
	next_entry(j, &c, &r);
	ck_assert_uint_eq(r.seq, a);
	assert_sample(&r, 3, BASE_MS + 3);
	assert_caught_up(j, &c);
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(reopened_journal_keeps_entries_id_and_numbering)
{
	enum { N = 50 };
	struct journal_cursor c;
	struct journal_record r;
	struct journal *j;
	char id[64];
	uint64_t first = 0, last = 0, again;

	make_tmp();
	j = open_default();
	snprintf(id, sizeof(id), "%s", journal_id(j));
	ck_assert_uint_eq(strlen(id), 32);
	ck_assert_uint_eq(strspn(id, "0123456789abcdef"), 32);
	for (unsigned i = 0; i < N; i++) {
		last = append_sample(j, i, i % 2 == 0);
		if (i == 0)
			first = last;
	}
	journal_close(j);

	j = open_default();
	ck_assert_str_eq(journal_id(j), id);
	journal_cursor_init(j, &c);
	for (unsigned i = 0; i < N; i++) {
		next_entry(j, &c, &r);
		ck_assert_uint_eq(r.seq, first + i);
		assert_sample(&r, i, BASE_MS + i);
	}
	assert_caught_up(j, &c);
	again = append_sample(j, 99, false);
	ck_assert_uint_eq(again, last + 1);
	next_entry(j, &c, &r);
	ck_assert_uint_eq(r.seq, again);
	assert_sample(&r, 99, BASE_MS + 99);
	journal_close(j);
	remove_tmp();
}
END_TEST

static uint64_t clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

START_TEST(a_new_journal_numbers_from_the_clock_and_a_later_one_higher)
{
	struct journal *j;
	uint64_t before, after, s1, s2;

	make_tmp();
	before = clock_us();
	j = open_default();
	after = clock_us();
	s1 = append_sample(j, 0, false);
	journal_close(j);
	ck_assert_uint_gt(s1, before);
	ck_assert_uint_le(s1, after + 1);

	/* A second, new journal in another directory. */
	snprintf(jdir, sizeof(jdir), "%s/k", tmp);
	j = open_default();
	s2 = append_sample(j, 0, false);
	ck_assert_uint_ge(s2, s1);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* Recovery ---------------------------------------------------------------- */

/* Append n undeferred samples; returns the end offset of entry n - 1. */
static off_t append_n(struct journal *j, unsigned n, uint64_t *first)
{
	off_t end = 0;

	for (unsigned i = 0; i < n; i++) {
		uint64_t seq = append_sample(j, i, false);
		if (i == 0 && first != NULL)
			*first = seq;
		end += (off_t)sample_size(i);
	}
	return end;
}

/* After a reopen: entries 0..n-1 from first, then new appends. */
static void assert_recovered(struct journal *j, unsigned n, uint64_t first)
{
	struct journal_cursor c;
	struct journal_record r;
	uint64_t seq;
	char err[256] = "";

	journal_cursor_init(j, &c);
	for (unsigned i = 0; i < n; i++) {
		next_entry(j, &c, &r);
		ck_assert_uint_eq(r.seq, first + i);
		assert_sample(&r, i, BASE_MS + i);
	}
	assert_caught_up(j, &c);
	ck_assert_uint_eq(c.skipped_bytes, 0);
	for (unsigned i = 100; i < 105; i++) {
		seq = append_sample(j, i, i % 2 == 0);
		ck_assert_uint_gt(seq, first + n - 1);
	}
	ck_assert_int_eq(journal_flush(j, err, sizeof(err)), 0);
	for (unsigned i = 100; i < 105; i++) {
		next_entry(j, &c, &r);
		assert_sample(&r, i, BASE_MS + i);
	}
	assert_caught_up(j, &c);
	ck_assert_uint_eq(c.skipped_bytes, 0);
}

START_TEST(a_torn_last_entry_is_cut_at_reopen)
{
	enum { N = 20 };
	struct journal *j;
	char path[160];
	uint64_t first = 0;
	off_t whole, end;

	make_tmp();
	j = open_default();
	end = append_n(j, N, &first);
	journal_close(j);
	only_segment(path, sizeof(path));
	ck_assert_int_eq(file_size(path), end);
	whole = end - (off_t)sample_size(N - 1);
	ck_assert_int_eq(truncate(path, whole + (end - whole) / 2), 0);

	j = open_default();
	ck_assert_int_eq(file_size(path), whole);
	assert_recovered(j, N - 1, first);
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(garbage_after_the_last_entry_is_cut_at_reopen)
{
	enum { N = 20 };
	unsigned char junk[1000];
	struct journal *j;
	char path[160];
	uint64_t first = 0;
	off_t end;
	FILE *f;

	make_tmp();
	j = open_default();
	end = append_n(j, N, &first);
	journal_close(j);
	only_segment(path, sizeof(path));
	srand(42);
	for (size_t k = 0; k < sizeof(junk); k++)
		junk[k] = (unsigned char)(rand() & 0xff);
	f = fopen(path, "ab");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
	fclose(f);
	ck_assert_int_eq(file_size(path), end + (off_t)sizeof(junk));

	j = open_default();
	ck_assert_int_eq(file_size(path), end);
	assert_recovered(j, N, first);
	journal_close(j);
	remove_tmp();
}
END_TEST

/*
 * A segment whose only entry is torn is cut to nothing, and the next
 * entry reuses its file and number. The new entry (of another length than
 * the torn one) must read back.
 */
START_TEST(a_wholly_torn_segment_is_reused_and_its_new_entry_reads_back)
{
	struct journal_cursor c;
	struct journal_record r;
	struct journal *j;
	char path[160];
	uint64_t first, again;

	make_tmp();
	j = open_default();
	first = append_sample(j, 7, false); /* 256-byte payload */
	journal_close(j);
	only_segment(path, sizeof(path));
	ck_assert_int_eq(truncate(path, 40), 0);

	j = open_default();
	ck_assert_int_eq(file_size(path), 0);
	again = append_sample(j, 1, false); /* 1-byte payload */
	/* Numbers continue from the clock after a cut, never reused. */
	ck_assert_uint_gt(again, first);
	journal_cursor_init(j, &c);
	next_entry(j, &c, &r);
	ck_assert_uint_eq(r.seq, again);
	assert_sample(&r, 1, BASE_MS + 1);
	ck_assert_uint_eq(c.skipped_bytes, 0);
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(a_damaged_entry_is_skipped_and_later_entries_read_back)
{
	enum { N = 10, BAD = 4 };
	struct journal_cursor c;
	struct journal_record r;
	struct journal *j;
	char path[160];
	uint64_t first = 0;
	off_t at = 0, end;
	unsigned char b;
	int fd;

	make_tmp();
	j = open_default();
	end = append_n(j, N, &first);
	journal_close(j);
	only_segment(path, sizeof(path));
	for (unsigned i = 0; i < BAD; i++)
		at += (off_t)sample_size(i);
	/* A byte near the end of the entry's body (in its payload). */
	at += (off_t)sample_size(BAD) - 3;
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x5a;
	ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);

	j = open_default();
	journal_cursor_init(j, &c);
	for (unsigned i = 0; i < N; i++) {
		if (i == BAD)
			continue;
		next_entry(j, &c, &r);
		ck_assert_uint_eq(r.seq, first + i);
		assert_sample(&r, i, BASE_MS + i);
		if (i < BAD)
			ck_assert_uint_eq(c.skipped_bytes, 0);
		else
			ck_assert_uint_eq(c.skipped_bytes, sample_size(BAD));
	}
	assert_caught_up(j, &c);
	/* The damage is in the middle, so nothing was cut. */
	ck_assert_int_eq(file_size(path), end);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* Rotation and deletion --------------------------------------------------- */

static int read_checkpoint(uint64_t *seq)
{
	char path[160], buf[64];
	unsigned long long v = 0;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/checkpoint", jdir);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	ok = fgets(buf, sizeof(buf), f) != NULL &&
	     sscanf(buf, "committed %llu", &v) == 1;
	fclose(f);
	*seq = (uint64_t)v;
	return ok ? 0 : -1;
}

START_TEST(small_segments_rotate_and_committed_ones_are_deleted)
{
	enum { N = 300, MID = 150 };
	static uint64_t seqs[N], ids[MAX_SEGS], left[MAX_SEGS];
	struct journal_cursor c, early;
	struct journal_record r;
	struct journal_stats st;
	struct journal *j;
	size_t n, nleft, keep;
	uint64_t ck = 0;
	char err[256] = "";

	make_tmp();
	j = open_with(4096, 1u << 30, 0, NULL, NULL);
	for (unsigned i = 0; i < N; i++)
		seqs[i] = append_sample(j, i, i % 3 != 2);
	ck_assert_int_eq(journal_flush(j, err, sizeof(err)), 0);
	n = list_segs(ids, MAX_SEGS);
	ck_assert_uint_gt(n, 3);
	journal_stats(j, &st);
	ck_assert_uint_eq(st.segments, n);
	ck_assert_uint_eq(st.next_seq, seqs[N - 1] + 1);
	ck_assert_uint_eq(st.pending_entries, N);
	ck_assert_uint_eq(ids[0], seqs[0]);
	/* No write here is larger than a segment, so none is over it. */
	for (size_t k = 0; k < n; k++) {
		char path[160];
		seg_path(path, sizeof(path), ids[k]);
		ck_assert_int_le(file_size(path), 4096);
	}

	/* Everything reads back across the segments. */
	journal_cursor_init(j, &c);
	journal_cursor_init(j, &early);
	for (unsigned i = 0, k = 0; i < N; i++) {
		next_entry(j, &c, &r);
		ck_assert_uint_eq(r.seq, seqs[i]);
		assert_sample(&r, i, BASE_MS + i);
		/* Each segment is named after its first entry. */
		if (k < n && c.segment == ids[k]) {
			ck_assert_uint_eq(r.seq, ids[k]);
			k++;
		}
	}
	assert_caught_up(j, &c);

	/* Up to MID: the segments whose every entry is at or below it go. */
	ck_assert_int_eq(
	    journal_committed(j, seqs[MID], false, err, sizeof(err)), 0);
	keep = 0;
	while (keep + 1 < n && ids[keep + 1] - 1 <= seqs[MID])
		keep++;
	nleft = list_segs(left, MAX_SEGS);
	ck_assert_uint_eq(nleft, n - keep);
	for (size_t k = 0; k < nleft; k++)
		ck_assert_uint_eq(left[k], ids[keep + k]);
	ck_assert_uint_le(left[0], seqs[MID]);
	ck_assert_uint_eq(journal_checkpoint(j), seqs[MID]);
	ck_assert_int_eq(read_checkpoint(&ck), 0);
	ck_assert_uint_eq(ck, seqs[MID]);
	journal_stats(j, &st);
	ck_assert_uint_eq(st.segments, nleft);
	ck_assert_uint_eq(st.committed_seq, seqs[MID]);
	ck_assert_uint_eq(st.pending_entries, N - 1 - MID);

	/* A cursor in a deleted segment moves on to the oldest one left. */
	next_entry(j, &early, &r);
	ck_assert_uint_eq(r.seq, left[0]);

	/* Reopened, the reader starts at the oldest segment left, so it
	 * sees entries at or below the checkpoint again (the writer skips
	 * those itself); numbering goes on after the newest entry. */
	journal_close(j);
	j = open_with(4096, 1u << 30, 0, NULL, NULL);
	ck_assert_uint_eq(journal_checkpoint(j), seqs[MID]);
	journal_cursor_init(j, &c);
	next_entry(j, &c, &r);
	ck_assert_uint_eq(r.seq, left[0]);
	ck_assert_uint_le(r.seq, seqs[MID]);
	ck_assert_uint_eq(append_sample(j, 1000, false), seqs[N - 1] + 1);

	/* Everything: only the newest segment is left. */
	ck_assert_int_eq(
	    journal_committed(j, seqs[N - 1] + 1, false, err, sizeof(err)), 0);
	nleft = list_segs(left, MAX_SEGS);
	ck_assert_uint_eq(nleft, 1);
	journal_stats(j, &st);
	ck_assert_uint_eq(st.segments, 1);
	ck_assert_uint_eq(st.pending_entries, 0);
	ck_assert_uint_eq(journal_checkpoint(j), seqs[N - 1] + 1);
	journal_close(j);

	/* After a reopen the checkpoint still holds, and a committed seq
	 * lower than it changes nothing. */
	j = open_with(4096, 1u << 30, 0, NULL, NULL);
	ck_assert_uint_eq(journal_checkpoint(j), seqs[N - 1] + 1);
	ck_assert_int_eq(journal_committed(j, seqs[0], true, err, sizeof(err)),
	                 0);
	ck_assert_uint_eq(journal_checkpoint(j), seqs[N - 1] + 1);
	ck_assert_uint_eq(append_sample(j, 1001, false), seqs[N - 1] + 2);
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(a_commit_without_deletion_writes_the_checkpoint_only_when_forced)
{
	struct journal *j;
	uint64_t a, b, ck = 0, before = 0;
	char err[256] = "";

	make_tmp();
	j = open_default();
	ck_assert_int_eq(read_checkpoint(&before), 0);
	a = append_sample(j, 1, false);
	b = append_sample(j, 2, false);
	/* One segment, so nothing is deleted. The checkpoint was written
	 * at open, under a second ago: only a forced commit writes it. */
	ck_assert_int_eq(journal_committed(j, a, true, err, sizeof(err)), 0);
	ck_assert_int_eq(read_checkpoint(&ck), 0);
	ck_assert_uint_eq(ck, a);
	ck_assert_int_eq(journal_committed(j, b, false, err, sizeof(err)), 0);
	ck_assert_int_eq(read_checkpoint(&ck), 0);
	ck_assert_uint_eq(ck, a); /* within the second: not yet */
	ck_assert_uint_eq(journal_checkpoint(j), a);
	ck_assert_int_eq(journal_committed(j, b, true, err, sizeof(err)), 0);
	ck_assert_int_eq(read_checkpoint(&ck), 0);
	ck_assert_uint_eq(ck, b);
	ck_assert_uint_lt(before, a);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* Disk budget ------------------------------------------------------------- */

/* Append sample 5 (fixed size) until the budget refuses it; returns how
 * many went in and the seq of the last. */
static unsigned fill(struct journal *j, uint64_t *last)
{
	struct sample s;
	char err[256] = "";
	unsigned n = 0;

	for (;;) {
		int rc;

		sample_make(&s, 5, BASE_MS);
		rc = journal_append(j, &s.r, false, err, sizeof(err));
		if (rc == JOURNAL_FULL)
			return n;
		ck_assert_msg(rc == 0, "append: %d: %s", rc, err);
		*last = s.r.seq;
		n++;
		ck_assert_uint_lt(n, 100000);
	}
}

START_TEST(a_full_budget_refuses_appends_until_committed_segments_go)
{
	struct journal_stats st;
	struct journal *j;
	struct sample s;
	uint64_t last = 0, last2 = 0, esize = sample_size(5);
	char err[256] = "";
	unsigned n;

	make_tmp();
	j = open_with(4096, 16384, 0, NULL, NULL);
	n = fill(j, &last);
	ck_assert_uint_gt(n, 0);
	sample_make(&s, 5, BASE_MS);
	journal_stats(j, &st);
	ck_assert_uint_le(st.disk_bytes, 16384);
	ck_assert_uint_gt(st.disk_bytes + esize, 16384);
	ck_assert_uint_gt(st.segments, 1);
	ck_assert(!journal_has_room(j, s.r.f[JF_PAYLOAD].len));
	/* A refused append takes no number. */
	ck_assert_uint_eq(st.next_seq, last + 1);
	/* Deferring does not get round the budget. */
	sample_make(&s, 5, BASE_MS);
	ck_assert_int_eq(journal_append(j, &s.r, true, err, sizeof(err)),
	                 JOURNAL_FULL);

	/* Committing everything deletes all but the newest segment, which
	 * is at most one segment's size: room again. */
	ck_assert_int_eq(journal_committed(j, last, false, err, sizeof(err)),
	                 0);
	journal_stats(j, &st);
	ck_assert_uint_eq(st.segments, 1);
	ck_assert_uint_le(st.disk_bytes, 4096);
	ck_assert(journal_has_room(j, 100));
	sample_make(&s, 5, BASE_MS);
	ck_assert_int_eq(journal_append(j, &s.r, false, err, sizeof(err)), 0);
	ck_assert_uint_eq(s.r.seq, last + 1);
	/* And it fills up to the same point again. */
	ck_assert_uint_gt(fill(j, &last2), 0);
	journal_stats(j, &st);
	ck_assert_uint_le(st.disk_bytes, 16384);
	ck_assert_uint_gt(st.disk_bytes + esize, 16384);
	journal_close(j);
	remove_tmp();
}
END_TEST

/*
 * The newest segment is never deleted and a refused append never rotates,
 * so a budget that one segment can fill stays full for good, even when
 * everything is committed. The plugin refuses such settings (the budget
 * must hold two segments); the journal itself does not.
 */
START_TEST(a_budget_within_one_segment_stays_full_after_everything_commits)
{
	struct journal_stats st;
	struct journal *j;
	struct sample s;
	uint64_t last = 0;
	char err[256] = "";

	make_tmp();
	j = open_with(1u << 20, 8192, 0, NULL, NULL);
	ck_assert_uint_gt(fill(j, &last), 0);
	ck_assert_int_eq(journal_committed(j, last, true, err, sizeof(err)), 0);
	journal_stats(j, &st);
	ck_assert_uint_eq(st.segments, 1);
	ck_assert_uint_eq(st.pending_entries, 0);
	sample_make(&s, 5, BASE_MS);
	ck_assert_int_eq(journal_append(j, &s.r, false, err, sizeof(err)),
	                 JOURNAL_FULL);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* Lock -------------------------------------------------------------------- */

START_TEST(a_second_open_of_a_journal_in_use_fails_naming_the_problem)
{
	struct journal_settings s = {NULL, 1u << 20, 1u << 30,
	                             JOURNAL_SYNC_NEVER};
	struct journal *j, *k;
	char err[256] = "";

	make_tmp();
	j = open_default();
	s.dir = jdir;
	k = journal_open(&s, 0, NULL, NULL, err, sizeof(err));
	ck_assert_ptr_null(k);
	ck_assert_msg(strstr(err, "in use") != NULL, "err: %s", err);
	ck_assert_msg(strstr(err, jdir) != NULL, "err: %s", err);
	/* The failed open left the first one's lock alone. */
	k = journal_open(&s, 0, NULL, NULL, err, sizeof(err));
	ck_assert_ptr_null(k);
	journal_close(j);
	j = open_default();
	journal_close(j);
	remove_tmp();
}
END_TEST

START_TEST(an_unusable_directory_fails_with_a_message)
{
	struct journal_settings s = {"/proc/fg-no-such-journal", 1u << 20,
	                             1u << 30, JOURNAL_SYNC_NEVER};
	char err[256] = "";

	ck_assert_ptr_null(journal_open(&s, 0, NULL, NULL, err, sizeof(err)));
	ck_assert_msg(strstr(err, "/proc/fg-no-such-journal") != NULL,
	              "err: %s", err);
}
END_TEST

/* Scan at open ------------------------------------------------------------ */

struct scan_seen {
	unsigned n;
	uint64_t seq[64];
	int diff[64];
};

/* Entries are sample i with received_ms = now_ms - i * 10 s; the scan
 * recognises i from the client field. */
static int64_t scan_now;

static void on_scan(void *ctx, const struct journal_record *r)
{
	struct scan_seen *seen = ctx;
	char client[32] = "";
	unsigned i;

	if (seen->n >= 64)
		return;
	ck_assert_ptr_nonnull(r->f[JF_CLIENT].p);
	ck_assert_uint_lt(r->f[JF_CLIENT].len, sizeof(client));
	memcpy(client, r->f[JF_CLIENT].p, r->f[JF_CLIENT].len);
	ck_assert_int_eq(sscanf(client, "client-%u", &i), 1);
	seen->seq[seen->n] = r->seq;
	seen->diff[seen->n] =
	    sample_diff(r, i, scan_now - (int64_t)i * 10000) == 0 ? (int)i : -1;
	seen->n++;
}

START_TEST(the_scan_at_open_sees_recent_entries_with_their_fields)
{
	struct scan_seen seen = {0};
	struct journal *j;
	struct sample s;
	uint64_t seqs[12];
	char err[256] = "";

	make_tmp();
	scan_now = (int64_t)(clock_us() / 1000);
	j = open_default();
	/* Entries 11 down to 0: 110 s old to now. */
	for (int i = 11; i >= 0; i--) {
		sample_make(&s, (unsigned)i, scan_now - (int64_t)i * 10000);
		ck_assert_int_eq(
		    journal_append(j, &s.r, i % 2 == 0, err, sizeof(err)), 0);
		seqs[i] = s.r.seq;
	}
	journal_close(j);

	/* A 55 s window: entries 0..5. */
	j = open_with(1u << 20, 1u << 30, 55000, on_scan, &seen);
	ck_assert_uint_eq(seen.n, 6);
	for (unsigned k = 0; k < 6; k++) {
		ck_assert_int_eq(seen.diff[k], (int)(5 - k));
		ck_assert_uint_eq(seen.seq[k], seqs[5 - k]);
	}
	journal_close(j);
	remove_tmp();
}
END_TEST

/* CRC-32C ----------------------------------------------------------------- */

START_TEST(crc32c_gives_the_standard_check_value)
{
	ck_assert_uint_eq(journal_crc32c(0, "123456789", 9), 0xE3069283u);
	/* It can be computed in pieces. */
	ck_assert_uint_eq(
	    journal_crc32c(journal_crc32c(0, "1234", 4), "56789", 5),
	    0xE3069283u);
	ck_assert_uint_eq(journal_crc32c(0, "", 0), 0);
}
END_TEST

/* A reader alongside the appender ----------------------------------------- */

enum { CONCURRENT_N = 100000 };

struct reader_ctx {
	struct journal *j;
	uint64_t first;
	unsigned got;
	unsigned bad; /* first wrong entry + 1, or 0 */
	uint64_t skipped;
	int error;
};

static void *reader_main(void *arg)
{
	struct reader_ctx *rc = arg;
	struct journal_cursor c;
	struct journal_record r;
	char err[256];

	journal_cursor_init(rc->j, &c);
	while (rc->got < CONCURRENT_N) {
		int n = journal_next(rc->j, &c, &r, err, sizeof(err));

		if (n < 0) {
			rc->error = 1;
			break;
		}
		if (n == 0 || rc->got % 64 == 0)
			journal_prefault(rc->j); /* racing segment switches */
		if (n == 0) {
			journal_wait(rc->j, 10);
			continue;
		}
		if (rc->bad == 0 &&
		    (r.seq != rc->first + rc->got ||
		     sample_diff(&r, rc->got % 1000, BASE_MS + rc->got) != 0))
			rc->bad = rc->got + 1;
		rc->got++;
	}
	rc->skipped = c.skipped_bytes;
	return NULL;
}

START_TEST(a_reader_running_alongside_appends_sees_every_entry_whole)
{
	struct reader_ctx rc = {0};
	struct journal *j;
	struct sample s;
	pthread_t t;
	char err[256] = "";

	make_tmp();
	j = open_with(256u << 10, 1u << 30, 0, NULL, NULL);
	rc.j = j;
	{
		struct journal_stats st;
		journal_stats(j, &st);
		rc.first = st.next_seq;
	}
	ck_assert_int_eq(pthread_create(&t, NULL, reader_main, &rc), 0);
	for (unsigned i = 0; i < CONCURRENT_N; i++) {
		sample_make(&s, i % 1000, BASE_MS + i);
		ck_assert_int_eq(
		    journal_append(j, &s.r, i % 4 != 0, err, sizeof(err)), 0);
	}
	ck_assert_int_eq(journal_flush(j, err, sizeof(err)), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(rc.error, 0);
	ck_assert_msg(rc.bad == 0, "entry %u read back wrong", rc.bad - 1);
	ck_assert_uint_eq(rc.got, CONCURRENT_N);
	ck_assert_uint_eq(rc.skipped, 0);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* The writer makes the pages ahead of the appends writable; what it
 * touched is counted, and the entries are unchanged by it. */
START_TEST(pages_ahead_of_the_appends_are_made_writable)
{
	struct journal *j;
	struct journal_stats st;
	struct journal_cursor c;
	struct journal_record r;
	struct sample s;
	char err[256] = "";

	make_tmp();
	j = open_with(8u << 20, 1u << 30, 0, NULL, NULL);
	sample_make(&s, 1, BASE_MS);
	ck_assert_int_eq(journal_append(j, &s.r, false, err, sizeof(err)), 0);
	journal_stats(j, &st);
	ck_assert_uint_gt(st.prefaulted_bytes,
	                  0); /* the first pages, at open */
	ck_assert_uint_lt(st.prefaulted_bytes, 1u << 20);
	journal_prefault(j);
	journal_stats(j, &st);
	/* 4 MB ahead of what was written, on kernels from 5.14 on. */
	ck_assert_uint_ge(st.prefaulted_bytes, 4u << 20);
	ck_assert_uint_le(st.prefaulted_bytes, 8u << 20);
	journal_prefault(j); /* nothing more to do */
	sample_make(&s, 2, BASE_MS + 1);
	ck_assert_int_eq(journal_append(j, &s.r, false, err, sizeof(err)), 0);
	journal_cursor_init(j, &c);
	ck_assert_int_eq(journal_next(j, &c, &r, err, sizeof(err)), 1);
	ck_assert_int_eq(sample_diff(&r, 1, BASE_MS), 0);
	ck_assert_int_eq(journal_next(j, &c, &r, err, sizeof(err)), 1);
	ck_assert_int_eq(sample_diff(&r, 2, BASE_MS + 1), 0);
	ck_assert_int_eq(journal_next(j, &c, &r, err, sizeof(err)), 0);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* The journal holds samples 0 to n - 1 in order, and nothing else. */
static void assert_all_samples(struct journal *j, unsigned n)
{
	struct journal_cursor c;
	struct journal_record r;
	char err[256] = "";

	journal_cursor_init(j, &c);
	for (unsigned i = 0; i < n; i++) {
		next_entry(j, &c, &r);
		assert_sample(&r, i, BASE_MS + i);
	}
	ck_assert_int_eq(journal_next(j, &c, &r, err, sizeof(err)), 0);
	ck_assert_uint_eq(c.skipped_bytes, 0);
}

/*
 * A finished segment whose cut did not reach the disk (a crash or power
 * cut right after the broker moved to the next one) still ends in its
 * preallocated zeros: they are unused space, read past without counting
 * them as damage, and every entry is still read.
 */
START_TEST(an_uncut_zero_tail_of_an_older_segment_is_not_damage)
{
	static uint64_t ids[MAX_SEGS];
	struct journal *j;
	char path[160];
	unsigned i, n = 0;
	size_t nsegs;

	make_tmp();
	j = open_with(64u << 10, 1u << 30, 0, NULL, NULL);
	for (i = 0; i < 1500; i++)
		append_sample(j, n++, false);
	journal_close(j);
	nsegs = list_segs(ids, MAX_SEGS);
	ck_assert_uint_ge(nsegs, 3);
	for (size_t k = 0; k + 1 < nsegs; k++) {
		seg_path(path, sizeof(path), ids[k]);
		ck_assert_int_eq(truncate(path, file_size(path) + 50000), 0);
	}
	j = open_with(64u << 10, 1u << 30, 0, NULL, NULL);
	assert_all_samples(j, n);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* journal_prefault as the writer thread runs it: in a thread with a
 * descriptor table of its own, so that a descriptor it opens means
 * nothing to the appending thread. */
static void *prefault_main(void *arg)
{
	ck_assert_int_eq(unshare(CLONE_FILES), 0);
	journal_prefault(arg);
	return NULL;
}

static void prefault_in_own_table(struct journal *j)
{
	pthread_t t;

	ck_assert_int_eq(pthread_create(&t, NULL, prefault_main, j), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
}

static void spare_path(char *buf, size_t len)
{
	snprintf(buf, len, "%s/next.spare", jdir);
}

static bool spare_exists(void)
{
	char path[160];
	struct stat st;

	spare_path(path, sizeof(path));
	return stat(path, &st) == 0;
}

/*
 * The writer makes the broker's next segment ready ahead (journal_prefault
 * does it); the broker renames it when it moves on, makes its own when the
 * spare is gone, and a spare left behind by a crash goes at the next open.
 */
START_TEST(the_next_segment_is_made_ready_ahead_and_taken_at_rotation)
{
	static uint64_t ids[MAX_SEGS];
	struct journal *j;
	char path[160], seg[160];
	unsigned n = 0;
	FILE *f;

	make_tmp();
	spare_path(path, sizeof(path));
	j = open_with(64u << 10, 1u << 30, 0, NULL, NULL);
	prefault_in_own_table(j);
	ck_assert(!spare_exists()); /* none before the first segment */
	append_sample(j, n++, false);
	prefault_in_own_table(j);
	ck_assert(spare_exists());
	while (list_segs(ids, MAX_SEGS) < 2 && n < 5000)
		append_sample(j, n++, false);
	ck_assert_uint_eq(list_segs(ids, MAX_SEGS), 2);
	ck_assert(!spare_exists()); /* renamed to the second segment */
	/* The first segment was cut to its entries when the broker moved
	 * on. */
	seg_path(seg, sizeof(seg), ids[0]);
	ck_assert_int_lt(file_size(seg), 64 << 10);
	prefault_in_own_table(j);
	ck_assert(spare_exists());
	/* The spare's file gone under it: the rename fails, the broker
	 * makes the third segment itself. */
	ck_assert_int_eq(unlink(path), 0);
	while (list_segs(ids, MAX_SEGS) < 3 && n < 10000)
		append_sample(j, n++, false);
	ck_assert_uint_eq(list_segs(ids, MAX_SEGS), 3);
	/* The second, the spare, was cut too: the broker has a descriptor
	 * of its own for it. */
	seg_path(seg, sizeof(seg), ids[1]);
	ck_assert_int_lt(file_size(seg), 64 << 10);
	assert_all_samples(j, n);
	prefault_in_own_table(j);
	ck_assert(spare_exists());
	journal_close(j);
	ck_assert(!spare_exists());
	/* A stale spare is no segment, and goes at open. */
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("not a segment", f);
	fclose(f);
	j = open_with(64u << 10, 1u << 30, 0, NULL, NULL);
	ck_assert(!spare_exists());
	ck_assert_uint_eq(list_segs(ids, MAX_SEGS), 3);
	assert_all_samples(j, n);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* Minor page faults of the calling thread so far. */
static long thread_faults(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_minflt;
}

/*
 * fsync batch: the writer's sync covers what was appended and leaves the
 * pages made writable ahead alone. A sync of the whole file would write
 * them back too, and the kernel would make them fault again on the
 * broker's next write to each (on a file system that tracks dirty pages
 * of a mapping, as ext4 does; /tmp here).
 */
/* Minor page faults of 2000 appends, from entry *n on. */
static long faults_of_appends(struct journal *j, unsigned *n)
{
	long before = thread_faults();

	for (unsigned i = 0; i < 2000; i++)
		append_sample(j, (*n)++, false);
	return thread_faults() - before;
}

START_TEST(a_batch_sync_leaves_the_pages_ahead_writable)
{
	struct journal *j;
	char err[256] = "";
	long plain, synced;
	unsigned n = 0;

	make_tmp();
	j = open_sync(8u << 20, 1u << 30, 0, NULL, NULL, JOURNAL_SYNC_BATCH);
	append_sample(j, n++, false);
	journal_prefault(j);            /* 4 MB ahead */
	(void)faults_of_appends(j, &n); /* warm up everything else */
	/* The faults 2000 appends take with no sync before them (the
	 * allocator's, and a sanitizer's shadow memory), then after a sync:
	 * the difference is what the sync cost the appends. */
	plain = faults_of_appends(j, &n);
	ck_assert_msg(journal_sync(j, err, sizeof(err)) == 0, "sync: %s", err);
	ck_assert_msg(journal_sync(j, err, sizeof(err)) == 0, "sync: %s", err);
	synced = faults_of_appends(j, &n);
	ck_assert_msg(journal_sync(j, err, sizeof(err)) == 0, "sync: %s", err);
	/* 2000 entries fill well over a hundred pages; the sync wrote back
	 * the page the appends went on from, and nothing ahead of it. */
	ck_assert_msg(synced - plain < 20,
	              "%ld page faults in 2000 appends after a sync, %ld "
	              "without",
	              synced, plain);
	assert_all_samples(j, n);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* fsync batch across segments: finished ones are synced whole, deleted
 * ones passed over, and every entry stays readable. */
START_TEST(a_batch_sync_covers_finished_and_deleted_segments)
{
	struct journal *j;
	struct journal_cursor c;
	struct journal_record r;
	static uint64_t ids[MAX_SEGS];
	char err[256] = "";
	uint64_t seq = 0;
	unsigned i, n = 0, newer = 0;

	make_tmp();
	j = open_sync(64u << 10, 1u << 30, 0, NULL, NULL, JOURNAL_SYNC_BATCH);
	for (int round = 0; round < 4; round++) {
		for (i = 0; i < 1000; i++)
			seq = append_sample(j, n++, false);
		ck_assert_msg(journal_sync(j, err, sizeof(err)) == 0,
		              "sync in round %d: %s", round, err);
	}
	ck_assert_uint_ge(list_segs(ids, MAX_SEGS), 4);
	/* Everything but the newest segment stored and deleted; the sync
	 * finds the files gone. */
	ck_assert_int_eq(journal_committed(j, seq - 1, true, err, sizeof(err)),
	                 0);
	for (i = 0; i < 300; i++)
		append_sample(j, n++, false);
	ck_assert_msg(journal_sync(j, err, sizeof(err)) == 0, "sync: %s", err);
	journal_cursor_init(j, &c);
	ck_assert_int_eq(journal_next(j, &c, &r, err, sizeof(err)), 1);
	ck_assert_uint_le(r.seq, seq);
	journal_close(j);
	/* Reopened, the newest entries are all there. */
	j = open_sync(64u << 10, 1u << 30, 0, NULL, NULL, JOURNAL_SYNC_BATCH);
	journal_cursor_init(j, &c);
	while (journal_next(j, &c, &r, err, sizeof(err)) == 1)
		if (r.seq > seq)
			newer++;
	ck_assert_uint_eq(newer, 300);
	journal_close(j);
	remove_tmp();
}
END_TEST

/* Resend detection -------------------------------------------------------- */

#define WINDOW 30000
#define T0 INT64_C(1700000000000)

static int conn_a, conn_b, conn_c;

static void note(struct resend *rs, const char *id, const void *conn,
                 uint64_t hash, int64_t at)
{
	ck_assert_int_eq(resend_note(rs, id, strlen(id), conn, hash, at), 0);
}

START_TEST(a_copy_on_the_same_connection_is_never_a_resend)
{
	struct resend *rs = resend_new(WINDOW);
	uint64_t h = resend_hash("t/1", "{\"v\":1}", 7);

	ck_assert_ptr_nonnull(rs);
	ck_assert(!resend_seen(rs, "c1", &conn_a, h, T0));
	note(rs, "c1", &conn_a, h, T0);
	ck_assert(!resend_seen(rs, "c1", &conn_a, h, T0 + 1));
	note(rs, "c1", &conn_a, h, T0 + 1);
	ck_assert(!resend_seen(rs, "c1", &conn_a, h, T0 + 2));
	ck_assert(!resend_seen(rs, NULL, &conn_a, h, T0 + 2));
	ck_assert_uint_eq(resend_clients(rs), 1);
	resend_free(rs);
}
END_TEST

START_TEST(a_copy_from_an_earlier_connection_within_the_window_is_a_resend)
{
	struct resend *rs = resend_new(WINDOW);
	uint64_t h = resend_hash("t/1", "{\"v\":1}", 7);
	uint64_t other = resend_hash("t/1", "{\"v\":2}", 7);

	ck_assert_uint_ne(h, other);
	ck_assert_uint_eq(h, resend_hash("t/1", "{\"v\":1}", 7));
	ck_assert_uint_ne(h, resend_hash("t/2", "{\"v\":1}", 7));
	note(rs, "c1", &conn_a, h, T0);
	resend_disconnect(rs, "c1", &conn_a);
	ck_assert(resend_seen(rs, "c1", &conn_b, h, T0 + 1000));
	ck_assert(!resend_seen(rs, "c1", &conn_b, other, T0 + 1000));
	/* Another client with the same message is no resend. */
	ck_assert(!resend_seen(rs, "c2", &conn_b, h, T0 + 1000));
	/* A takeover (no disconnect seen yet) is a new connection too. */
	ck_assert(resend_seen(rs, "c1", &conn_c, h, T0 + 2000));
	/* The same connection pointer again after a disconnect is a new
	 * connection. */
	note(rs, "c3", &conn_a, h, T0);
	resend_disconnect(rs, "c3", &conn_a);
	ck_assert(resend_seen(rs, "c3", &conn_a, h, T0 + 1000));
	/* A disconnect of an older connection leaves the new one alone. */
	note(rs, "c4", &conn_a, h, T0);
	ck_assert(!resend_seen(rs, "c4", &conn_b, other, T0));
	note(rs, "c4", &conn_b, other, T0 + 1);
	resend_disconnect(rs, "c4", &conn_a);
	ck_assert(!resend_seen(rs, "c4", &conn_b, other, T0 + 2));
	resend_free(rs);
}
END_TEST

START_TEST(a_copy_older_than_the_window_is_not_a_resend)
{
	struct resend *rs = resend_new(WINDOW);
	uint64_t h = resend_hash("t/1", "x", 1);

	note(rs, "c1", &conn_a, h, T0);
	resend_disconnect(rs, "c1", &conn_a);
	ck_assert(resend_seen(rs, "c1", &conn_b, h, T0 + WINDOW));
	resend_disconnect(rs, "c1", &conn_b);
	ck_assert(!resend_seen(rs, "c1", &conn_c, h, T0 + WINDOW + 1));
	resend_free(rs);
}
END_TEST

START_TEST(only_the_first_32_messages_of_a_connection_can_be_resends)
{
	struct resend *rs = resend_new(WINDOW);
	uint64_t h = resend_hash("t/1", "x", 1);

	note(rs, "c1", &conn_a, h, T0);
	/* 31 other messages, then the copy as the 32nd: a resend. */
	for (uint64_t k = 0; k < 31; k++)
		ck_assert(!resend_seen(rs, "c1", &conn_b, k, T0 + 1));
	ck_assert(resend_seen(rs, "c1", &conn_b, h, T0 + 1));
	/* 32 other messages, then the copy as the 33rd: new. */
	for (uint64_t k = 0; k < 32; k++)
		ck_assert(!resend_seen(rs, "c1", &conn_c, k, T0 + 1));
	ck_assert(!resend_seen(rs, "c1", &conn_c, h, T0 + 1));
	resend_free(rs);
}
END_TEST

START_TEST(entries_from_the_journal_count_as_an_earlier_connection)
{
	struct resend *rs = resend_new(WINDOW);
	uint64_t h = resend_hash("t/1", "x", 1);

	/* The journal's client field is not NUL-terminated. */
	ck_assert_int_eq(resend_note(rs, "c1-and-more", 2, NULL, h, T0), 0);
	ck_assert_uint_eq(resend_clients(rs), 1);
	ck_assert(resend_seen(rs, "c1", &conn_a, h, T0 + 1000));
	ck_assert(!resend_seen(rs, "c1-and-more", &conn_a, h, T0 + 1000));
	/* A client whose first connection of this run is still open. */
	ck_assert_int_eq(resend_note(rs, "c2", 2, NULL, h, T0), 0);
	note(rs, "c2", &conn_b, h + 1, T0 + 10);
	ck_assert(resend_seen(rs, "c2", &conn_b, h, T0 + 20));
	ck_assert(!resend_seen(rs, "c2", &conn_b, h + 1, T0 + 20));
	resend_free(rs);
}
END_TEST

START_TEST(purge_drops_idle_clients_and_keeps_connected_ones)
{
	struct resend *rs = resend_new(WINDOW);
	uint64_t h = resend_hash("t/1", "x", 1);
	int64_t t1 = T0 + WINDOW + 1;

	note(rs, "gone", &conn_a, h, T0);
	resend_disconnect(rs, "gone", &conn_a);
	note(rs, "online", &conn_b, h, T0);
	note(rs, "recent", NULL, h, T0 + 50000);
	note(rs, "journal", NULL, h, T0);
	ck_assert_uint_eq(resend_clients(rs), 4);
	resend_purge(rs, t1);
	ck_assert_uint_eq(resend_clients(rs), 2);
	ck_assert(!resend_seen(rs, "gone", &conn_c, h, t1));
	ck_assert(!resend_seen(rs, "journal", &conn_c, h, t1));
	/* A minute later "recent" is idle too; "online" is still kept. */
	resend_purge(rs, t1 + 60000);
	ck_assert_uint_eq(resend_clients(rs), 1);
	resend_disconnect(rs, "online", &conn_b);
	resend_purge(rs, t1 + 120000);
	ck_assert_uint_eq(resend_clients(rs), 0);
	resend_free(rs);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("persist_journal");
	TCase *tc = tcase_create("journal");
	TCase *tr = tcase_create("resend");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, entries_read_back_in_order_with_every_field_intact);
	tcase_add_test(tc, deferred_entries_stay_invisible_until_flushed);
	tcase_add_test(tc, closing_flushes_deferred_entries);
	tcase_add_test(tc, reopened_journal_keeps_entries_id_and_numbering);
	tcase_add_test(
	    tc, a_new_journal_numbers_from_the_clock_and_a_later_one_higher);
	tcase_add_test(tc, a_torn_last_entry_is_cut_at_reopen);
	tcase_add_test(tc, garbage_after_the_last_entry_is_cut_at_reopen);
	tcase_add_test(
	    tc, a_wholly_torn_segment_is_reused_and_its_new_entry_reads_back);
	tcase_add_test(tc,
	               a_damaged_entry_is_skipped_and_later_entries_read_back);
	tcase_add_test(tc,
	               small_segments_rotate_and_committed_ones_are_deleted);
	tcase_add_test(
	    tc,
	    a_commit_without_deletion_writes_the_checkpoint_only_when_forced);
	tcase_add_test(
	    tc, a_full_budget_refuses_appends_until_committed_segments_go);
	tcase_add_test(
	    tc,
	    a_budget_within_one_segment_stays_full_after_everything_commits);
	tcase_add_test(
	    tc, a_second_open_of_a_journal_in_use_fails_naming_the_problem);
	tcase_add_test(tc, an_unusable_directory_fails_with_a_message);
	tcase_add_test(tc,
	               the_scan_at_open_sees_recent_entries_with_their_fields);
	tcase_add_test(tc, crc32c_gives_the_standard_check_value);
	tcase_add_test(
	    tc, a_reader_running_alongside_appends_sees_every_entry_whole);
	tcase_add_test(tc, pages_ahead_of_the_appends_are_made_writable);
	tcase_add_test(tc, a_batch_sync_leaves_the_pages_ahead_writable);
	tcase_add_test(tc,
	               an_uncut_zero_tail_of_an_older_segment_is_not_damage);
	tcase_add_test(
	    tc, the_next_segment_is_made_ready_ahead_and_taken_at_rotation);
	tcase_add_test(tc, a_batch_sync_covers_finished_and_deleted_segments);
	suite_add_tcase(s, tc);

	tcase_add_test(tr, a_copy_on_the_same_connection_is_never_a_resend);
	tcase_add_test(
	    tr,
	    a_copy_from_an_earlier_connection_within_the_window_is_a_resend);
	tcase_add_test(tr, a_copy_older_than_the_window_is_not_a_resend);
	tcase_add_test(
	    tr, only_the_first_32_messages_of_a_connection_can_be_resends);
	tcase_add_test(tr,
	               entries_from_the_journal_count_as_an_earlier_connection);
	tcase_add_test(tr, purge_drops_idle_clients_and_keeps_connected_ones);
	suite_add_tcase(s, tr);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
