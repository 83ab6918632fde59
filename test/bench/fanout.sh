#!/usr/bin/env bash
# fanout.sh: messages delivered per second through the fleetgate ACL
# plugin, against the bare broker and against Mosquitto's own
# dynamic-security plugin, measured in one run on this machine.
#
# One publisher and FANOUT_SUBSCRIBERS subscribers (test/bench/fg_fanout.c)
# connect to a plain TCP listener with accounts (username and password):
# the subscribers are dashboards of municipality north subscribed to
# water/north/#, the publisher sends to water/north/fanout-pub/readings, so
# every message is delivered to every subscriber, and each delivery is one
# READ ACL check in the broker. Six brokers run side by side:
#   bare    mosquitto alone, allow_anonymous true (the usernames are sent
#           and not checked)
#   thread  the bare broker plus test/bench/thread/fg_threadbase.c, a
#           plugin that only starts one idle thread (with a descriptor
#           table of its own, as fleetgate's workers): what any plugin
#           with a worker thread in the broker process costs before it
#           does anything
#   auth    fleetgate_auth.so alone: no plugin answers ACL checks, so the
#           broker allows everything. Not a configuration to run; it tells
#           the cost of the ACL checks apart from that of the rest of the
#           plugins (acl/auth)
#   acl     fleetgate_auth.so then fleetgate_acl.so against a private
#           PostgreSQL; the registry holds FANOUT_RULES ACL rules, the few
#           the benchmark's accounts use and the rest for other devices,
#           accounts, roles and municipalities, all added with
#           fleetgate.add_acl_rule in one transaction. The loader and
#           the audit writer run in fleetgate's worker process, and the
#           broker process keeps one thread (checked)
#   aclthreads  the acl broker with plugin_opt_workers thread: the loader
#           and the audit writer as threads of the broker (acl/aclthreads
#           is what the worker process gains)
#   MODE-tc any of the above with glibc's thread cache enlarged
#           (GLIBC_TUNABLES=$FANOUT_TCACHE, in the broker's environment
#           only): each of the 50 deliveries of a message allocates a
#           packet of one size, more than the 7 a cache bin holds by
#           default, and a broker with threads takes the arena lock for
#           each one the cache misses. Not in the defaults; for example
#           FANOUT_MODES="bare bare-tc acl acl-tc"
#   dynsec  mosquitto_dynamic_security.so with a pre-written JSON file:
#           the same clients and the same grants as roles, with about as
#           many ACL entries in all (dynamic security has no %m, %u or %c:
#           they are written out)
# For each of FANOUT_ROUNDS rounds and each QoS (0, 1) it loads the brokers
# in turn (bare, thread, auth, acl, aclthreads, dynsec, each round starting one later) for
# FANOUT_SECONDS, so that noise on the machine falls on all of them
# alike, and prints each run, the medians and the ratios acl/bare,
# acl/thread, acl/auth, acl/dynsec and thread/bare, with the interquartile range of the per-round
# ratios: on this kind of machine the rounds of one run spread by 10% and
# more, and the range says how far a median can be trusted. The CPU the
# broker's main thread spent per delivery is printed too: where other
# processes took CPU during a run (other_cpu), it is the fairer
# comparison.
#
# The client runs at nice 19, like the connect benchmark's: the broker,
# which serves everyone from one thread, must get the CPU it asks for.
# It never sleeps on a socket (FANOUT_PACE_US, fg_fanout --pace-us): each
# pass publishes up to FANOUT_BURST messages, reads what every socket
# holds without waiting, and sleeps until the next pass. A client that
# sleeps in poll() instead has to be woken by the broker's write(), and
# on loopback the broker pays for that wake-up in its own time
# (sock_def_readable): the slower of two brokers finds the client asleep
# more often and pays more, which widened every ratio below by several
# per cent, where subscribers on other hosts cost the broker nothing of
# the kind. FANOUT_PACE_US=0 FANOUT_WINDOW=200 FANOUT_BURST=20 runs the
# client of earlier versions of this benchmark (libmosquitto around a
# poll() that sleeps).
# The listeners keep Mosquitto's default set_tcp_nodelay false (Nagle on):
# FANOUT_NODELAY=1 turns it on for all brokers.
#
# It checks that no message was lost or duplicated, that the two ACL
# brokers do drop a publish their rules do not grant (so that they were
# really deciding) and that fleetgate audits it, and, when the object
# files of `make` are there, times acl_check() itself for a READ found
# through the topic pointer, from the cache and from the rules
# (test/bench/acl/fg_aclbench.c).
#
# Environment: FANOUT_ROUNDS (8), FANOUT_SECONDS (2), FANOUT_WARMUP (0.5),
# FANOUT_SUBSCRIBERS (50), FANOUT_RULES (1000), FANOUT_WINDOW (600),
# FANOUT_PACE_US (500), FANOUT_BURST (100),
# FANOUT_NICE (19), FANOUT_MODES ("bare thread auth acl aclthreads dynsec",
# any subset),
# FANOUT_QOS ("0 1"), FANOUT_NODELAY (0), FANOUT_TCACHE
# (glibc.malloc.tcache_count=1024), FANOUT_DYNSEC (the plugin's
# path), and lib.sh's FG_BUILD, FG_KEEP. About 5 minutes with the
# defaults.
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail
bench_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
. "$bench_dir/../lib.sh"
# shellcheck source=test/bench/benchlib.sh
. "$bench_dir/benchlib.sh"

