# shellcheck shell=bash
# pgcluster.sh: a throw-away PostgreSQL cluster for the fleetgate tests.
#
# Source this file, then:
#   pg_cluster_start DIR      initdb into DIR/data and start a server on a
#                             free 127.0.0.1 port with trust authentication;
#                             creates database "fleet" and exports PGHOST,
#                             PGPORT, PGUSER (superuser "postgres") and
#                             PGDATABASE=fleet. Returns 0, or 1 with the
#                             server log on stderr.
#   pg_cluster_provision      run sql/migrate.sh on $PGDATABASE and create the
#                             login users fg_broker and fg_admin (members of
#                             fleetgate_broker and fleetgate_admin).
#   pg_cluster_stop DIR       stop the server (pg_ctl stop -m fast). Leaves
#                             DIR in place: removing it is the caller's job,
#                             so a failed run can keep the log.
# DIR must exist and should be empty (mktemp -d). Under root the server runs
# as user "postgres" if it exists, else "nobody"; DIR is then made
# traversable for that user. PG_BINDIR overrides the PostgreSQL binaries.

_pg_cluster_repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)

_pg_cluster_bindir() {
	local d
	if [[ -n ${PG_BINDIR:-} ]]; then
		printf '%s\n' "$PG_BINDIR"
		return 0
	fi
	# Debian keeps the server binaries out of PATH; prefer the newest.
	local -a dirs=()
	mapfile -t dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5 -rn)
	for d in "${dirs[@]}"; do
		if [[ -x $d/initdb ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done
	if command -v initdb >/dev/null 2>&1; then
		dirname -- "$(command -v initdb)"
		return 0
	fi
	echo "pgcluster: initdb not found (set PG_BINDIR)" >&2
	return 1
}

_pg_cluster_free_port() {
	/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Runs a command as the server's user ($_pg_cluster_user), from inside the
# cluster directory: the server user may not be allowed into the caller's
# working directory.
_pg_cluster_as_owner() {
	local dir=$1
	shift
	if [[ -n $_pg_cluster_user ]]; then
		(cd -- "$dir" && runuser -u "$_pg_cluster_user" -- "$@")
	else
		(cd -- "$dir" && "$@")
	fi
}

_pg_cluster_load() {
	local dir=$1
	if [[ ! -f $dir/cluster.env ]]; then
		echo "pgcluster: $dir holds no cluster started by pg_cluster_start" >&2
		return 1
	fi
	# shellcheck source=/dev/null
	. "$dir/cluster.env"
}

pg_cluster_start() {
	local dir=${1:?pg_cluster_start needs a directory}
	local bindir port attempt _pg_cluster_user=
	dir=$(cd -- "$dir" && pwd) || return 1
	bindir=$(_pg_cluster_bindir) || return 1

	if [[ $(id -u) -eq 0 ]]; then
		# PostgreSQL refuses to run as root.
		if getent passwd postgres >/dev/null; then
			_pg_cluster_user=postgres
		else
			_pg_cluster_user=nobody
		fi
		chmod 0711 "$dir"
		if ! runuser -u "$_pg_cluster_user" -- test -x "$dir"; then
			echo "pgcluster: user $_pg_cluster_user cannot reach $dir;" \
				"use a directory under /tmp" >&2
			return 1
		fi
	fi
	mkdir -p "$dir/data" "$dir/sock"
	: >"$dir/postgres.log"
	if [[ -n $_pg_cluster_user ]]; then
		chown "$_pg_cluster_user:" "$dir/data" "$dir/sock" "$dir/postgres.log"
	fi
	chmod 0700 "$dir/data"

	if ! _pg_cluster_as_owner "$dir" "$bindir/initdb" -D "$dir/data" \
		-U postgres -A trust -E UTF8 --no-locale --no-sync \
		>"$dir/initdb.log" 2>&1; then
		echo "pgcluster: initdb failed:" >&2
		cat "$dir/initdb.log" >&2
		return 1
	fi

	# Written first, so that pg_cluster_stop works whatever fails below.
	printf '_pg_cluster_bin=%q\n_pg_cluster_user=%q\n' \
		"$bindir" "$_pg_cluster_user" >"$dir/cluster.env"

	# The free port can be taken between the probe and the bind; try again
	# with another one rather than fail the whole test run.
	for attempt in 1 2 3 4 5; do
		port=$(_pg_cluster_free_port) || return 1
		if _pg_cluster_as_owner "$dir" "$bindir/pg_ctl" -D "$dir/data" \
			-l "$dir/postgres.log" -w -t 60 \
			-o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off" \
			start >/dev/null; then
			break
		fi
		if ((attempt == 5)) || ! grep -q 'could not bind' "$dir/postgres.log"; then
			echo "pgcluster: server did not start; log:" >&2
			cat "$dir/postgres.log" >&2
			return 1
		fi
	done

	export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
	"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -c 'create database fleet' ||
		return 1
	export PGDATABASE=fleet
}

pg_cluster_provision() {
	local bindir
	bindir=$(_pg_cluster_bindir) || return 1
	PSQL=$bindir/psql "$_pg_cluster_repo/sql/migrate.sh" || return 1
	# Login users are created after the migration, because the group roles
	# they join are created by it.
	"$bindir/psql" -X -q -v ON_ERROR_STOP=1 <<-'EOF' || return 1
		do $$
		begin
		    if not exists (select 1 from pg_roles where rolname = 'fg_broker') then
		        create role fg_broker login in role fleetgate_broker;
		    end if;
		    if not exists (select 1 from pg_roles where rolname = 'fg_admin') then
		        create role fg_admin login in role fleetgate_admin;
		    end if;
		end
		$$;
	EOF
}

pg_cluster_stop() {
	local dir=${1:?pg_cluster_stop needs a directory}
	local _pg_cluster_bin _pg_cluster_user
	_pg_cluster_load "$dir" || return 1
	[[ -f $dir/data/postmaster.pid ]] || return 0
	if ! _pg_cluster_as_owner "$dir" "$_pg_cluster_bin/pg_ctl" \
		-D "$dir/data" -m fast -w stop >/dev/null; then
		echo "pgcluster: pg_ctl stop failed for $dir/data" >&2
		return 1
	fi
}
