/*
 * CPU accounting shared by the benchmark clients (fg_connbench,
 * fg_fanout): this process's CPU time, a process's or thread's from
 * /proc, and the machine's idle time. Each client is one file, so these
 * are static functions in a header.
 */
#ifndef FG_BENCH_CPU_H
#define FG_BENCH_CPU_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/resource.h>

/* utime + stime of this process, in seconds. */
static double cpu_seconds_self(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/*
 * utime + stime in seconds from a /proc stat file: of the whole process
 * (all threads) when tid is 0, else of that one thread; -1 if unreadable.
 */
static double cpu_seconds_of(long pid, long tid)
{
	char path[96], buf[2048], *p;
	unsigned long long utime, stime;
	long ticks = sysconf(_SC_CLK_TCK);
	size_t n;
	FILE *f;

	if (tid == 0)
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	else
		snprintf(path, sizeof(path), "/proc/%ld/task/%ld/stat", pid,
		         tid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold blanks and parentheses: fields are
	 * counted from the last ')'. utime and stime are fields 14, 15. */
	p = strrchr(buf, ')');
	if (p == NULL || ticks <= 0 ||
	    sscanf(p + 2,
	           "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	           &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)ticks;
}

/* Idle time of the whole machine (all CPUs) in seconds; -1 if unknown. */
static double idle_seconds(void)
{
	unsigned long long user, nice, sys, idle, iowait;
	long ticks = sysconf(_SC_CLK_TCK);
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (f == NULL)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
	           &iowait);
	fclose(f);
	if (n != 5 || ticks <= 0)
		return -1;
	return (double)(idle + iowait) / (double)ticks;
}

#endif