: "${FANOUT_ROUNDS:=8}"
: "${FANOUT_SECONDS:=2}"
: "${FANOUT_WARMUP:=0.5}"
: "${FANOUT_SUBSCRIBERS:=50}"
: "${FANOUT_RULES:=1000}"
: "${FANOUT_WINDOW:=600}"
: "${FANOUT_NICE:=19}"
: "${FANOUT_MODES:=bare thread auth acl aclthreads dynsec}"
: "${FANOUT_QOS:=0 1}"
: "${FANOUT_NODELAY:=0}"
: "${FANOUT_PACE_US:=500}"
: "${FANOUT_BURST:=100}"
: "${FANOUT_DYNSEC:=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so}"
: "${FANOUT_TCACHE:=glibc.malloc.tcache_count=1024}"
tool=$FG_BUILD/tools/fg_fanout
read -r -a modes <<<"$FANOUT_MODES"
read -r -a qos_list <<<"$FANOUT_QOS"

# The benchmark's identities and topics.
muni=north
pub_user=fanout-pub
sub_prefix=dash-
password=fanout-bench-password
topic=water/$muni/$pub_user/readings
filter="water/$muni/#"
# The rules the benchmark's accounts use (see fanout_sql); the others are
# fillers.
core_rules=7
# Municipalities the fillers spread over.
filler_munis=40

fg_setup
[[ -x $tool ]] || fg_bail "$tool not built: run make"
for mode in "${modes[@]}"; do
	case ${mode%-tc} in
	bare | thread) ;;
	auth)
		[[ -f $FG_BUILD/fleetgate_auth.so ]] ||
			fg_bail "$FG_BUILD/fleetgate_auth.so not built: run make"
		;;
	acl | aclthreads)
		[[ -f $FG_BUILD/fleetgate_auth.so && -f $FG_BUILD/fleetgate_acl.so ]] ||
			fg_bail "$FG_BUILD/fleetgate_acl.so not built: run make"
		;;
	dynsec)
		[[ -f $FANOUT_DYNSEC ]] ||
			fg_bail "$FANOUT_DYNSEC not found (package mosquitto)"
		;;
	*) fg_bail "unknown mode $mode in FANOUT_MODES" ;;
	esac
done
((FANOUT_RULES > core_rules)) || fg_bail "FANOUT_RULES must exceed $core_rules"

say() {
	printf '%s\n' "$*"
}

has_mode() {
	[[ " ${modes[*]} " == *" $1 "* ]]
}

# has_base MODE: MODE or MODE-tc runs.
has_base() {
	has_mode "$1" || has_mode "$1-tc"
}

# filler I: the I-th filler rule (0-based), in f_kind, f_subject, f_muni
# and f_n: four kinds in turn, spread over filler_munis municipalities.
# (Variables, not output: it runs a thousand times, a subshell each would
# cost seconds.)
filler() {
	f_n=$(($1 / 4))
	printf -v f_muni 'm%02d' $((f_n % filler_munis + 1))
	case $(($1 % 4)) in
	0)
		f_kind=device
		printf -v f_subject 'dev-%04d' $((f_n + 1))
		;;
	1)
		f_kind=municipality
		f_subject=$f_muni
		;;
	2)
		f_kind=role
		printf -v f_subject 'operator-%02d' $((f_n % 20))
		;;
	3)
		f_kind=account
		printf -v f_subject 'acct-%03d' $((f_n + 1))
		;;
	esac
}

