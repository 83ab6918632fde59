#!/usr/bin/env bash
# run-integration.sh: run the integration suites and summarise them.
#
# Usage: test/run-integration.sh [SUITE...]
#   SUITE is a name (auth, auth-outage) or a path; without arguments every
#   test/integration/*.sh runs, in name order, one after another.
# Each suite's TAP output is shown as it runs. Exit status: 0 when every
# suite passed, 1 otherwise.
# The environment of test/lib.sh applies (FG_BUILD, FG_KEEP, FG_SANITIZE,
# FG_SLOW, FG_KICK_LIMIT_MS, FG_VERBOSE).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
suites=()
if (($# == 0)); then
	shopt -s nullglob
	suites=("$here"/integration/*.sh)
	shopt -u nullglob
else
	for s in "$@"; do
		if [[ -f $s ]]; then
			suites+=("$s")
		elif [[ -f $here/integration/$s.sh ]]; then
			suites+=("$here/integration/$s.sh")
		else
			echo "run-integration: no suite $s" >&2
			exit 1
		fi
	done
fi
if ((${#suites[@]} == 0)); then
	echo "run-integration: no suites found in $here/integration" >&2
	exit 1
fi

failed=()
summary=()
total_start=$SECONDS
for suite in "${suites[@]}"; do
	name=$(basename -- "$suite" .sh)
	echo "# ---- $name"
	start=$SECONDS
	out=$(mktemp)
	set +e
	bash "$suite" </dev/null 2>&1 | tee "$out"
	status=${PIPESTATUS[0]}
	set -e
	npass=$(grep -c '^ok ' "$out" || true)
	nfail=$(grep -c '^not ok ' "$out" || true)
	rm -f "$out"
	line=$(printf '%-14s %s  %3d passed %3d failed  %3ds' "$name" \
		"$([[ $status -eq 0 ]] && echo PASS || echo FAIL)" \
		"$npass" "$nfail" $((SECONDS - start)))
	summary+=("$line")
	if ((status != 0)); then
		failed+=("$name")
	fi
done

echo "# ---- summary"
for line in "${summary[@]}"; do
	echo "# $line"
done
echo "# total $((SECONDS - total_start))s"
if ((${#failed[@]} > 0)); then
	echo "# FAILED: ${failed[*]}"
	exit 1
fi
echo "# all integration suites passed"
