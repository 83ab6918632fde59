# shellcheck shell=bash source-path=SCRIPTDIR
# lib.sh: harness for the fleetgate integration tests.
#
# A test script sources this file and calls fg_setup first:
#
#   set -euo pipefail
#   . "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
#   fg_setup
#
# It gives the script a private temporary directory ($FG_TMP), a private
# PostgreSQL cluster, certificates made with the openssl command line,
# brokers with the fleetgate auth plugin, the fg_client test client and TAP
# output. Everything it starts is recorded by PID and ended by the EXIT trap;
# nothing else is ever signalled.
#
# Environment:
#   FG_BUILD         build directory (default: the repository's build/)
#   FG_KEEP=1        keep $FG_TMP after the run (it is always kept, and its
#                    path printed, when a case failed)
#   FG_SANITIZE      asan: preload the ASan/UBSan runtimes into the broker;
#                    valgrind: run the broker under valgrind
#   FG_SLOW          factor for the harness's waiting times (default 1; 3
#                    under asan, 10 under valgrind)
#   FG_KICK_LIMIT_MS the longest a kick may take after a commit (1000)
#   FG_VERBOSE=1     print more diagnostics
#   FG_BROKER_CONNINFO_EXTRA  appended to the plugin's db_conninfo (later
#                    keys override earlier ones), e.g. sslmode settings
#
# Timeouts given to the wait functions are in seconds and may be fractions.

# FG_FP_OPENSSL and FG_BROKER_STATUS are set here for the test scripts.
# shellcheck disable=SC2034

FG_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
: "${FG_BUILD:=$FG_ROOT/build}"
FG_BUILD=$(cd -- "$FG_BUILD" 2>/dev/null && pwd || printf '%s' "$FG_BUILD")
: "${FG_CLIENT:=$FG_BUILD/tools/fg_client}"
: "${FG_KICK_LIMIT_MS:=1000}"
: "${FG_VERBOSE:=0}"
if [[ -z ${FG_SLOW:-} ]]; then
	case ${FG_SANITIZE:-} in
	asan) FG_SLOW=3 ;;
	valgrind) FG_SLOW=10 ;;
	*) FG_SLOW=1 ;;
	esac
fi
# Debian keeps mosquitto and mosquitto_passwd in /usr/sbin.
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH=$PATH:/usr/sbin ;;
esac
export PATH

FG_TMP=
FG_CERTS=
FG_T_NUM=0
FG_T_FAILED=0
FG_T_FAILED_NAMES=()
FG_PIDS=()
FG_PG_DIR=
FG_PG_RUNNING=0
FG_PG_OPTS=
declare -gA FG_BROKER_PID=() FG_TLS_PORT=() FG_PLAIN_PORT=() FG_LOG_MARK=()
declare -gA FG_FP=() FG_FP_OPENSSL=() FG_CERT_DEVICE=() FG_CLIENT_PID=()
declare -gA FG_PORTS_GIVEN=() FG_BROKER_STATUS=()
FG_RC=0
FG_OUT=

# ---------------------------------------------------------------- TAP ----

# fg_diag MSG...: each argument (each of its lines) as a TAP comment.
fg_diag() {
	local arg line
	for arg in "$@"; do
		while IFS= read -r line; do
			printf '# %s\n' "$line"
		done <<<"$arg"
	done
}

fg__result() {
	local pass=$1 desc=$2
	FG_T_NUM=$((FG_T_NUM + 1))
	if [[ $pass == 1 ]]; then
		printf 'ok %d - %s\n' "$FG_T_NUM" "$desc"
	else
		printf 'not ok %d - %s\n' "$FG_T_NUM" "$desc"
		FG_T_FAILED=$((FG_T_FAILED + 1))
		FG_T_FAILED_NAMES+=("$FG_T_NUM - $desc")
	fi
}

# ok COND DESC: passes when the shell condition COND succeeds. COND is a
# string run with eval in a subshell (it sees the caller's variables and
# functions, cannot change them; its output is discarded). Always returns
# 0, so that one failed case does not end the script under set -e.
ok() {
	local cond=$1 desc=$2
	if (eval "$cond") >/dev/null 2>&1; then
		fg__result 1 "$desc"
	else
		fg__result 0 "$desc"
		fg_diag "  condition failed: $cond"
	fi
	return 0
}

# is GOT EXPECTED DESC: passes when the two strings are equal.
is() {
	local got=$1 expected=$2 desc=$3
	if [[ $got == "$expected" ]]; then
		fg__result 1 "$desc"
	else
		fg__result 0 "$desc"
		fg_diag "       got: '$got'" "  expected: '$expected'"
	fi
	return 0
}

# like GOT REGEX DESC: passes when GOT matches the extended regex.
like() {
	local got=$1 re=$2 desc=$3
	if [[ $got =~ $re ]]; then
		fg__result 1 "$desc"
	else
		fg__result 0 "$desc"
		fg_diag "       got: '$got'" "  expected to match: $re"
	fi
	return 0
}

# pass DESC / fail DESC [DIAG...]: record an outcome decided by the caller.
pass() {
	fg__result 1 "$1"
}