# rule KIND SUBJECT PATTERN ACCESS EFFECT PRIORITY COMMENT: one
# add_acl_rule call. The arguments come from this script: plain words.
rule() {
	printf "select fleetgate.add_acl_rule('%s', '%s', '%s', '%s', '%s', %d, '%s');\n" \
		"$@"
}

# fanout_sql HASH: the registry of the acl broker, in one transaction:
# municipalities, the benchmark's accounts, the fillers' devices and
# accounts, and FANOUT_RULES rules.
fanout_sql() {
	local hash=$1 i
	echo "begin;"
	echo "select fleetgate.add_municipality('$muni', '$muni');"
	for ((i = 1; i <= filler_munis; i++)); do
		printf "select fleetgate.add_municipality('m%02d', 'm%02d');\n" "$i" "$i"
	done
	echo "select fleetgate.add_account('$pub_user', '$hash', 'publisher', '$muni');"
	for ((i = 1; i <= FANOUT_SUBSCRIBERS; i++)); do
		printf "select fleetgate.add_account('%s%03d', '%s', 'dashboard', '%s');\n" \
			"$sub_prefix" "$i" "$hash" "$muni"
	done
	# The rules that decide the benchmark's traffic: core_rules of them.
	rule role dashboard 'water/%m/#' receive allow 0 'dashboards read their municipality'
	rule role dashboard 'water/%m/+/config' receive deny 10 'not the configuration'
	rule role dashboard 'alerts/%m/#' receive allow 0 'alerts'
	rule role dashboard 'energy/%m/#' receive allow 0 'energy'
	rule role dashboard 'water/%m/+/config/#' subscribe deny 10 'no config subscriptions'
	rule account "$pub_user" 'water/%m/%u/readings' publish allow 0 'the publisher'
	rule role publisher 'water/%m/+/config' publish deny 10 'publishers do not configure'
	for ((i = 0; i < FANOUT_RULES - core_rules; i++)); do
		filler "$i"
		case $f_kind in
		device)
			echo "select fleetgate.register_device('$f_subject', '$f_muni');"
			rule device "$f_subject" 'water/%m/%c/#' publish allow 0 filler
			;;
		municipality)
			rule municipality "$f_subject" "water/%m/sensor-$f_n/#" \
				receive allow $((f_n % 5)) filler
			;;
		role)
			rule role "$f_subject" "ops/%m/job-$f_n/#" subscribe allow 5 \
				filler
			;;
		account)
			echo "select fleetgate.add_account('$f_subject', '$hash'," \
				"'operator-$((f_n % 20))', '$f_muni');"
			rule account "$f_subject" 'reports/%u/#' receive allow 0 filler
			;;
		esac
	done
	echo "commit;"
}

# acl ROLE TYPE TOPIC ALLOW PRIORITY: appends one dynamic-security ACL
# entry to role_acls[ROLE].
acl() {
	local entry
	printf -v entry '{"acltype": "%s", "topic": "%s", "allow": %s, "priority": %d}' \
		"$2" "$3" "$4" "$5"
	role_acls[$1]+="${role_acls[$1]:+, }$entry"
}

# client USERNAME CREDENTIALS ROLE...: appends one dynamic-security client
# (CREDENTIALS is "" or the password fields) to clients.
client() {
	local user=$1 creds=$2 role roles='' entry
	shift 2
	for role; do
		roles+="${roles:+, }{\"rolename\": \"$role\"}"
	done
	printf -v entry '{"username": "%s", %s"roles": [%s]}' "$user" \
		"${creds:+$creds, }" "$roles"
	clients+=("$entry")
}

