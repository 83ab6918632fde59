#!/usr/bin/env bash
# Refuse unbounded string functions and atoi-style parsing in C sources,
# lines over 100 columns, and shortcoming markers without a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
status=0
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|gets|atoi|atol|atoll|strtok)\s*\(' $files; then
	echo "lint: use snprintf / bounded copies / strtol instead" >&2
	status=1
fi
wide=$(expand -t 8 $files | awk 'length > 100' | wc -l)
if [ "$wide" -gt 0 ]; then
	echo "lint: $wide lines over 100 columns" >&2
	status=1
fi
if grep -nE '(TODO|FIXME|XXX)[: ]*(\*/)?[ ]*$' $files; then
	echo "lint: a shortcoming marker needs its reason" >&2
	status=1
fi
[ "$status" -eq 0 ] && echo "lint: ok"
exit "$status"
