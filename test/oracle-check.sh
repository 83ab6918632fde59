#!/usr/bin/env bash
# oracle-check.sh: did every message the broker acknowledged get stored,
# and stored once?
#
# Usage: test/oracle-check.sh ACKED_FILE STORED_FILE
#   ACKED_FILE   fg_oracle's -o output: the numbers the broker acknowledged,
#                one a line
#   STORED_FILE  one number per stored row, e.g. the output of
#                psql -XAt -c "select payload->>'n' from fleetgate.readings
#                              where device_id = '...'"
#
# Prints one line, key=value:
#   acked=N stored=N missing=N duplicates=N extra=N
# acked counts distinct acknowledged numbers, stored the rows; missing
# counts acknowledged numbers with no row (a loss), duplicates the rows
# beyond the first of a number, extra the numbers stored but never
# acknowledged (allowed: at QoS 1 the broker may store a message and lose
# the connection before its PUBACK reaches the publisher).
# The first missing and duplicated numbers (at most 10 each) go to stderr.
#
# Exit status: 0 when missing=0 and duplicates=0; 1 otherwise, or when
# ACKED_FILE lists a number twice (an oracle fault, reported on stderr);
# 2 on a usage error.
#
# A last line of ACKED_FILE without its newline is ignored: fg_oracle
# killed in the middle of a write can leave one, and its digits may be
# cut short.
set -euo pipefail

if (($# != 2)); then
	echo "usage: oracle-check.sh ACKED_FILE STORED_FILE" >&2
	exit 2
fi
for f in "$1" "$2"; do
	if [[ ! -r $f ]]; then
		echo "oracle-check: cannot read $f" >&2
		exit 2
	fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/oracle-check.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
export LC_ALL=C

# tidy: drop blanks around each line and carriage returns (psql output
# from another tool may carry them).
tidy() {
	sed -e 's/\r$//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'
}

# complete_lines FILE: FILE without an unterminated last line.
complete_lines() {
	if [[ -s $1 && $(tail -c 1 -- "$1" | wc -l) -eq 0 ]]; then
		echo "oracle-check: ignoring the unterminated last line of $1" >&2
		sed '$d' -- "$1"
	else
		cat -- "$1"
	fi
}

complete_lines "$1" | tidy | sed '/^$/d' | sort >"$tmp/acked.all"
sort -u "$tmp/acked.all" >"$tmp/acked"
tidy <"$2" | sort >"$tmp/stored.all"
sort -u "$tmp/stored.all" >"$tmp/stored"

acked=$(wc -l <"$tmp/acked")
acked_lines=$(wc -l <"$tmp/acked.all")
stored=$(wc -l <"$tmp/stored.all")
distinct=$(wc -l <"$tmp/stored")
comm -23 "$tmp/acked" "$tmp/stored" >"$tmp/missing"
comm -13 "$tmp/acked" "$tmp/stored" >"$tmp/extra"
uniq -d "$tmp/stored.all" >"$tmp/dup"
missing=$(wc -l <"$tmp/missing")
extra=$(wc -l <"$tmp/extra")
duplicates=$((stored - distinct))

echo "acked=$acked stored=$stored missing=$missing duplicates=$duplicates extra=$extra"
if ((missing > 0)); then
	echo "oracle-check: missing (first 10): $(sort -n "$tmp/missing" |
		head -n 10 | tr '\n' ' ')" >&2
fi
if ((duplicates > 0)); then
	echo "oracle-check: stored more than once (first 10): $(sort -n \
		"$tmp/dup" | head -n 10 | tr '\n' ' ')" >&2
fi
status=0
if ((acked_lines != acked)); then
	echo "oracle-check: $1 lists $((acked_lines - acked)) numbers more than once" >&2
	status=1
fi
if ((missing > 0 || duplicates > 0)); then
	status=1
fi
exit "$status"