# fanout_dynsec_json PASSWORD_B64 SALT_B64 ITERATIONS: the dynamic-security
# configuration equivalent to fanout_sql: the same accounts as clients,
# the same grants as roles, %m, %u and %c written out. Unlike fleetgate,
# dynamic security allows receiving by default: every default but
# unsubscribe is set to deny here, so that each delivery is decided by an
# ACL entry, as it is with fleetgate.
fanout_dynsec_json() {
	local creds i role sep name
	local -a clients=() roles=()
	local -A role_acls=()
	printf -v creds '"password": "%s", "salt": "%s", "iterations": %d' \
		"$1" "$2" "$3"
	client "$pub_user" "$creds" "publisher-$muni"
	for ((i = 1; i <= FANOUT_SUBSCRIBERS; i++)); do
		printf -v name '%s%03d' "$sub_prefix" "$i"
		client "$name" "$creds" "dashboard-$muni"
	done
	role=dashboard-$muni
	acl "$role" publishClientReceive "water/$muni/#" true 0
	acl "$role" publishClientReceive "water/$muni/+/config" false 10
	acl "$role" publishClientReceive "alerts/$muni/#" true 0
	acl "$role" publishClientReceive "energy/$muni/#" true 0
	acl "$role" subscribePattern "water/$muni/#" true 0
	acl "$role" subscribePattern "alerts/$muni/#" true 0
	acl "$role" subscribePattern "energy/$muni/#" true 0
	acl "$role" subscribePattern "water/$muni/+/config/#" false 10
	acl "publisher-$muni" publishClientSend "$topic" true 0
	acl "publisher-$muni" publishClientSend "water/$muni/+/config" false 10
	for ((i = 0; i < FANOUT_RULES - core_rules; i++)); do
		filler "$i"
		case $f_kind in
		device)
			client "$f_subject" "" "dev-$f_subject"
			acl "dev-$f_subject" publishClientSend \
				"water/$f_muni/$f_subject/#" true 0
			;;
		municipality)
			acl "muni-$f_muni" publishClientReceive \
				"water/$f_muni/sensor-$f_n/#" true $((f_n % 5))
			;;
		role)
			acl "$f_subject" subscribePattern "ops/+/job-$f_n/#" true 5
			;;
		account)
			printf -v name 'operator-%02d' $((f_n % 20))
			client "$f_subject" "" "$name" "acct-$f_subject"
			acl "acct-$f_subject" publishClientReceive \
				"reports/$f_subject/#" true 0
			;;
		esac
	done
	for role in "${!role_acls[@]}"; do
		roles+=("{\"rolename\": \"$role\", \"acls\": [${role_acls[$role]}]}")
	done
	printf '{\n"defaultACLAccess": {"publishClientSend": false, '
	printf '"publishClientReceive": false, "subscribe": false, '
	printf '"unsubscribe": true},\n"clients": [\n'
	sep=''
	for i in "${clients[@]}"; do
		printf '%s%s' "$sep" "$i"
		sep=$',\n'
	done
	printf '\n],\n"groups": [],\n"roles": [\n'
	sep=''
	for i in "${roles[@]}"; do
		printf '%s%s' "$sep" "$i"
		sep=$',\n'
	done
	printf '\n]\n}\n'
}

# dynsec_entries FILE: ACL entries in the dynamic-security file.
dynsec_entries() {
	grep -o '"acltype"' "$1" | wc -l
}

# make_dynsec FILE: writes the dynamic-security configuration, with the
# PBKDF2-SHA512 password hash the plugin expects (12-byte salt).
make_dynsec() {
	local file=$1 salt_hex salt_b64 pw_b64 iter=101
	openssl rand -out "$FG_TMP/dynsec.salt" 12 || return 1
	salt_hex=$(od -An -tx1 "$FG_TMP/dynsec.salt" | tr -d ' \n')
	salt_b64=$(base64 -w0 "$FG_TMP/dynsec.salt")
	pw_b64=$(openssl kdf -binary -keylen 64 -kdfopt digest:SHA512 \
		-kdfopt "pass:$password" -kdfopt "hexsalt:$salt_hex" \
		-kdfopt "iter:$iter" PBKDF2 | base64 -w0) || return 1
	[[ -n $pw_b64 ]] || return 1
	fanout_dynsec_json "$pw_b64" "$salt_b64" "$iter" >"$file"
}

fanout__ready() {
	local name=$1
	kill -0 "${BENCH_PID[$name]}" 2>/dev/null || return 0
	grep -qE 'mosquitto version [0-9.]+ running' "$FG_TMP/$name.log" \
		2>/dev/null && fg__port_open "${BENCH_PORT[$name]}"
}

