#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# ratelimit.sh: per-device budgets counted fleet-wide through Redis, with
# real clients, two brokers sharing one PostgreSQL and one Redis.
#
# Brokers A and B load ratelimit, auth and acl in that order (the order the
# example configuration prescribes), against one registry and one Redis
# that asks for a password (A reads it from the environment, B from a
# file). Devices publish with fg_flood (MQTT 5, QoS 1), which counts the
# broker's PUBACK reason codes: 0x87 is a refusal. A dashboard account
# subscribed on the same broker counts what was delivered.
#
# Cases: a device within its limit loses nothing; one device flooding at
# five times its limit through both brokers for 30 s gets 0.95 to 1.10 of
# its budget, with one audit row per broker and window whose counts add
# up to the refusals; byte limits with 50 kB payloads; a limit edited in
# SQL while the device publishes; Redis stopped and restarted under load;
# Redis frozen (SIGSTOP) under load, with the broker still answering;
# reconnect storms across both brokers and their cool-down; a device
# disconnected after windows over its limit; a wrong Redis password;
# broken options; no password in any log.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

for p in auth acl ratelimit; do
	[[ -f $FG_BUILD/fleetgate_$p.so ]] ||
		fg_bail "$FG_BUILD/fleetgate_$p.so is not built: run make"
done
FLOOD=$FG_BUILD/tools/fg_flood
[[ -x $FLOOD ]] || fg_bail "$FLOOD is not built: run make"
command -v redis-server >/dev/null || fg_bail "redis-server is not installed"

MUNI=rlm
WATCH_PW='rl watcher password'
REDIS_PW="rl-redis-$RANDOM-$RANDOM-secret"
export FG_RL_REDIS_PW=$REDIS_PW
printf '%s\n' "$REDIS_PW" >"$FG_TMP/redis.pw"
chmod 0600 "$FG_TMP/redis.pw"

# ------------------------------------------------------------ helpers ----

# rl_conf NAME [OPTION LINES...]: FG_BROKER_FIRST for broker NAME: the
# ratelimit block first, with the runtime options, a 50 ms exchange and
# the given options.
rl_conf() {
	local name=$1
	shift
	mapfile -t FG_BROKER_FIRST < <(
		echo "plugin $FG_BUILD/fleetgate_ratelimit.so"
		fg_broker_runtime_opts "$name"
		echo "plugin_opt_redis_host 127.0.0.1"
		echo "plugin_opt_redis_port $FG_REDIS_PORT"
		echo "plugin_opt_sync_interval_ms 50"
		echo "plugin_opt_local_share 0.5"
		printf '%s\n' "$@"
	)
}

# The acl plugin after auth, as in production.
ACL_LINES=("plugin $FG_BUILD/fleetgate_acl.so")

# rl_broker NAME [OPTION LINES...]: starts broker NAME with ratelimit.
rl_broker() {
	local name=$1
	shift
	rl_conf "$name" "$@"
	fg_broker_start "$name" "${ACL_LINES[@]}" &&
		fg_wait_registry "$name" 20
}

# flood NAME BROKER DEVICE [fg_flood args...]: fg_flood in the background
# as DEVICE on BROKER's TLS listener, publishing to its own topic; its
# output goes to $FG_TMP/clients/NAME.out.
flood() {
	local name=$1 broker=$2 dev=$3
	shift 3
	"$FLOOD" --host 127.0.0.1 --port "${FG_TLS_PORT[$broker]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$dev.crt" \
		--key "$FG_CERTS/$dev.key" --id "$dev" \
		--topic "water/$MUNI/$dev/readings" "$@" \
		>"$FG_TMP/clients/$name.out" 2>&1 &
	FG_CLIENT_PID[$name]=$!
}

# flood_wait NAME: waits for the flood to end; its result line in FG_OUT.
flood_wait() {
	fg_client_wait "$1" 120
	FG_OUT=$(grep '^flood ' <<<"$FG_OUT" || true)
}

field() {
	fg_field "$1" "$2"
}

# watcher NAME BROKER: a dashboard account subscribed to every topic of
# the municipality on BROKER; messages are counted in its output.
watcher() {
	local name=$1 broker=$2 cmds=$FG_TMP/clients/$1.cmds
	printf 'sub s1 1 water/%s/#\nsleep 600000\n' "$MUNI" >"$cmds"
	"$FG_CLIENT" --timeout 10 --script --host 127.0.0.1 \
		--port "${FG_PLAIN_PORT[$broker]}" --id "$name" \
		--username watcher --password "$WATCH_PW" <"$cmds" \
		>"$FG_TMP/clients/$name.out" 2>&1 &
	FG_CLIENT_PID[$name]=$!
	fg_client_wait_line "$name" '^suback tag=s1 rc=1$' 10
}

