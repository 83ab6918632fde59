# shellcheck shell=bash
# benchlib.sh: what the benchmark and the demo need beyond test/lib.sh.
#
# Source test/lib.sh first, then this file. Everything started here is
# recorded by PID with fg_track, so lib.sh's EXIT trap ends it.
#
#   bench_fleet PREFIX N MUNI [MUNI...]
#                              N device certificates PREFIX-0001...; the
#                              ids are appended to BENCH_DEVICES and their
#                              municipality (round robin) to BENCH_MUNI
#   bench_register_all         registers every device of BENCH_DEVICES
#                              with its certificate, in one transaction
#   bench_broker_start NAME bare|plugin|persist [CPUS]
#                              a broker for load: TLS listener only, lean
#                              logging, optionally pinned to CPUS; the
#                              arrays BENCH_PLUGINS_FIRST / _AFTER hold
#                              plugin lines to load before / after auth
#   bench_broker_stop NAME
#   bench_median V...          the median of numbers
#   bench_ratio A B            A / B with three decimals

BENCH_DEVICES=()
declare -gA BENCH_MUNI=() BENCH_PID=() BENCH_PORT=()

# bench_fleet PREFIX N MUNI...: the CA "ca" and the server certificate
# must exist (fg_ca_make ca; fg_server_cert).
bench_fleet() {
	local prefix=$1 n=$2 i id
	shift 2
	local -a munis=("$@")
	for ((i = 1; i <= n; i++)); do
		printf -v id '%s-%04d' "$prefix" "$i"
		fg_device_cert "$id" >/dev/null || return 1
		BENCH_DEVICES+=("$id")
		BENCH_MUNI[$id]=${munis[$(((i - 1) % ${#munis[@]}))]}
	done
}

# bench_cert_sql DEVICE: one add_certificate call for the device's
# certificate, validity read from the file (one openssl call).
bench__cert_sql() {
	local id=$1 line nb='' na='' fp=''
	while IFS= read -r line; do
		case $line in
		notBefore=*) nb=$(date -u -d "${line#*=}" +%Y-%m-%dT%H:%M:%SZ) ;;
		notAfter=*) na=$(date -u -d "${line#*=}" +%Y-%m-%dT%H:%M:%SZ) ;;
		*Fingerprint=*) fp=${line#*=} ;;
		esac
	done < <(openssl x509 -noout -startdate -enddate -fingerprint -sha256 \
		-in "$FG_CERTS/$id.crt")
	[[ -n $nb && -n $na && -n $fp ]] || return 1
	printf "select fleetgate.add_certificate('%s', '%s', '%s', '%s');\n" \
		"$id" "$fp" "$nb" "$na"
}

# bench_register_all: municipalities, devices and certificates of
# BENCH_DEVICES, as fg_admin, in one transaction (one registry reload).
# Device ids come from bench_fleet and are plain (no quotes).
bench_register_all() {
	local sql id m
	local -A seen=()
	sql="begin;"$'\n'
	for id in "${BENCH_DEVICES[@]}"; do
		m=${BENCH_MUNI[$id]}
		if [[ -z ${seen[$m]:-} ]]; then
			seen[$m]=1
			sql+="select fleetgate.add_municipality('$m', '$m') where"
			sql+=" not exists (select 1 from fleetgate.municipalities"
			sql+=" where id = '$m');"$'\n'
		fi
		sql+="select fleetgate.register_device('$id', '$m');"$'\n'
		sql+=$(bench__cert_sql "$id") || return 1
		sql+=$'\n'
	done
	sql+="commit;"
	fg_psql_admin "$sql" >/dev/null
}

# bench_broker_start NAME MODE [CPUS]: MODE bare is mosquitto alone
# (allow_anonymous true: without a plugin or a password file, 2.0 refuses
# every client that sends no username; the TLS listener still requires a
# certificate signed by the CA); MODE plugin loads the auth plugin with
# allow_anonymous false; MODE persist loads the auth plugin and the persist
# plugin (readings on water/+/+/readings, journal $FG_TMP/NAME.journal,
# then the lines of the array BENCH_PERSIST_OPTS, if set).
# Logging is what a production broker would keep:
# errors, warnings, notices and information, to a file. CPUS, if given,
# pins the broker (all its threads) with taskset. Sets BENCH_PID[NAME]
# and BENCH_PORT[NAME].
bench_broker_start() {
	local name=$1 mode=$2 cpus=${3:-} bport pid
	local conf=$FG_TMP/$name.conf log=$FG_TMP/$name.log
	local -a cmd=(mosquitto -c "$conf")
	# (not "port": fg_free_port assigns through a name of its own locals)
	fg_free_port bport || return 1
	{
		echo "# fleetgate benchmark broker $name ($mode)"
		echo "per_listener_settings false"
		if [[ $mode == bare ]]; then
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
		echo "cafile $FG_CERTS/ca.crt"
		echo "certfile $FG_CERTS/server.crt"
		echo "keyfile $FG_CERTS/server.key"
		echo "require_certificate true"
		echo "use_identity_as_username false"
		# Small records (the CONNACK after the TLS session tickets)
		# would otherwise wait for the client's delayed ACK.
		echo "set_tcp_nodelay true"
		if [[ $mode != bare ]]; then
			echo
			# Plugins to load before auth (ratelimit).
			if declare -p BENCH_PLUGINS_FIRST >/dev/null 2>&1; then
				printf '%s\n' "${BENCH_PLUGINS_FIRST[@]}"
			fi
			echo "plugin $FG_BUILD/fleetgate_auth.so"
			bench_runtime_opts "$name"
			# Plugins to load after auth (acl).
			if declare -p BENCH_PLUGINS_AFTER >/dev/null 2>&1; then
				printf '%s\n' "${BENCH_PLUGINS_AFTER[@]}"
			fi
		fi
		if [[ $mode == persist ]]; then
			echo "plugin $FG_BUILD/fleetgate_persist.so"
			echo "plugin_opt_topics water/+/+/readings"
			echo "plugin_opt_journal_dir $FG_TMP/$name.journal"
			if [[ -n ${BENCH_PERSIST_OPTS+x} ]]; then
				printf '%s\n' "${BENCH_PERSIST_OPTS[@]}"
			fi
		fi
	} >"$conf"
	if [[ -n $cpus ]]; then
		cmd=(taskset -c "$cpus" "${cmd[@]}")
	fi
	"${cmd[@]}" >"$FG_TMP/$name.stdout" 2>&1 &
	pid=$!
	fg_track "$pid"
	BENCH_PID[$name]=$pid
	BENCH_PORT[$name]=$bport
	if ! fg_wait_until 10 bench__ready "$name" || ! kill -0 "$pid" 2>/dev/null; then
		echo "broker $name did not start:" >&2
		tail -n 20 "$FG_TMP/$name.stdout" "$log" >&2 2>/dev/null
		return 1
	fi
	if [[ $mode != bare ]] &&
		! fg_wait_until 10 grep -q 'registry loaded from database' "$log"; then
		echo "broker $name did not load the registry:" >&2
		tail -n 20 "$log" >&2
		return 1
	fi
}

# bench_runtime_opts NAME: the runtime options of benchmark broker NAME.
bench_runtime_opts() {
	echo "plugin_opt_db_conninfo host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=fg_broker"
	echo "plugin_opt_snapshot_file $FG_TMP/$1.snapshot"
	echo "plugin_opt_broker_id $1"
}

bench__ready() {
	local name=$1
	kill -0 "${BENCH_PID[$name]}" 2>/dev/null || return 0
	grep -qE 'mosquitto version [0-9.]+ running' "$FG_TMP/$name.log" \
		2>/dev/null && fg__port_open "${BENCH_PORT[$name]}"
}

# bench_broker_stop NAME: SIGTERM, SIGKILL after 5 s (the PID stays in
# lib.sh's list; ending it again there is harmless).
bench_broker_stop() {
	local pid=${BENCH_PID[$1]:-}
	[[ -n $pid ]] || return 0
	fg__stop_pid "$pid" 5
	unset "BENCH_PID[$1]"
}

# bench_median V...: the median; the middle value as given when the count
# is odd, the mean of the middle two (up to three decimals) when even.
bench_median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END {
			if (NR == 0) { print "-"; exit }
			if (NR % 2) { print v[(NR + 1) / 2]; exit }
			m = sprintf("%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2)
			sub(/\.?0+$/, "", m)
			print m
		}'
}

# bench_spread V...: the interquartile range of the values, "Q1..Q3"
# (linear interpolation between ranks), "-" for fewer than 2 values. On a
# noisy machine it tells how far one median can be trusted.
bench_spread() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		function q(p,   r, i, f) {
			r = 1 + p * (NR - 1); i = int(r); f = r - i
			return i < NR ? v[i] + f * (v[i + 1] - v[i]) : v[NR]
		}
		END {
			if (NR < 2) { print "-"; exit }
			printf "%.3f..%.3f\n", q(0.25), q(0.75)
		}'
}

# bench_ratio A B: A / B, three decimals ("-" when B is zero).
bench_ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (b + 0 == 0) print "-"; else printf "%.3f\n", a / b }'
}