# fanout_broker_start MODE: a broker named after its mode with one plain
# listener on loopback and the logging of a production broker. Sets
# BENCH_PID[MODE] and BENCH_PORT[MODE].
fanout_broker_start() {
	local mode=$1 base=${1%-tc} bport pid
	local conf=$FG_TMP/$mode.conf log=$FG_TMP/$mode.log
	local -a env=()
	fg_free_port bport || return 1
	{
		echo "# fleetgate fan-out benchmark broker ($mode)"
		echo "per_listener_settings false"
		if [[ $base == bare || $base == thread ]]; then
			echo "allow_anonymous true"
		else
			echo "allow_anonymous false"
		fi
		if [[ $(id -u) -eq 0 ]]; then
			echo "user root"
		fi
		echo "persistence false"
		echo "log_dest file $log"
		echo "log_type error"
		echo "log_type warning"
		echo "log_type notice"
		echo "log_type information"
		echo "log_timestamp true"
		echo "connection_messages true"
		echo
		echo "listener $bport 127.0.0.1"
		if [[ $FANOUT_NODELAY == 1 ]]; then
			echo "set_tcp_nodelay true"
		fi
		case $base in
		thread)
			echo
			echo "plugin $FG_TMP/fg_threadbase.so"
			;;
		auth | acl | aclthreads)
			echo
			echo "plugin $FG_BUILD/fleetgate_auth.so"
			echo "plugin_opt_db_conninfo host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=fg_broker"
			echo "plugin_opt_snapshot_file $FG_TMP/$mode.snapshot"
			echo "plugin_opt_broker_id $mode"
			if [[ $base == aclthreads ]]; then
				echo "plugin_opt_workers thread"
			fi
			if [[ $base != auth ]]; then
				echo "plugin $FG_BUILD/fleetgate_acl.so"
			fi
			;;
		dynsec)
			echo
			echo "plugin $FANOUT_DYNSEC"
			echo "plugin_opt_config_file $FG_TMP/dynsec.json"
			;;
		esac
	} >"$conf"
	if [[ $mode != "$base" ]]; then
		env=(env "GLIBC_TUNABLES=$FANOUT_TCACHE")
	fi
	"${env[@]}" mosquitto -c "$conf" >"$FG_TMP/$mode.stdout" 2>&1 &
	pid=$!
	fg_track "$pid"
	BENCH_PID[$mode]=$pid
	BENCH_PORT[$mode]=$bport
	if ! fg_wait_until 10 fanout__ready "$mode" || ! kill -0 "$pid" 2>/dev/null; then
		echo "broker $mode did not start:" >&2
		tail -n 20 "$FG_TMP/$mode.stdout" "$log" >&2 2>/dev/null
		return 1
	fi
	if [[ $base == auth || $base == acl || $base == aclthreads ]] &&
		! fg_wait_until 10 grep -q 'registry loaded from database' "$log"; then
		echo "broker $mode did not load the registry:" >&2
		tail -n 20 "$log" >&2
		return 1
	fi
}

# run_fanout MODE QOS SECONDS LABEL [fg_fanout args...]: one fg_fanout run;
# prints its line. Later arguments override the defaults.
run_fanout() {
	local mode=$1 qos=$2 seconds=$3 label=$4
	shift 4
	nice -n "$FANOUT_NICE" "$tool" --port "${BENCH_PORT[$mode]}" \
		--topic "$topic" --filter "$filter" --qos "$qos" \
		--subscribers "$FANOUT_SUBSCRIBERS" --window "$FANOUT_WINDOW" \
		--duration "$seconds" --warmup "$FANOUT_WARMUP" \
		--pub-user "$pub_user" --pub-password "$password" \
		--sub-prefix "$sub_prefix" --sub-password "$password" \
		--label "$label" --broker-pid "${BENCH_PID[$mode]}" \
		--pace-us "$FANOUT_PACE_US" --burst "$FANOUT_BURST" "$@" \
		2>>"$FG_TMP/fanout.err"
}

# pace_text: how the client waits, for the header.
pace_text() {
	if ((FANOUT_PACE_US > 0)); then
		echo "paced passes of ${FANOUT_PACE_US} us (subscribers read directly, never woken by the broker)"
	else
		echo "woken by poll() (libmosquitto reads every socket)"
	fi
}

# ns_per_delivery CORES RATE: broker CPU nanoseconds per delivery.
ns_per_delivery() {
	awk -v c="$1" -v r="$2" 'BEGIN {
		if (c == "-" || c == "" || r + 0 == 0) print "-"
		else printf "%.0f\n", c / r * 1e9 }'
}

# minus A B: A - B, rounded ("-" when either is missing).
minus() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "-" || b == "-" || a == "" || b == "") print "-"
		else printf "%.0f\n", a - b }'
}

# ratio A B: bench_ratio, "-" when either is missing.
ratio() {
	if [[ -z $1 || -z $2 || $1 == - || $2 == - ]]; then
		echo -
	else
		bench_ratio "$1" "$2"
	fi
}