# delivered NAME DEVICE [FROM_MS TO_MS]: messages of DEVICE the watcher
# received (between the two times, when given).
delivered() {
	awk -v t="topic=water/$MUNI/$2/" -v from="${3:-0}" -v to="${4:-0}" '
		/^msg / && index($0, t) {
			split($4, a, "=")
			if (to == 0 || (a[2] >= from && a[2] < to)) n++
		}
		END { print n + 0 }' "$FG_TMP/clients/$1.out"
}

# set_limit DEVICE MESSAGES BYTES WINDOW_S BURST: the device's row.
set_limit() {
	fg_psql_admin "select fleetgate.set_rate_limit('device', :'d',
		nullif(:'m', '')::int, nullif(:'b', '')::bigint,
		nullif(:'w', '')::int, nullif(:'u', '')::int)" \
		-v d="$1" -v m="$2" -v b="$3" -v w="$4" -v u="$5" >/dev/null
}

# ratio A B: A / B with three decimals.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b > 0 ? a / b : 0 }'
}

# within X LO HI: LO <= X <= HI (decimals allowed).
within() {
	awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'
}

# log_count NAME REGEX: lines of broker NAME's whole log matching REGEX.
log_count() {
	grep -cE -- "$2" "$FG_TMP/$1.log" 2>/dev/null || true
}

# ------------------------------------------------------------- set-up ----

fg_pg_start || fg_bail "PostgreSQL did not start"
fg_redis_start --requirepass "$REDIS_PW" || fg_bail "Redis did not start"
fg_ca_make ca
fg_server_cert

DEVICES=(rl-calm rl-flood rl-bytes rl-edit rl-outage rl-frozen rl-flap
	rl-kick rl-local rl-probe)
for d in "${DEVICES[@]}"; do
	fg_device_cert "$d"
	fg_register_device "$d" "$MUNI" "$FG_CERTS/$d.crt"
done
fg_add_account watcher "$WATCH_PW" dashboard "$MUNI"
fg_psql_admin "
	select fleetgate.add_acl_rule('all_devices', null, 'water/%m/%c/#',
	                              'publish', 'allow');
	select fleetgate.add_acl_rule('role', 'dashboard', 'water/#',
	                              'receive', 'allow');" >/dev/null ||
	fg_bail "acl rules could not be added"
# A global default no case relies on, and one budget per device.
set_limit rl-calm 50 "" 1 0
set_limit rl-flood 100 "" 1 0
set_limit rl-bytes 1000 200000 1 0
set_limit rl-edit 20 "" 1 0
set_limit rl-outage 100 "" 1 0
set_limit rl-frozen 100 "" 1 0
set_limit rl-kick 20 "" 1 0
set_limit rl-local 100 "" 1 0
set_limit rl-probe 1000 "" 1 0

rl_broker A "plugin_opt_redis_password_env FG_RL_REDIS_PW" \
	"plugin_opt_connect_limit_per_minute 5" \
	"plugin_opt_connect_cooldown_s 8" ||
	fg_bail "broker A did not start"
rl_broker B "plugin_opt_redis_password_file $FG_TMP/redis.pw" \
	"plugin_opt_connect_limit_per_minute 5" \
	"plugin_opt_connect_cooldown_s 8" ||
	fg_bail "broker B did not start"

# Both brokers reach Redis once a device publishes (the first exchange).
flood probeA A rl-probe --rate 20 --count 5
flood_wait probeA
flood probeB B rl-probe --rate 20 --count 5
flood_wait probeB
for b in A B; do
	if fg_wait_log "$b" 'fleetgate-ratelimit: redis reachable: counting fleet-wide' 10; then
		pass "broker $b counts fleet-wide through Redis"
	else
		fail "broker $b counts fleet-wide through Redis" \
			"$(grep ratelimit "$FG_TMP/$b.log" | tail -n 5)"
	fi
done

# ------------------------------------------------- within the limit ----

watcher wA A || fg_bail "the watcher did not subscribe on A"
flood calm A rl-calm --rate 25 --duration 6
flood_wait calm
sent=$(field "$FG_OUT" sent)
is "$(field "$FG_OUT" accepted)|$(field "$FG_OUT" refused)" "$sent|0" \
	"a device within its limit has every message accepted ($sent sent)"
fg_wait_until 10 eval '[[ $(delivered wA rl-calm) -ge $sent ]]' || true
is "$(delivered wA rl-calm)" "$sent" \
	"and every one of them is delivered"
