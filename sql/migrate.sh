#!/usr/bin/env bash
# migrate.sh: bring a database up to the newest fleetgate schema version.
#
# Applies sql/NNN_*.sql in version order with psql, using the libpq
# environment of the caller (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD
# or PGPASSFILE, ...). Versions already recorded in fleetgate.schema_version
# are skipped. Prints one line per migration file.
#
# Exit status: 0 when the database is at the newest version; 1 when a
# migration fails, the files are inconsistent, or the database is at a
# version newer than any file here (a newer fleetgate already migrated it).
#
# Environment: PSQL overrides the psql binary (default: psql from PATH).
set -euo pipefail

sql_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
psql_bin=${PSQL:-psql}

die() {
	printf 'migrate: %s\n' "$*" >&2
	exit 1
}

# -X: a developer's ~/.psqlrc must not change what runs or what is printed.
run_psql() {
	"$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"
}

query() {
	run_psql -At -c "$1"
}

command -v "$psql_bin" >/dev/null 2>&1 || die "psql not found (set PSQL)"

# Collect the migration files and make sure no version appears twice.
declare -A file_of_version=()
versions=()
shopt -s nullglob
for path in "$sql_dir"/[0-9][0-9][0-9]_*.sql; do
	name=${path##*/}
	version=$((10#${name:0:3}))
	if [[ -n ${file_of_version[$version]:-} ]]; then
		die "two files for version $version: ${file_of_version[$version]} and $name"
	fi
	file_of_version[$version]=$name
	versions+=("$version")
done
shopt -u nullglob
((${#versions[@]} > 0)) || die "no migration files in $sql_dir"
mapfile -t versions < <(printf '%s\n' "${versions[@]}" | sort -n)
newest=${versions[${#versions[@]} - 1]}

# What the database already has. A failed connection stops here, before
# anything is changed.
state=$(query "select current_database(), to_regclass('fleetgate.schema_version') is not null") ||
	die "cannot query the database (check PGHOST, PGPORT, PGUSER, PGDATABASE)"
database=${state%|*}
applied=()
if [[ ${state##*|} == t ]]; then
	list=$(query "select version from fleetgate.schema_version order by version") ||
		die "cannot read fleetgate.schema_version in database $database"
	mapfile -t applied <<<"$list"
fi
current=0
for v in "${applied[@]}"; do
	if ((v > current)); then
		current=$v
	fi
done

if ((current > newest)); then
	die "database $database is at schema version $current, newer than the" \
		"newest migration here ($newest, ${file_of_version[$newest]});" \
		"refusing to touch it: use the fleetgate release that migrated it"
fi

is_applied() {
	local v
	for v in "${applied[@]}"; do
		[[ $v == "$1" ]] && return 0
	done
	return 1
}

for version in "${versions[@]}"; do
	name=${file_of_version[$version]}
	if is_applied "$version"; then
		printf 'migrate: skipped %s (version %d already applied)\n' "$name" "$version"
		continue
	fi
	# Each file is one transaction and checks its own predecessor, so a
	# failure leaves the database at the previous version.
	run_psql -f "$sql_dir/$name" ||
		die "$name failed; the database stays at version $current"
	recorded=$(query "select count(*) from fleetgate.schema_version where version = $version")
	[[ $recorded == 1 ]] ||
		die "$name ran but did not record version $version in fleetgate.schema_version"
	current=$version
	printf 'migrate: applied %s (version %d)\n' "$name" "$version"
done