# median V...: bench_median, "-" for no values.
median() {
	if (($# == 0)); then
		echo -
	else
		bench_median "$@"
	fi
}

say "fleetgate ACL fan-out benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
say "machine: $(nproc) CPUs, $cpu_model, $(mosquitto -h 2>/dev/null | head -n 1)"

t0=$(fg_now_ms)
if has_base acl || has_base aclthreads || has_base auth; then
	fg_pg_start || fg_bail "PostgreSQL did not start"
	hash=$(fg_passwd_hash x "$password") || fg_bail "mosquitto_passwd failed"
	fanout_sql "$hash" >"$FG_TMP/registry.sql"
	fg_psql_admin "$(cat "$FG_TMP/registry.sql")" >/dev/null 2>"$FG_TMP/registry.err" ||
		fg_bail "cannot load the registry and rules:" \
			"$(head -n 3 "$FG_TMP/registry.err")"
	n_rules=$(fg_psql_super "select count(*) from fleetgate.acl_rules")
	say "acl: $n_rules rules in fleetgate.acl_rules ($core_rules for the" \
		"benchmark's accounts), $FANOUT_SUBSCRIBERS dashboard accounts and" \
		"one publisher account in $muni, fillers in $filler_munis other" \
		"municipalities"
fi
if has_mode dynsec; then
	make_dynsec "$FG_TMP/dynsec.json" || fg_bail "cannot write the dynsec file"
	say "dynsec: $(dynsec_entries "$FG_TMP/dynsec.json") ACL entries in" \
		"$(grep -c '"rolename": "[^"]*", "acls"' "$FG_TMP/dynsec.json") roles," \
		"the same clients; every default access denied but unsubscribe"
fi
if has_base thread; then
	cc -shared -fPIC -O2 -o "$FG_TMP/fg_threadbase.so" \
		"$bench_dir/thread/fg_threadbase.c" >"$FG_TMP/threadbase.build" 2>&1 ||
		fg_bail "the thread plugin did not build: $(head -n 3 "$FG_TMP/threadbase.build")"
fi
for mode in "${modes[@]}"; do
	fanout_broker_start "$mode" || fg_bail "the $mode broker did not start"
done
say "setup: ${#modes[@]} brokers (${modes[*]}), took" \
	"$((($(fg_now_ms) - t0) / 1000)) s"
if has_mode bare; then
	say "bare: mosquitto alone, allow_anonymous true"
fi
if has_mode thread; then
	say "thread: the bare broker with a plugin that starts one idle thread"
fi
if has_mode auth; then
	say "auth: fleetgate_auth.so alone, no ACL plugin (every check allowed)"
fi
say "client: fg_fanout nice=$FANOUT_NICE, MQTT 3.1.1 over plain TCP, 1" \
	"publisher ($pub_user -> $topic) and $FANOUT_SUBSCRIBERS subscribers" \
	"(${sub_prefix}001... -> $filter), window $FANOUT_WINDOW messages," \
	"bursts of $FANOUT_BURST, 64-byte payloads, accounts with passwords on" \
	"every broker, $(pace_text)"
say "rounds: $FANOUT_ROUNDS x QoS (${qos_list[*]}) x (${modes[*]})," \
	"${FANOUT_SECONDS}s each after a ${FANOUT_WARMUP}s warm-up"

# Warm-up and smoke test: every broker delivers at every QoS.
for mode in "${modes[@]}"; do
	for qos in "${qos_list[@]}"; do
		run_fanout "$mode" "$qos" 0.5 warmup >/dev/null ||
			fg_bail "warm-up against $mode at QoS $qos failed:" \
				"$(tail -n 2 "$FG_TMP/fanout.err")"
	done
done

# The ACL brokers must drop what their rules do not grant: the publisher
# may publish only to its own readings topic. fg_fanout exits 3 when
# nothing was delivered.
for mode in acl dynsec; do
	has_mode "$mode" || continue
	if [[ $mode == acl ]]; then
		fg_audit_mark
	fi
	rc=0
	run_fanout "$mode" 0 0.5 denied --topic "water/$muni/not-$pub_user/readings" \
		--warmup 0 --drain 0.2 >/dev/null || rc=$?
	is "$rc" 3 "the $mode broker drops a publish its rules do not grant"
	if [[ $mode == acl ]]; then
		ok "fg_wait_audit 5 \"source = 'acl' and event = 'deny' and reason = 'publish'\"" \
			"the acl broker audits the denied publish"
	fi
done

# The ratios printed: acl against each other mode that ran, and the
# idle-thread broker against the bare one.
pairs=()
for mode in bare thread auth aclthreads dynsec; do
	if has_mode acl && has_mode "$mode"; then
		pairs+=("acl/$mode")
	fi
done
if has_mode aclthreads && has_mode dynsec; then
	pairs+=("aclthreads/dynsec")
fi
if has_mode thread && has_mode bare; then
	pairs+=("thread/bare")
fi
# With the larger thread cache: against the same broker without it, and
# acl against bare both with it.
for mode in bare thread acl; do
	if has_mode "$mode-tc" && has_mode "$mode"; then
		pairs+=("$mode-tc/$mode")
	fi
done
if has_mode acl-tc && has_mode bare-tc; then
	pairs+=("acl-tc/bare-tc")
fi

declare -A rate=() ns=() all_rate=() all_prate=() all_ns=() all_main=()
declare -A round_ratios=() lost_sum=() dups_sum=()
for ((r = 1; r <= FANOUT_ROUNDS; r++)); do
	# Each round starts one mode later, so that no broker always runs
	# first or right after another: over the rounds every mode takes
	# every place in the order.
	order=()
	for ((i = 0; i < ${#modes[@]}; i++)); do
		order+=("${modes[(i + r - 1) % ${#modes[@]}]}")
	done
	for qos in "${qos_list[@]}"; do
		for mode in "${order[@]}"; do
			line=$(run_fanout "$mode" "$qos" "$FANOUT_SECONDS" "$mode") ||
				fg_bail "fg_fanout against $mode at QoS $qos failed:" \
					"$(tail -n 2 "$FG_TMP/fanout.err")"
			say "round $r qos$qos $line"
			k=$mode.$qos
			rate[$k]=$(fg_field "$line" deliver_rate)
			main=$(fg_field "$line" broker_main_cpu)
			ns[$k]=$(ns_per_delivery "$main" "${rate[$k]}")
			all_rate[$k]+=" ${rate[$k]}"
			all_prate[$k]+=" $(fg_field "$line" pub_rate)"
			all_main[$k]+=" $main"
			all_ns[$k]+=" ${ns[$k]}"
			lost_sum[$k]=$((${lost_sum[$k]:-0} + $(fg_field "$line" lost)))
			dups_sum[$k]=$((${dups_sum[$k]:-0} + $(fg_field "$line" dups)))
		done
		text=
		for pair in "${pairs[@]}"; do
			v=$(ratio "${rate[${pair%/*}.$qos]}" "${rate[${pair#*/}.$qos]}")
			round_ratios[$pair.$qos]+=" $v"
			text+=" $pair=$v"
		done
		for mode in "${modes[@]}"; do
			text+=" ns_$mode=${ns[$mode.$qos]}"
		done
		say "round $r qos$qos deliver_ratio${text:- -}" \
			"(ns_MODE: broker main-thread CPU ns per delivery)"
	done
done

# mode_values NAME QOS: "mode=median" for every mode, of the per-run
# values in the array NAME.
mode_values() {
	local -n values=$1
	local mode out=''
	for mode in "${modes[@]}"; do
		# shellcheck disable=SC2086 # blank-separated numbers
		out+=" $mode=$(median ${values[$mode.$2]})"
	done
	printf '%s\n' "${out# }"
}

# shellcheck disable=SC2086 # the lists are blank-separated numbers
for qos in "${qos_list[@]}"; do
	declare -A m_rate=() m_ns=()
	for mode in "${modes[@]}"; do
		m_rate[$mode]=$(median ${all_rate[$mode.$qos]})
		m_ns[$mode]=$(median ${all_ns[$mode.$qos]})
	done
	ratios='' of_rounds='' spreads='' extra='' capacity=''
	for pair in "${pairs[@]}"; do
		one=${pair%/*} other=${pair#*/}
		ratios+=" ratio_${one}_$other=$(ratio "${m_rate[$one]}" "${m_rate[$other]}")"
		of_rounds+=" $pair=$(median ${round_ratios[$pair.$qos]})"
		spreads+=" $pair=$(bench_spread ${round_ratios[$pair.$qos]})"
		extra+=" extra_${one}_vs_${other}_ns=$(minus "${m_ns[$one]}" "${m_ns[$other]}")"
		capacity+=" capacity_ratio_${one}_$other=$(ratio "${m_ns[$other]}" "${m_ns[$one]}")"
	done
	say "median qos$qos deliveries_per_s $(mode_values all_rate "$qos")$ratios"
	if [[ -n $of_rounds ]]; then
		say "median qos$qos of_round_ratios$of_rounds"
		say "spread qos$qos of_round_ratios$spreads (interquartile range over $FANOUT_ROUNDS rounds)"
	fi
	say "median qos$qos published_per_s $(mode_values all_prate "$qos")" \
		"(each delivered to $FANOUT_SUBSCRIBERS subscribers)"
	say "median qos$qos broker_main_cpu_ns_per_delivery" \
		"$(mode_values all_ns "$qos")$extra$capacity"
	say "median qos$qos broker_main_cpu $(mode_values all_main "$qos")"
	for mode in "${modes[@]}"; do
		is "${lost_sum[$mode.$qos]}/${dups_sum[$mode.$qos]}" 0/0 \
			"$mode at QoS $qos: no message lost or duplicated (lost/dups)"
	done
done
say "note: deliveries_per_s measures the broker only where its main thread" \
	"used nearly a full CPU (broker_main_cpu near 1.00); otherwise the" \
	"client or other processes (other_cpu) took CPU, and the CPU per" \
	"delivery and the capacity ratios are the fairer comparison"

# With its workers in a process of their own, the acl broker's process
# keeps one thread (what the comparison with the thread broker is about).
for mode in acl aclthreads; do
	has_mode "$mode" || continue
	threads=$(ls /proc/"${BENCH_PID[$mode]}"/task 2>/dev/null | wc -l)
	want=1
	[[ $mode == aclthreads ]] && want=3
	is "$threads" "$want" "the $mode broker process runs $want thread(s)"
done

if has_mode acl; then
	problems=$(grep -E 'fleetgate[a-z-]*: .*(error|lost|dropped|full|unreachable|failed)' \
		"$FG_TMP/acl.log" | head -n 5 || true)
	is "$problems" "" "the acl broker logged no errors or lost events"
fi

# acl_check() alone, without broker or network (optional: needs the object
# files of `make`, the acl plugin's among them).
aclbench_src=$bench_dir/acl/fg_aclbench.c
aclbench_bin=$FG_TMP/fg_aclbench
aclbench_build() {
	local -a objs=("$FG_BUILD"/obj/common/*.o "$FG_BUILD"/obj/plugins/auth/*.o
		"$FG_BUILD"/obj/plugins/acl/*.o)
	local -a cflags=(-std=c11 -D_GNU_SOURCE -O2 -Wall -pthread
		-I"$FG_ROOT/common" -I"$FG_ROOT/plugins/acl" -I"$FG_ROOT/plugins/auth"
		-I"$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)")
	[[ -f $aclbench_src ]] && compgen -G "$FG_BUILD/obj/plugins/acl/*.o" >/dev/null ||
		return 1
	ar rcs "$FG_TMP/libfgacl.a" "${objs[@]}" 2>/dev/null || return 1
	# The archive gives the harness only the members it needs; should
	# those call into the broker, the unit tests' stubs stand in for it.
	cc "${cflags[@]}" -o "$aclbench_bin" "$aclbench_src" \
		"$FG_TMP/libfgacl.a" -lssl -lcrypto -lpthread \
		>"$FG_TMP/aclbench.build" 2>&1 ||
		cc "${cflags[@]}" -I"$FG_ROOT/test/unit" -o "$aclbench_bin" \
			"$aclbench_src" "$FG_ROOT/test/unit/stubs.c" "$FG_TMP/libfgacl.a" \
			-lmosquitto -lpq -lcjson -lssl -lcrypto -lpthread \
			>>"$FG_TMP/aclbench.build" 2>&1
}
if aclbench_build; then
	if "$aclbench_bin" >"$FG_TMP/aclbench.out" 2>"$FG_TMP/aclbench.err"; then
		while IFS= read -r line; do
			say "aclcheck $line"
		done <"$FG_TMP/aclbench.out"
	else
		fail "the acl_check harness ran" "$(head -n 5 "$FG_TMP/aclbench.err")"
	fi
else
	say "aclcheck: skipped (the harness did not build; see" \
		"$FG_TMP/aclbench.build with FG_KEEP=1)"
fi

for mode in "${modes[@]}"; do
	bench_broker_stop "$mode"
done
