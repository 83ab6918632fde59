#!/usr/bin/env bash
# Run the unit-test binaries given as arguments; under valgrind when
# FG_VALGRIND=1. Exits non-zero if any failed.
set -uo pipefail
failed=0
for t in "$@"; do
	echo "== unit: $(basename "$t")"
	if [ "${FG_VALGRIND:-0}" = 1 ]; then
		CK_FORK=no valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
			--error-exitcode=99 "$t" || failed=1
	else
		"$t" || failed=1
	fi
done
if [ "$failed" -ne 0 ]; then
	echo "unit tests: FAILED"
	exit 1
fi
echo "unit tests: all passed"