fail() {
	local desc=$1
	shift
	fg__result 0 "$desc"
	if (($# > 0)); then
		fg_diag "$@"
	fi
	return 0
}

# fg_bail REASON: stop the script now; the EXIT trap reports and cleans up.
fg_bail() {
	printf 'Bail out! %s\n' "$*"
	FG_T_FAILED=$((FG_T_FAILED + 1))
	exit 1
}

# ------------------------------------------------------- setup/cleanup ----

# fg_setup: makes $FG_TMP and installs the EXIT trap.
fg_setup() {
	FG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-test.XXXXXX")
	# Under root the PostgreSQL server runs as another user, which must be
	# able to reach its directory below $FG_TMP (but not list $FG_TMP).
	if [[ $(id -u) -eq 0 ]]; then
		chmod 0711 "$FG_TMP"
	fi
	FG_CERTS=$FG_TMP/certs
	mkdir -p "$FG_CERTS" "$FG_TMP/ca" "$FG_TMP/clients"
	trap fg__on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if [[ ! -x $FG_CLIENT ]]; then
		fg_bail "fg_client not built ($FG_CLIENT): run make"
	fi
	export FG_TMP
}

fg__stop_pid() {
	local pid=$1 grace=${2:-5} i
	kill -0 "$pid" 2>/dev/null || {
		wait "$pid" 2>/dev/null || true
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

fg__on_exit() {
	local rc=$? name pid keep=0
	trap - EXIT INT TERM
	set +e
	for name in "${!FG_CLIENT_PID[@]}"; do
		fg__stop_pid "${FG_CLIENT_PID[$name]}" 2
	done
	for name in "${!FG_BROKER_PID[@]}"; do
		fg_broker_stop "$name"
	done
	for pid in "${FG_PIDS[@]}"; do
		fg__stop_pid "$pid" 2
	done
	if [[ $FG_PG_RUNNING == 1 ]]; then
		fg_pg_stop >/dev/null 2>&1
	fi

	printf '1..%d\n' "$FG_T_NUM"
	if ((rc != 0 && FG_T_FAILED == 0)); then
		fg_diag "script ended early with status $rc"
		FG_T_FAILED=1
	fi
	if ((FG_T_FAILED > 0)); then
		fg_diag "$(basename -- "$0"): $FG_T_FAILED of $FG_T_NUM failed:"
		for name in "${FG_T_FAILED_NAMES[@]}"; do
			fg_diag "  not ok $name"
		done
		keep=1
	else
		fg_diag "$(basename -- "$0"): all $FG_T_NUM passed"
	fi
	if [[ -n $FG_TMP && -d $FG_TMP ]]; then
		if [[ $keep == 1 || ${FG_KEEP:-0} == 1 ]]; then
			fg_diag "kept $FG_TMP"
		else
			rm -rf -- "$FG_TMP"
		fi
	fi
	if ((FG_T_FAILED > 0)); then
		exit 1
	fi
	exit 0
}

# fg_track PID: the EXIT trap ends PID (a process this script started).
fg_track() {
	FG_PIDS+=("$1")
}

# -------------------------------------------------------------- misc ----

# fg_now_ms: wall-clock time in milliseconds (CLOCK_REALTIME, like
# fg_client's epoch_ms).
fg_now_ms() {
	local t=${EPOCHREALTIME//[!0-9]/}
	printf '%s\n' $((10#$t / 1000))
}

# fg_sleep SECONDS: sleep, scaled by FG_SLOW.
fg_sleep() {
	sleep "$(fg__scale "$1")"
}

fg__scale() {
	awk -v t="$1" -v f="$FG_SLOW" 'BEGIN { printf "%.3f\n", t * f }'
}

# fg_wait_until TIMEOUT CMD...: runs CMD every 50 ms until it succeeds.
# Returns 0 when it did, 1 when TIMEOUT (scaled) passed first.
fg_wait_until() {
	local timeout end
	timeout=$(fg__scale "$1")
	shift
	end=$(($(fg_now_ms) + ${timeout%.*} * 1000 + 10#${timeout#*.}))
	while :; do
		if "$@"; then
			return 0
		fi
		if (($(fg_now_ms) >= end)); then
			return 1
		fi
		sleep 0.05
	done
}

fg__local_ports() {
	local f sl addr rest
	for f in /proc/net/tcp /proc/net/tcp6; do
		[[ -r $f ]] || continue
		while read -r sl addr rest; do
			[[ $sl == sl ]] && continue
			printf '%d\n' "$((16#${addr##*:}))"
		done <"$f"
	done
}

# fg_free_port [VAR]: a TCP port below the ephemeral range that no socket
# on this machine uses and that this script has not handed out before.
# Prints it, or assigns it to VAR (only that form remembers it, since
# $(...) runs in a subshell).
fg_free_port() {
	local fg__used fg__port fg__i
	fg__used=" $(fg__local_ports | tr '\n' ' ') "
	for ((fg__i = 0; fg__i < 200; fg__i++)); do
		fg__port=$((20000 + RANDOM % 12000))
		[[ -n ${FG_PORTS_GIVEN[$fg__port]:-} ]] && continue
		[[ $fg__used == *" $fg__port "* ]] && continue
		FG_PORTS_GIVEN[$fg__port]=1
		if (($# > 0)); then
			printf -v "$1" '%s' "$fg__port"
		else
			printf '%s\n' "$fg__port"
		fi
		return 0
	done
	echo "fg_free_port: no free port found" >&2
	return 1
}

# fg__port_open PORT: true when something accepts on 127.0.0.1:PORT.
fg__port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---------------------------------------------------------- PostgreSQL ----

fg__need_pgcluster() {
	if ! declare -F pg_cluster_start >/dev/null; then
		# shellcheck source=sql/pgcluster.sh
		. "$FG_ROOT/test/sql/pgcluster.sh"
	fi
}

# fg_pg_start: a private cluster with database fleet, migrated, with the
# login users fg_broker and fg_admin. Exports PGHOST PGPORT PGUSER
# (superuser) PGDATABASE=fleet. Returns non-zero on failure.
fg_pg_start() {
	fg__need_pgcluster
	FG_PG_DIR=$FG_TMP/pg
	mkdir -p "$FG_PG_DIR"
	pg_cluster_start "$FG_PG_DIR" || return 1
	FG_PG_RUNNING=1
	FG_PG_OPTS="-c listen_addresses=127.0.0.1 -p $PGPORT"
	FG_PG_OPTS+=" -k $FG_PG_DIR/sock -c fsync=off"
	if declare -F pg_cluster_provision >/dev/null; then
		pg_cluster_provision >"$FG_TMP/migrate.log" 2>&1 || {
			cat "$FG_TMP/migrate.log" >&2
			return 1
		}
	else
		"$FG_ROOT/sql/migrate.sh" >"$FG_TMP/migrate.log" 2>&1 || {
			cat "$FG_TMP/migrate.log" >&2
			return 1
		}
		fg_psql_super "
			create role fg_broker login in role fleetgate_broker;
			create role fg_admin login in role fleetgate_admin;" ||
			return 1
	fi
}

# Runs pg_ctl as the owner of the cluster's data directory, with the
# binaries of the server that last ran it (the first word of
# postmaster.opts), so that fg_pg_resume needs nothing private to
# pgcluster.sh.
fg__pg_ctl() {
	local owner bin
	owner=$(stat -c %U "$FG_PG_DIR/data") || return 1
	read -r bin _ <"$FG_PG_DIR/data/postmaster.opts" || return 1
	bin=$(dirname -- "$bin")
	if [[ $(id -u) -eq 0 && $owner != root ]]; then
		(cd -- "$FG_PG_DIR" &&
			runuser -u "$owner" -- "$bin/pg_ctl" -D "$FG_PG_DIR/data" "$@")
	else
		(cd -- "$FG_PG_DIR" && "$bin/pg_ctl" -D "$FG_PG_DIR/data" "$@")
	fi
}

# fg_pg_stop: stops the cluster (fast shutdown: sessions are cut). A
# frozen cluster (fg_pg_freeze) is resumed first, so that a script that
# ends between a freeze and its thaw leaves no server behind.
fg_pg_stop() {
	[[ -n $FG_PG_DIR ]] || return 0
	[[ -f $FG_PG_DIR/data/postmaster.pid ]] && fg_pg_thaw
	pg_cluster_stop "$FG_PG_DIR" || return 1
	FG_PG_RUNNING=0
}

# fg_pg_resume: starts the stopped cluster again on the same port.
fg_pg_resume() {
	[[ -n $FG_PG_DIR ]] || return 1
	if declare -F pg_cluster_resume >/dev/null; then
		pg_cluster_resume "$FG_PG_DIR" || return 1
	else
		fg__pg_ctl -l "$FG_PG_DIR/postgres.log" -w -t 60 \
			-o "$FG_PG_OPTS" start >/dev/null || return 1
	fi
	FG_PG_RUNNING=1
}

# fg_pg_freeze / fg_pg_thaw: SIGSTOP / SIGCONT every process of the
# cluster (postmaster and backends): connections stay open, nothing
# answers, as with a hung server.
fg__pg_pids() {
	local pm
	read -r pm <"$FG_PG_DIR/data/postmaster.pid" || return 1
	echo "$pm"
	ps -o pid= --ppid "$pm"
}
fg_pg_freeze() {
	local p
	for p in $(fg__pg_pids); do kill -STOP "$p" 2>/dev/null || true; done
}
fg_pg_thaw() {
	local p
	for p in $(fg__pg_pids); do kill -CONT "$p" 2>/dev/null || true; done
}

# fg_pg_restart: stops and starts the cluster; every session is cut.
fg_pg_restart() {
	fg_pg_stop || return 1
	fg_pg_resume
}

# fg_psql_super SQL [psql args...] / fg_psql_admin SQL [psql args...]:
# run SQL as the superuser / as fg_admin. SQL is read from standard input,
# so psql variables passed as `-v name=value` can be used as :'name'.
# Output is unaligned, tuples only.
fg_psql_super() {
	local sql=$1
	shift
	psql -XAtq -v ON_ERROR_STOP=1 "$@" <<<"$sql"
}

fg_psql_admin() {
	local sql=$1
	shift
	PGUSER=fg_admin psql -XAtq -v ON_ERROR_STOP=1 "$@" <<<"$sql"
}

# fg_sql_is SQL EXPECTED: true when the superuser query prints EXPECTED.
fg_sql_is() {
	local got
	got=$(fg_psql_super "$1" 2>/dev/null) || return 1
	[[ $got == "$2" ]]
}

# fg_wait_sql SQL EXPECTED TIMEOUT: polls until the query prints EXPECTED.
fg_wait_sql() {
	fg_wait_until "$3" fg_sql_is "$1" "$2"
}

# fg_audit_mark: remembers the newest audit row; fg_audit_* then look only
# at rows written after it.
FG_AUDIT_MARK=0
fg_audit_mark() {
	FG_AUDIT_MARK=$(fg_psql_super \
		"select coalesce(max(id), 0) from fleetgate.audit_events")
}

# fg_audit_count WHERE: number of audit rows after the mark matching WHERE
# (an SQL condition; psql variables can be passed after it).
fg_audit_count() {
	local where=$1
	shift
	fg_psql_super "select count(*) from fleetgate.audit_events
		where id > $FG_AUDIT_MARK and ($where)" "$@"
}

fg__audit_has() {
	local n
	n=$(fg_audit_count "$@" 2>/dev/null) || return 1
	((n > 0))
}

# fg_wait_audit TIMEOUT WHERE [psql args]: polls for an audit row after the
# mark that matches WHERE.
fg_wait_audit() {
	local timeout=$1
	shift
	fg_wait_until "$timeout" fg__audit_has "$@"
}

# fg_audit_rows WHERE: prints the newest 12 matching rows after the mark
# (for diagnostics), oldest first.
fg_audit_rows() {
	fg_psql_super "select * from (select id, broker_id, event, outcome,
		reason, device_id, client_id, username, left(fingerprint, 12)
		from fleetgate.audit_events
		where id > $FG_AUDIT_MARK and ($1) order by id desc limit 12) r
		order by id" 2>&1
}

# ------------------------------------------------------- certificates ----

fg__ca_config() {
	local name=$1 dir=$FG_TMP/ca/$1
	cat >"$dir/ca.cnf" <<EOF
[ ca ]
default_ca = fg_ca

[ fg_ca ]
dir = $dir
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
certificate = $FG_CERTS/$name.crt
private_key = $FG_CERTS/$name.key
default_md = sha256
default_days = 30
policy = fg_policy
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = no

[ fg_policy ]
organizationName = optional
commonName = supplied

[ req ]
distinguished_name = fg_dn
string_mask = utf8only

[ fg_dn ]

[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

# Device certificates carry no authorityKeyIdentifier, so that a certificate
# from another CA with the same name is told apart by its signature alone.
[ v3_device ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash

[ v3_server ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF
}

# fg_ca_make NAME [CN]: an EC P-256 CA in $FG_CERTS/NAME.{key,crt}. Every CA
# made with the default CN has the same subject name, "/O=fleetgate
# test/CN=fleetgate test CA", so a second one is an impostor of the first.
fg_ca_make() {
	local name=$1 cn=${2:-fleetgate test CA} dir=$FG_TMP/ca/$1
	mkdir -p "$dir/newcerts"
	: >"$dir/index.txt"
	echo "unique_subject = no" >"$dir/index.txt.attr"
	openssl rand -hex 8 >"$dir/serial"
	fg__ca_config "$name"
	openssl req -x509 -new -config "$dir/ca.cnf" -extensions v3_ca \
		-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$FG_CERTS/$name.key" -out "$FG_CERTS/$name.crt" \
		-days 3650 -subj "/O=fleetgate test/CN=$cn" \
		>"$dir/req.log" 2>&1 || {
		cat "$dir/req.log" >&2
		return 1
	}
	chmod 0600 "$FG_CERTS/$name.key"
}

# fg__openssl_date OFFSET: a date for `openssl ca -startdate/-enddate`,
# OFFSET as understood by date -d ("now", "-2 days", "+1 hour").
fg__openssl_date() {
	date -u -d "$1" +%Y%m%d%H%M%SZ
}

# fg__sign NAME CN CA EXT START END: key and CSR for CN, signed by CA with
# `openssl ca` for the window [START, END] (date -d offsets).
fg__sign() {
	local name=$1 cn=$2 ca=$3 ext=$4 start=$5 end=$6
	local dir=$FG_TMP/ca/$ca
	[[ -f $dir/ca.cnf ]] || {
		echo "fg__sign: no CA named $ca" >&2
		return 1
	}
	if ! openssl req -new -config "$dir/ca.cnf" \
		-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$FG_CERTS/$name.key" -out "$FG_CERTS/$name.csr" \
		-subj "/O=fleetgate test/CN=$cn" >"$dir/$name.log" 2>&1 ||
		! openssl ca -batch -notext -config "$dir/ca.cnf" \
			-extensions "$ext" -in "$FG_CERTS/$name.csr" \
			-out "$FG_CERTS/$name.crt" \
			-startdate "$(fg__openssl_date "$start")" \
			-enddate "$(fg__openssl_date "$end")" \
			>>"$dir/$name.log" 2>&1; then
		cat "$dir/$name.log" >&2
		return 1
	fi
	chmod 0600 "$FG_CERTS/$name.key"
	rm -f "$FG_CERTS/$name.csr"
}

# fg_server_cert [CA]: $FG_CERTS/server.{key,crt}, CN=localhost,
# SAN DNS:localhost, IP:127.0.0.1.
fg_server_cert() {
	fg__sign server localhost "${1:-ca}" v3_server "-1 hour" "+30 days"
}

# fg_fingerprint FILE: the SHA-256 fingerprint of a certificate as lowercase
# hex without colons (the registry's spelling).
fg_fingerprint() {
	local fp
	fp=$(openssl x509 -noout -fingerprint -sha256 -in "$1") || return 1
	fp=${fp#*=}
	fp=${fp//:/}
	printf '%s\n' "${fp,,}"
}

fg__record_cert() {
	local name=$1 device=$2 fp
	fp=$(openssl x509 -noout -fingerprint -sha256 \
		-in "$FG_CERTS/$name.crt") || return 1
	FG_FP_OPENSSL[$name]=${fp#*=}
	FG_FP[$name]=$(fg_fingerprint "$FG_CERTS/$name.crt")
	FG_CERT_DEVICE[$name]=$device
	printf '# certificate %s for %s sha256=%s\n' "$name" "$device" \
		"${FG_FP[$name]}"
}

# fg_device_cert DEVICE_ID [CA] [DAYS] [NAME]: a client certificate with
# CN=DEVICE_ID signed by CA (default ca), valid from an hour ago for DAYS
# days (default 30), in $FG_CERTS/NAME.{key,crt} (NAME defaults to
# DEVICE_ID; give another NAME for a second certificate of one device).
# Prints its fingerprint and stores it in FG_FP[NAME] (lowercase hex) and
# FG_FP_OPENSSL[NAME] (as openssl prints it, AB:CD:...).
fg_device_cert() {
	local device=$1 ca=${2:-ca} days=${3:-30} name=${4:-$1}
	fg__sign "$name" "$device" "$ca" v3_device "-1 hour" "+$days days" &&
		fg__record_cert "$name" "$device"
}

# fg_device_cert_expired DEVICE_ID [CA] [NAME]: valid from 30 days ago
# until yesterday.
fg_device_cert_expired() {
	local device=$1 ca=${2:-ca} name=${3:-$1}
	fg__sign "$name" "$device" "$ca" v3_device "-30 days" "-1 day" &&
		fg__record_cert "$name" "$device"
}

# fg_device_cert_future DEVICE_ID [CA] [NAME]: valid from tomorrow for 30
# days.
fg_device_cert_future() {
	local device=$1 ca=${2:-ca} name=${3:-$1}
	fg__sign "$name" "$device" "$ca" v3_device "+1 day" "+31 days" &&
		fg__record_cert "$name" "$device"
}

# fg_cert_dates FILE: prints "NOT_BEFORE NOT_AFTER" as ISO 8601 UTC.
fg_cert_dates() {
	local nb na
	nb=$(openssl x509 -noout -startdate -in "$1") || return 1
	na=$(openssl x509 -noout -enddate -in "$1") || return 1
	printf '%s %s\n' "$(date -u -d "${nb#*=}" +%Y-%m-%dT%H:%M:%SZ)" \
		"$(date -u -d "${na#*=}" +%Y-%m-%dT%H:%M:%SZ)"
}

# fg_iso_date OFFSET: an ISO 8601 UTC time, OFFSET as for date -d.
fg_iso_date() {
	date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ
}

# fg_ensure_municipality ID: adds the municipality unless it exists.
fg_ensure_municipality() {
	fg_psql_admin "select fleetgate.add_municipality(:'id', :'id' || ' (test)')
		where not exists (select 1 from fleetgate.municipalities
		                  where id = :'id')" -v id="$1" >/dev/null
}

# fg_add_certificate DEVICE_ID CERTFILE [NOT_BEFORE NOT_AFTER]: adds the
# certificate to the device as fg_admin, with the validity read from the
# certificate unless given (ISO 8601). The fingerprint is passed as openssl
# prints it. Prints the stored fingerprint.
fg_add_certificate() {
	local device=$1 file=$2 nb=${3:-} na=${4:-} fp dates
	fp=$(openssl x509 -noout -fingerprint -sha256 -in "$file") || return 1
	fp=${fp#*=}
	if [[ -z $nb || -z $na ]]; then
		dates=$(fg_cert_dates "$file") || return 1
		nb=${nb:-${dates% *}}
		na=${na:-${dates#* }}
	fi
	fg_psql_admin "select fleetgate.add_certificate(:'dev', :'fp', :'nb', :'na')" \
		-v dev="$device" -v fp="$fp" -v nb="$nb" -v na="$na"
}

# fg_register_device ID MUNI CERTFILE [NOT_BEFORE NOT_AFTER]: registers the
# device (and its municipality) unless it exists, then adds the
# certificate (see fg_add_certificate).
fg_register_device() {
	local device=$1 muni=$2 file=$3
	shift 3
	fg_ensure_municipality "$muni" || return 1
	fg_psql_admin "select fleetgate.register_device(:'dev', :'muni')
		where not exists (select 1 from fleetgate.devices where id = :'dev')" \
		-v dev="$device" -v muni="$muni" >/dev/null || return 1
	fg_add_certificate "$device" "$file" "$@" >/dev/null
}

# fg_revoke NAME [REASON]: revokes the certificate NAME as fg_admin.
fg_revoke() {
	fg_psql_admin "select fleetgate.revoke_certificate(:'fp', :'why')" \
		-v fp="${FG_FP[$1]}" -v why="${2:-test revocation}" >/dev/null
}

# fg_passwd_hash USER PASSWORD: the hash mosquitto_passwd writes.
fg_passwd_hash() {
	local f=$FG_TMP/passwd.$$ line
	mosquitto_passwd -b -c "$f" "$1" "$2" >/dev/null 2>&1 || return 1
	line=$(head -n 1 "$f")
	rm -f "$f"
	printf '%s\n' "${line#*:}"
}

# fg_add_account USER PASSWORD [ROLE] [MUNI]: adds an account as fg_admin.
fg_add_account() {
	local hash
	hash=$(fg_passwd_hash "$1" "$2") || return 1
	fg_psql_admin "select fleetgate.add_account(:'u', :'h', :'r', nullif(:'m', ''))" \
		-v u="$1" -v h="$hash" -v r="${3:-dashboard}" -v m="${4:-}" \
		>/dev/null
}

# ------------------------------------------------------------- brokers ----

# fg_sanitizer_env: the environment (NAME=value lines) under which a
# mosquitto run outside fg_broker_start loads the plugins as the suites'
# brokers do: under FG_SANITIZE=asan the sanitizer runtimes are preloaded
# (leak checks off: these are short runs). Use with env:
#   mapfile -t e < <(fg_sanitizer_env); env "${e[@]}" mosquitto -c CONF
fg_sanitizer_env() {
	local preload
	[[ ${FG_SANITIZE:-} == asan ]] || return 0
	preload="$(gcc -print-file-name=libasan.so)"
	preload+=" $(gcc -print-file-name=libubsan.so)"
	[[ -f $FG_BUILD/libfg_nobind.so ]] && preload+=" $FG_BUILD/libfg_nobind.so"
	printf '%s\n' "LD_PRELOAD=$preload" "ASAN_OPTIONS=detect_leaks=0"
}

# fg_broker_start NAME [CONF_LINE...]: writes $FG_TMP/NAME.conf and starts
# mosquitto with it. The broker has a TLS listener for devices (CA "ca",
# certificate "server") and a plain listener for accounts, each on a free
# port, and loads $FG_BUILD/fleetgate_auth.so against the cluster as
# fg_broker with broker id NAME and snapshot $FG_TMP/NAME.snapshot.
# Extra CONF_LINEs are appended (after the plugin's options, so
# plugin_opt_ lines belong to the auth plugin).
# FG_BROKER_PLUGIN=0 leaves the plugin out; FG_BROKER_ANON=1 then allows
# anonymous clients (harness self-test only). Lines in the array
# FG_BROKER_FIRST go before the auth plugin's block (a plugin that must be
# loaded first, such as ratelimit; fg_broker_runtime_opts NAME prints the
# runtime options that block may repeat).
# Sets FG_BROKER_PID[NAME], FG_TLS_PORT[NAME], FG_PLAIN_PORT[NAME] and
# exports NAME_PID, NAME_TLS_PORT, NAME_PLAIN_PORT. Returns 0 when the TLS
# port accepts, 1 (log printed as diagnostics) when the broker died or
# did not come up.
fg_broker_start() {
	local name=$1
	shift
	local conf=$FG_TMP/$name.conf log=$FG_TMP/$name.log
	local tls plain line
	command -v mosquitto >/dev/null || {
		echo "fg_broker_start: mosquitto not found" >&2
		return 1
	}
	fg_free_port tls && fg_free_port plain || return 1
	{
		echo "# fleetgate test broker $name"
		echo "per_listener_settings false"
		if [[ ${FG_BROKER_ANON:-0} == 1 ]]; then
			echo "allow_anonymous true"
		else
			echo "allow_anonymous false"
		fi
		if [[ $(id -u) -eq 0 ]]; then
			echo "user root"
		fi
		echo "persistence false"
		echo "log_dest file $log"
		echo "log_dest stdout"
		echo "log_type all"
		echo "log_timestamp true"
		echo "log_timestamp_format %Y-%m-%dT%H:%M:%S"
		echo "connection_messages true"
		echo
		echo "listener $tls 127.0.0.1"
		echo "cafile $FG_CERTS/${FG_BROKER_CA:-ca}.crt"
		echo "certfile $FG_CERTS/server.crt"
		echo "keyfile $FG_CERTS/server.key"
		echo "require_certificate true"
		echo "use_identity_as_username false"
		echo
		echo "listener $plain 127.0.0.1"
		echo
		if [[ ${FG_BROKER_PLUGIN:-1} == 1 ]]; then
			if declare -p FG_BROKER_FIRST >/dev/null 2>&1; then
				printf '%s\n' "${FG_BROKER_FIRST[@]}"
			fi
			echo "plugin $FG_BUILD/fleetgate_auth.so"
			fg_broker_runtime_opts "$name"
		fi
		for line in "$@"; do
			printf '%s\n' "$line"
		done
	} >"$conf"
	FG_TLS_PORT[$name]=$tls
	FG_PLAIN_PORT[$name]=$plain
	fg__broker_launch "$name"
}

# fg_broker_restart NAME: starts a stopped or killed broker again with the
# same configuration and ports (clients reconnect to the same address).
fg_broker_restart() {
	[[ -f $FG_TMP/$1.conf ]] || return 1
	fg__broker_launch "$1"
}

# fg_broker_kill NAME: SIGKILL, as a crash would; the broker cleans up
# nothing.
fg_broker_kill() {
	local name=$1 pid=${FG_BROKER_PID[$1]:-}
	[[ -n $pid ]] || return 0
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "FG_BROKER_PID[$name]"
}

fg__broker_launch() {
	local name=$1 conf=$FG_TMP/$1.conf mosq pid timeout
	local tls=${FG_TLS_PORT[$1]} plain=${FG_PLAIN_PORT[$1]}
	local -a cmd=()
	mosq=$(command -v mosquitto) || return 1
	# A broker restarted under the same name appends to the same log;
	# fg_wait_log reads from where this start begins.
	fg_log_mark "$name"
	case ${FG_SANITIZE:-} in
	valgrind)
		cmd=(valgrind --quiet --error-exitcode=99 --leak-check=full
			"--suppressions=$FG_ROOT/test/valgrind.supp"
			"--log-file=$FG_TMP/$name.valgrind.%p" "$mosq" -c "$conf")
		;;
	*) cmd=("$mosq" -c "$conf") ;;
	esac
	if [[ ${FG_SANITIZE:-} == asan ]]; then
		local supp=$FG_ROOT/test/lsan.supp preload
		preload="$(gcc -print-file-name=libasan.so)"
		preload+=" $(gcc -print-file-name=libubsan.so)"
		# See test/sanitize/nobind.c: libpq would hang on glibc's
		# gettext lock inside an ASan-preloaded broker.
		if [[ -f $FG_BUILD/libfg_nobind.so ]]; then
			preload+=" $FG_BUILD/libfg_nobind.so"
		fi
		LD_PRELOAD=$preload \
			ASAN_OPTIONS="log_path=$FG_TMP/$name.asan:detect_leaks=1:fast_unwind_on_malloc=0" \
			UBSAN_OPTIONS="print_stacktrace=1:log_path=$FG_TMP/$name.ubsan" \
			LSAN_OPTIONS="$([[ -f $supp ]] && echo "suppressions=$supp")" \
			"${cmd[@]}" >"$FG_TMP/$name.stdout" 2>&1 &
	else
		"${cmd[@]}" >"$FG_TMP/$name.stdout" 2>&1 &
	fi
	pid=$!
	FG_BROKER_PID[$name]=$pid
	printf -v "${name}_PID" '%s' "$pid"
	printf -v "${name}_TLS_PORT" '%s' "$tls"
	printf -v "${name}_PLAIN_PORT" '%s' "$plain"
	export "${name}_PID" "${name}_TLS_PORT" "${name}_PLAIN_PORT"

	timeout=10
	if fg_wait_until "$timeout" fg__broker_ready "$name" &&
		kill -0 "$pid" 2>/dev/null; then
		return 0
	fi
	fg_diag "broker $name did not start; its output:"
	fg_diag "$(tail -n 30 "$FG_TMP/$name.stdout" 2>/dev/null)"
	return 1
}

# fg_broker_runtime_opts NAME: the runtime options fg_broker_start gives
# broker NAME (database, snapshot, broker id), one line each.
fg_broker_runtime_opts() {
	printf 'plugin_opt_db_conninfo host=%s port=%s dbname=%s %s%s\n' \
		"$PGHOST" "$PGPORT" "$PGDATABASE" "user=fg_broker" \
		"${FG_BROKER_CONNINFO_EXTRA:+ $FG_BROKER_CONNINFO_EXTRA}"
	echo "plugin_opt_snapshot_file $FG_TMP/$1.snapshot"
	echo "plugin_opt_broker_id $1"
	echo "plugin_opt_last_seen_interval_s 1"
}

fg__broker_ready() {
	local name=$1 pid=${FG_BROKER_PID[$1]}
	if ! kill -0 "$pid" 2>/dev/null; then
		# Dead: stop waiting (the caller sees the failure).
		return 0
	fi
	fg_log_has "$name" 'mosquitto version [0-9.]+ running' &&
		fg__port_open "${FG_TLS_PORT[$name]}"
}

# fg_broker_alive NAME: true while the broker process runs.
fg_broker_alive() {
	local pid=${FG_BROKER_PID[$1]:-}
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# fg_broker_stop NAME: ends the broker (SIGTERM, then SIGKILL after 5 s)
# and keeps its exit status in FG_BROKER_STATUS[NAME]. Under FG_SANITIZE it
# records a case for the sanitizer's findings.
fg_broker_stop() {
	local name=$1 pid=${FG_BROKER_PID[$1]:-} status=0 i f found=
	[[ -n $pid ]] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100 * FG_SLOW; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null || status=$?
	unset "FG_BROKER_PID[$name]"
	if [[ -n ${FG_SANITIZE:-} ]]; then
		for f in "$FG_TMP/$name".asan* "$FG_TMP/$name".ubsan* \
			"$FG_TMP/$name".valgrind*; do
			# A log holding only LeakSanitizer's count of the
			# broker's own suppressed leaks is not a finding.
			[[ -s $f ]] && grep -qvE '^(Suppressions used:|  *count +bytes +template|  *[0-9]+ +[0-9]+ +[^ ]+$|-+$|$)' "$f" &&
				found+=" $f"
		done
		if [[ -z $found && $status -ne 99 ]]; then
			pass "broker $name ran without ${FG_SANITIZE} findings"
		else
			fail "broker $name ran without ${FG_SANITIZE} findings" \
				"see$found (exit status $status)"
		fi
	fi
	FG_BROKER_STATUS[$name]=$status
}

# fg_task_sockets PID TID: the inodes of the sockets in the descriptor
# table of task TID of process PID, one per line.
fg_task_sockets() {
	local fd link
	for fd in /proc/"$2"/fd/*; do
		link=$(readlink "$fd" 2>/dev/null) || continue
		[[ $link == socket:\[*\] ]] && echo "${link:8:-1}"
	done
	return 0
}

# fg_worker_pid NAME: the pid of broker NAME's worker process (its child),
# or nothing.
fg_worker_pid() {
	local pid=${FG_BROKER_PID[$1]}
	cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -m1 . || true
}

# fg_worker_tasks NAME: "TID THREAD-NAME" for each task of broker NAME but
# its main thread, and each task of its worker process.
fg_worker_tasks() {
	local pid=${FG_BROKER_PID[$1]} t child
	for t in /proc/"$pid"/task/*; do
		[[ ${t##*/} == "$pid" ]] && continue
		echo "${t##*/} $(cat "$t/comm" 2>/dev/null)"
	done
	for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		for t in /proc/"$child"/task/*; do
			echo "${t##*/} $(cat "$t/comm" 2>/dev/null)"
		done
	done
}

# fg_broker_threads NAME: the names of broker NAME's own threads, main
# thread included, one per line.
fg_broker_threads() {
	local pid=${FG_BROKER_PID[$1]} t
	for t in /proc/"$pid"/task/*; do
		cat "$t/comm" 2>/dev/null
	done
}

# fg_tcp_peer_inodes PORT: the inodes of the TCP sockets on this machine
# connected to port PORT (IPv4 and IPv6).
fg_tcp_peer_inodes() {
	awk -v port="$(printf '%04X' "$1")" 'FNR > 1 {
		split($3, peer, ":"); if (peer[2] == port) print $10 }' \
		/proc/net/tcp /proc/net/tcp6
}

# fg_worker_tables NAME THREAD...: checks that the broker's worker threads
# (named THREAD...) run on descriptor tables of their own: each named
# thread is there, none holds a socket of the broker thread's table, and
# the database connections are the workers', none the broker thread's.
# Prints what is wrong and returns 1, or returns 0.
fg_worker_tables() {
	local name=$1 pid=${FG_BROKER_PID[$1]} want tid comm bad=0 dbseen=0
	local -A main=() db=() names=()
	shift
	while read -r tid; do main[$tid]=1; done < <(fg_task_sockets "$pid" "$pid")
	while read -r tid; do db[$tid]=1; done < <(fg_tcp_peer_inodes "$PGPORT")
	for tid in "${!main[@]}"; do
		if [[ -n ${db[$tid]:-} ]]; then
			echo "the broker thread holds database socket $tid"
			bad=1
		fi
	done
	while read -r tid comm; do
		names[$comm]=1
		while read -r want; do
			if [[ -n ${main[$want]:-} ]]; then
				echo "thread $comm ($tid) holds the broker's socket $want"
				bad=1
			fi
			[[ -n ${db[$want]:-} ]] && dbseen=1
		done < <(fg_task_sockets "$pid" "$tid")
	done < <(fg_worker_tasks "$name")
	for want; do
		if [[ -z ${names[$want]:-} ]]; then
			echo "no thread named $want (threads: ${!names[*]})"
			bad=1
		fi
	done
	((${#main[@]} > 0)) || {
		echo "the broker thread holds no socket at all"
		bad=1
	}
	((dbseen)) || {
		echo "no worker thread holds a database socket"
		bad=1
	}
	return "$bad"
}

# fg_log_mark NAME: fg_wait_log and fg_log_has then read only what the
# broker logged after this call.
fg_log_mark() {
	FG_LOG_MARK[$1]=$(stat -c %s "$FG_TMP/$1.log" 2>/dev/null || echo 0)
}

# fg_log_has NAME REGEX: true when the log (after the mark) matches.
fg_log_has() {
	# grep reads to the end (no -q): with pipefail, an early exit would
	# kill tail with SIGPIPE and fail the check on a large log.
	tail -c +"$((${FG_LOG_MARK[$1]:-0} + 1))" "$FG_TMP/$1.log" 2>/dev/null |
		grep -cE -- "$2" >/dev/null
}

# fg_wait_log NAME REGEX TIMEOUT: polls the broker's log (after the mark)
# for a line matching the extended regex. Returns 0 when found, 1 if not.
fg_wait_log() {
	fg_wait_until "$3" fg_log_has "$1" "$2"
}
# fg_wait_registry NAME [TIMEOUT]: the broker's runtime has a registry
# (read from the database, or from its snapshot), so that decisions are
# made by it rather than refused for want of one. Slow under valgrind.
fg_wait_registry() {
	fg_wait_log "$1" \
		"fleetgate: (registry loaded from database|using registry snapshot)" \
		"${2:-10}"
}

# fg_start_fails DESC REGEX CONF_LINE...: a broker with a minimal
# configuration plus CONF_LINEs (the plugin lines under test) must refuse
# to start, and its output must match REGEX. Passes or fails DESC.
fg_start_fails() {
	local desc=$1 re=$2 conf out rc=0 port
	local -a san
	shift 2
	mapfile -t san < <(fg_sanitizer_env)
	fg_free_port port
	conf=$FG_TMP/bad-$RANDOM.conf
	{
		echo "per_listener_settings false"
		echo "allow_anonymous false"
		[[ $(id -u) -eq 0 ]] && echo "user root"
		echo "log_dest stdout"
		echo "listener $port 127.0.0.1"
		printf '%s\n' "$@"
	} >"$conf"
	out=$(timeout 20 env "${san[@]}" mosquitto -c "$conf" 2>&1) || rc=$?
	if [[ $rc -ne 0 && $rc -ne 124 ]] && [[ $out =~ $re ]]; then
		pass "$desc"
	else
		fail "$desc" "exit status $rc (124: still running), output:" "$out"
	fi
}

# ------------------------------------------------------------- clients ----

# fg_client_run ARGS...: runs fg_client; sets FG_RC (its exit code) and
# FG_OUT (its output). Never fails.
fg_client_run() {
	FG_RC=0
	FG_OUT=$("$FG_CLIENT" --timeout "$((5 * FG_SLOW))" "$@" 2>&1) || FG_RC=$?
	if [[ $FG_VERBOSE == 1 ]]; then
		fg_diag "fg_client $* -> rc=$FG_RC $FG_OUT"
	fi
	return 0
}

fg__tls_args() {
	local broker=$1 cert=$2
	printf '%s\n' --host 127.0.0.1 --port "${FG_TLS_PORT[$broker]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$cert.crt" \
		--key "$FG_CERTS/$cert.key"
}

# fg_connect BROKER CERT [CLIENT_ID] [fg_client args...]: connects to the
# broker's TLS listener with certificate CERT (a name given to
# fg_device_cert); the client id defaults to that certificate's device id.
# Sets FG_RC and FG_OUT.
# expect_rc RC_REGEX DESC: the last fg_client run (FG_RC, FG_OUT) ended
# with an exit code matching RC_REGEX.
expect_rc() {
	if [[ $FG_RC =~ ^($1)$ ]]; then
		pass "$2"
	else
		fail "$2" "fg_client exit code $FG_RC, expected $1; output:" \
			"$FG_OUT"
	fi
}

fg_connect() {
	local broker=$1 cert=$2 id=${3:-${FG_CERT_DEVICE[$2]:-$2}}
	local -a args
	shift $(($# < 3 ? $# : 3))
	mapfile -t args < <(fg__tls_args "$broker" "$cert")
	fg_client_run "${args[@]}" --id "$id" "$@"
}

# fg_connect_plain BROKER CLIENT_ID [fg_client args...]: connects to the
# broker's plain listener. Sets FG_RC and FG_OUT.
fg_connect_plain() {
	local broker=$1 id=$2
	shift 2
	fg_client_run --host 127.0.0.1 --port "${FG_PLAIN_PORT[$broker]}" \
		--id "$id" "$@"
}

fg__rc_is() {
	local want=$1
	shift
	"$@"
	[[ $FG_RC =~ ^($want)$ ]]
}

# fg_retry_rc RC TIMEOUT CMD...: runs CMD (a function that sets FG_RC, such
# as fg_connect or fg_connect_plain) again and again until FG_RC matches RC
# (a regex such as 2 or "2|3"): a registry change reaches the broker
# asynchronously. Returns 0 when it did; FG_RC/FG_OUT hold the last run.
fg_retry_rc() {
	local want=$1 timeout=$2
	shift 2
	fg_wait_until "$timeout" fg__rc_is "$want" "$@"
}

# fg_connect_until RC TIMEOUT BROKER CERT [CLIENT_ID] [args...]:
# fg_retry_rc with fg_connect.
fg_connect_until() {
	local want=$1 timeout=$2
	shift 2
	fg_retry_rc "$want" "$timeout" fg_connect "$@"
}

# fg_client_bg NAME ARGS...: starts fg_client in the background with its
# output in $FG_TMP/clients/NAME.out; FG_CLIENT_PID[NAME] is its PID.
fg_client_bg() {
	local name=$1
	shift
	"$FG_CLIENT" --timeout "$((5 * FG_SLOW))" "$@" \
		>"$FG_TMP/clients/$name.out" 2>&1 &
	FG_CLIENT_PID[$name]=$!
}

# fg_connect_bg NAME BROKER CERT [CLIENT_ID] [args...]: fg_connect in the
# background (give --hold S or --wait-disconnect S).
fg_connect_bg() {
	local name=$1 broker=$2 cert=$3 id=${4:-${FG_CERT_DEVICE[$3]:-$3}}
	local -a args
	shift $(($# < 4 ? $# : 4))
	mapfile -t args < <(fg__tls_args "$broker" "$cert")
	fg_client_bg "$name" "${args[@]}" --id "$id" "$@"
}

# fg_client_out NAME: what the background client printed so far.
fg_client_out() {
	cat "$FG_TMP/clients/$1.out" 2>/dev/null
}

fg__client_has() {
	grep -qE -- "$2" "$FG_TMP/clients/$1.out" 2>/dev/null
}

fg__client_gone() {
	! kill -0 "${FG_CLIENT_PID[$1]}" 2>/dev/null
}

# fg_client_wait_line NAME REGEX TIMEOUT: polls the background client's
# output for REGEX; also gives up early when the client has exited.
fg_client_wait_line() {
	local name=$1 re=$2
	fg_wait_until "$3" fg__client_line_or_gone "$name" "$re" &&
		fg__client_has "$name" "$re"
}

fg__client_line_or_gone() {
	fg__client_has "$1" "$2" || fg__client_gone "$1"
}

# fg_client_alive NAME: true while the background client runs.
fg_client_alive() {
	! fg__client_gone "$1"
}

# fg_client_wait NAME TIMEOUT: waits for the background client to exit and
# sets FG_RC to its exit code (FG_RC=124 when it did not exit in time; it is
# then ended). FG_OUT is its output.
fg_client_wait() {
	local name=$1 pid=${FG_CLIENT_PID[$1]}
	FG_RC=0
	if ! fg_wait_until "$2" fg__client_gone "$name"; then
		fg__stop_pid "$pid" 2
		FG_RC=124
	else
		wait "$pid" 2>/dev/null || FG_RC=$?
	fi
	unset "FG_CLIENT_PID[$name]"
	FG_OUT=$(fg_client_out "$name")
}

# fg_client_stop NAME: ends the background client (SIGTERM: it sends a
# clean DISCONNECT) and sets FG_RC/FG_OUT like fg_client_wait.
fg_client_stop() {
	local name=$1 pid=${FG_CLIENT_PID[$1]:-}
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	fg_client_wait "$name" 3
}

# fg_field TEXT KEY: the value of KEY=value in the last line of TEXT that
# has it.
fg_field() {
	local text=$1 key=$2 line v=
	while IFS= read -r line; do
		if [[ " $line" =~ [[:space:]]$key=([^[:space:]]*) ]]; then
			v=${BASH_REMATCH[1]}
		fi
	done <<<"$text"
	printf '%s\n' "$v"
}

# fg_expect_kick DESC CLIENTS CMD...: runs CMD (which commits a registry
# change) and asserts that each background client named in CLIENTS (a
# space-separated list; each started with --wait-disconnect and already
# past 'ready') is disconnected within FG_KICK_LIMIT_MS of the commit. The
# commit lies between CMD's start and its return; the bound asserted is
# the conservative one, disconnect time minus CMD's start. Each client
# also gets SIGUSR1 when CMD returns, for fg_client's own measure. One case
# per client.
fg_expect_kick() {
	local desc=$1 clients=$2 t0 t1 name epoch since upper lower
	shift 2
	t0=$(fg_now_ms)
	if ! "$@" >/dev/null; then
		fail "$desc" "command failed: $*"
		return 0
	fi
	t1=$(fg_now_ms)
	for name in $clients; do
		kill -USR1 "${FG_CLIENT_PID[$name]}" 2>/dev/null || true
	done
	for name in $clients; do
		fg_client_wait "$name" "$(((FG_KICK_LIMIT_MS / 1000) + 5))"
		epoch=$(fg_field "$FG_OUT" epoch_ms)
		if [[ $FG_RC != 0 || -z $epoch ]]; then
			fail "$desc [$name]" \
				"client was not disconnected (rc=$FG_RC):" "$FG_OUT"
			continue
		fi
		since=$(fg_field "$FG_OUT" ms_since_signal)
		upper=$((epoch - t0))
		lower=$((epoch - t1))
		fg_diag "$name: disconnected at most $upper ms after the commit" \
			"  (the statement took $((t1 - t0)) ms; ms_since_signal=$since)"
		if ((upper < FG_KICK_LIMIT_MS)); then
			pass "$desc [$name: $upper ms]"
		else
			fail "$desc [$name: $upper ms]" \
				"limit ${FG_KICK_LIMIT_MS} ms; lower bound $lower ms"
		fi
	done
}

# --------------------------------------------------------------- Redis ----
#
# One private redis-server per script, on a free loopback port, without
# persistence: a restart starts it empty, as a real Redis that lost its
# data would. Its PID is tracked, so the EXIT trap ends it.

FG_REDIS_PID=
FG_REDIS_PORT=
FG_REDIS_ARGS=()

# fg_redis_start [REDIS_ARGS...]: starts redis-server (extra arguments such
# as --requirepass are kept for fg_redis_restart) on FG_REDIS_PORT, or a
# free port the first time. Returns 0 once it answers PING.
# shellcheck disable=SC2120 # the suites pass arguments
fg_redis_start() {
	if (($# > 0)); then
		FG_REDIS_ARGS=("$@")
	fi
	if [[ -z $FG_REDIS_PORT ]]; then
		fg_free_port FG_REDIS_PORT || return 1
	fi
	redis-server --port "$FG_REDIS_PORT" --bind 127.0.0.1 --save '' \
		--appendonly no --dir "$FG_TMP" \
		--logfile "$FG_TMP/redis.log" "${FG_REDIS_ARGS[@]}" \
		>/dev/null 2>&1 &
	FG_REDIS_PID=$!
	fg_track "$FG_REDIS_PID"
	fg_wait_until 10 fg__redis_up || {
		fg_diag "redis-server did not start; its log:" \
			"$(tail -n 20 "$FG_TMP/redis.log" 2>/dev/null)"
		return 1
	}
}

fg__redis_up() {
	kill -0 "$FG_REDIS_PID" 2>/dev/null &&
		[[ $(fg_redis_cli PING 2>/dev/null) == PONG ]]
}

# fg_redis_cli ARGS...: redis-cli against the harness's server (with its
# password, when --requirepass was given, through the environment).
fg_redis_cli() {
	local pass='' i
	for ((i = 0; i < ${#FG_REDIS_ARGS[@]}; i++)); do
		if [[ ${FG_REDIS_ARGS[$i]} == --requirepass ]]; then
			pass=${FG_REDIS_ARGS[$((i + 1))]}
		fi
	done
	REDISCLI_AUTH=$pass redis-cli -h 127.0.0.1 -p "$FG_REDIS_PORT" "$@"
}

# fg_redis_stop: ends the server (a frozen one is resumed first, so that
# it can exit cleanly).
fg_redis_stop() {
	[[ -n $FG_REDIS_PID ]] || return 0
	kill -CONT "$FG_REDIS_PID" 2>/dev/null || true
	fg__stop_pid "$FG_REDIS_PID" 5
	FG_REDIS_PID=
}

# fg_redis_restart: stops the server and starts it again, empty, on the
# same port.
fg_redis_restart() {
	fg_redis_stop
	fg_redis_start
}

# fg_redis_freeze / fg_redis_thaw: SIGSTOP / SIGCONT: the server keeps its
# port open and accepts connections but answers nothing.
fg_redis_freeze() {
	kill -STOP "$FG_REDIS_PID"
}

fg_redis_thaw() {
	kill -CONT "$FG_REDIS_PID"
}

# ------------------------------------------------------ script clients ----
#
# fg_client --script processes kept running in the background and fed
# commands through a FIFO each (see test/tools/fg_client.c): a PUBLISH is
# judged by its PUBACK, a SUBSCRIBE by its SUBACK, a delivery by whether
# the message arrives.

declare -gA SC_FD=()

# sc_start NAME ARGS...: fg_client --script in the background with
# commands from the FIFO $FG_TMP/clients/NAME.in and its output in
# $FG_TMP/clients/NAME.out. Returns 0 once it printed "ready" (connected),
# 1 when it was refused or did not connect.
sc_start() {
	local name=$1 fifo=$FG_TMP/clients/$1.in fd
	shift
	rm -f -- "$fifo"
	mkfifo -- "$fifo"
	(
		# Other clients' FIFOs stay out of this process, so that each
		# client's input ends when this script closes it.
		for fd in "${SC_FD[@]}"; do
			eval "exec $fd>&-"
		done
		exec "$FG_CLIENT" --timeout "$((5 * FG_SLOW))" --script "$@"
	) <"$fifo" >"$FG_TMP/clients/$name.out" 2>&1 &
	FG_CLIENT_PID[$name]=$!
	exec {fd}>"$fifo"
	SC_FD[$name]=$fd
	fg_client_wait_line "$name" '^ready$' 5
}

# sc_write NAME TEXT: TEXT as it is to the client (in a subshell that
# ignores SIGPIPE, in case the client has exited).
sc_write() {
	local fd=${SC_FD[$1]:-}
	[[ -n $fd ]] || return 0
	(
		trap '' PIPE
		printf '%s' "$2" 1>&"$fd"
	) 2>/dev/null || true
}

# sc_send NAME LINE...: commands to the client, one a line.
sc_send() {
	local name=$1
	shift
	sc_write "$name" "$(printf '%s\n' "$@")"$'\n'
}

# sc_close NAME: a clean DISCONNECT; waits (3 s) for the client to exit.
# Returns what fg_client_wait returns.
sc_close() {
	local name=$1 fd=${SC_FD[$1]:-}
	[[ -n $fd ]] || return 0
	sc_send "$name" quit
	eval "exec $fd>&-"
	unset "SC_FD[$name]"
	fg_client_wait "$name" 3
}

# sc_got NAME PAYLOAD: the client received a message with that payload.
sc_got() {
	grep -qF -- " payload=$2 topic=" "$FG_TMP/clients/$1.out" 2>/dev/null
}
