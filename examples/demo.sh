#!/usr/bin/env bash
# demo.sh: a simulated fleet spread over two brokers with the fleetgate
# auth plugin and one PostgreSQL, from nothing (`make demo`).
#
# It starts a private PostgreSQL cluster with the fleetgate schema and two
# mosquitto brokers, north and south, each with the auth plugin against
# that one database (through test/lib.sh). It registers DEMO_PER_MUNI
# devices in each of two municipalities, each with its own certificate,
# and one dashboard account; riverton's devices and the dashboard connect
# to north, lakeside's to south. Then it shows:
#   - every registered device and the dashboard connect and stay connected,
#     counted per broker;
#   - a device with a certificate from the same CA that is not registered
#     is refused, and so is the dashboard with a wrong password (on the
#     broker it is not connected to: accounts are shared too);
#   - revoking a connected device's certificate in SQL disconnects it from
#     its broker (the time from the commit to the disconnect is measured),
#     and it can connect again to neither broker;
#   - suspending a device connected to the other broker disconnects it the
#     same way, and the first broker refuses it too;
#   - every other device stays connected;
#   - what the audit table recorded, per broker.
# Output is plain text; the checks are TAP lines ("ok N - ..."). Exit
# status 0 when every expected outcome happened, 1 otherwise. Everything
# it started is stopped at exit, by PID. FG_KEEP=1 keeps the files.
set -euo pipefail
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/lib.sh
. "$repo/test/lib.sh"
# shellcheck source=test/bench/benchlib.sh
. "$repo/test/bench/benchlib.sh"

: "${DEMO_PER_MUNI:=12}"
munis=(riverton lakeside)
brokers=(north south)
# Which broker each municipality's devices connect to.
declare -A home=([riverton]=north [lakeside]=south)
stranger='stranger-0001'
victim='riverton-0003'   # revoked while connected to north
suspended='lakeside-0005' # suspended while connected to south
dash_user=dashboard
dash_password=demo-dashboard-password
dash_broker=north

fg_setup
# The two victims are picked by number.
((DEMO_PER_MUNI >= 5)) || fg_bail "DEMO_PER_MUNI must be at least 5"

say() {
	printf '%s\n' "$*"
}

step() {
	printf '\n== %s\n' "$*"
}

# audit_table SQL: a query on the audit table, printed as an aligned table.
audit_table() {
	fg_psql_super "$1" -P format=aligned -P tuples_only=off -P footer=off |
		sed -e '/^[[:space:]]*$/d' -e 's/^/    /'
}

# log_since BROKER REGEX: the first match of REGEX in what the broker
# logged after its fg_log_mark, or "(no line)".
log_since() {
	local line
	# sed, not grep -m 1, reads to the end: under pipefail an early exit
	# would make tail fail with SIGPIPE.
	line=$(tail -c +"$((${FG_LOG_MARK[$1]:-0} + 1))" "$FG_TMP/$1.log" |
		grep -oE -- "$2" | sed -n 1p) || true
	printf '%s\n' "${line:-(no line)}"
}

# commit_ms SQL [psql args]: runs SQL as fg_admin in a transaction and
# prints the database clock read just before COMMIT, in epoch ms. A kick
# measured from it includes the commit itself, so the figure is an upper
# bound (same host, same CLOCK_REALTIME as fg_client's epoch_ms).
commit_ms() {
	local sql=$1
	shift
	fg_psql_admin "begin;
		$sql;
		select (extract(epoch from clock_timestamp()) * 1000)::bigint;
		commit;" "$@" | grep -E '^[0-9]+$' | tail -n 1
}

# measure_kick DEVICE BROKER COMMIT_MS: waits for the background client
# DEVICE (connected to BROKER) to be disconnected, prints what it and the
# broker said, and sets KICK_RC (fg_client's exit code: 0 when the broker
# disconnected it) and KICK_MS (ms from the commit, or -).
KICK_RC=
KICK_MS=-
measure_kick() {
	local id=$1 broker=$2 t0=$3 disc_ms
	fg_client_wait "$id" 5
	say "  fg_client ($id): $(tr '\n' ' ' <<<"$FG_OUT")"
	disc_ms=$(fg_field "$FG_OUT" epoch_ms)
	KICK_RC=$FG_RC
	KICK_MS=-
	if [[ $FG_RC == 0 && -n $disc_ms ]]; then
		KICK_MS=$((disc_ms - t0))
	fi
	say "  $broker's log: $(grep -m 1 -o "fleetgate-auth: kick .*client_id=$id.*" \
		"$FG_TMP/$broker.log" || echo '(no line)')"
	say "  kicked from $broker $KICK_MS ms after the commit" \
		"(limit $FG_KICK_LIMIT_MS ms)"
}

# reload_seen BROKER: waits (2 s at most) for BROKER to log a registry
# reload after its mark and prints that line. Only informative: the
# refused reconnect that follows is the check.
reload_seen() {
	if fg_wait_log "$1" 'registry loaded from database' 2; then
		say "  $1 reloaded the registry too; its log:" \
			"$(log_since "$1" 'fleetgate: registry loaded from database.*')"
	else
		say "  $1 logged no registry reload within 2 s of the commit"
	fi
}

# audit_why WHERE: the distinct "broker:reason" pairs of the auth audit
# rows matching WHERE, comma-separated, in order.
audit_why_sql() {
	printf '%s' "select coalesce(string_agg(distinct broker_id || ':' || reason,
		',' order by broker_id || ':' || reason), '')
		from fleetgate.audit_events where source = 'auth' and $1"
}

# audit_why WHERE EXPECTED: waits (5 s at most: the brokers write the audit
# table asynchronously) until audit_why_sql prints EXPECTED, then prints
# what it prints.
audit_why() {
	fg_wait_sql "$(audit_why_sql "$1")" "$2" 5 || true
	fg_psql_super "$(audit_why_sql "$1")"
}

# still_connected BROKER: the background clients of BROKER's devices (the
# two victims excluded) that are still connected.
still_connected() {
	local b=$1 id n=0
	for id in "${BENCH_DEVICES[@]}"; do
		[[ $id == "$victim" || $id == "$suspended" ]] && continue
		[[ ${home[${BENCH_MUNI[$id]}]} == "$b" ]] || continue
		if fg_client_alive "$id" && ! fg__client_has "$id" '^disconnected'; then
			n=$((n + 1))
		fi
	done
	printf '%s\n' "$n"
}

step "Starting PostgreSQL and applying the fleetgate schema"
fg_pg_start || fg_bail "PostgreSQL did not start"
say "  cluster on 127.0.0.1:$PGPORT, database $PGDATABASE, schema version" \
	"$(fg_psql_super "select max(version) from fleetgate.schema_version")"

step "Making certificates (EC P-256): a CA, the brokers, the fleet, a stranger"
fg_ca_make ca || fg_bail "cannot make the CA"
# One server certificate (CN=localhost) for both brokers: a device trusts
# the CA, not a particular broker, so it can be moved between them.
fg_server_cert ca >/dev/null || fg_bail "cannot make the server certificate"
for m in "${munis[@]}"; do
	bench_fleet "$m" "$DEMO_PER_MUNI" "$m" ||
		fg_bail "cannot make the certificates of $m"
done
fg_device_cert "$stranger" >/dev/null ||
	fg_bail "cannot make the stranger's certificate"
say "  ${#BENCH_DEVICES[@]} device certificates, plus $stranger: signed by" \
	"the same CA, so TLS accepts it, but never registered"

step "Registering the fleet and a dashboard account (as fg_admin)"
bench_register_all || fg_bail "cannot register the devices"
fg_add_account "$dash_user" "$dash_password" dashboard ||
	fg_bail "cannot add the dashboard account"
say "  password hash made with mosquitto_passwd; the registry now holds:"
audit_table "select municipality_id as municipality, count(*) as devices,
	count(*) filter (where status = 'active') as active
	from fleetgate.devices group by 1 order by 1"
say "    accounts: $(fg_psql_super "select string_agg(username || ' (' || role || ')', ', ')
	from fleetgate.accounts")"

step "Starting two brokers, ${brokers[0]} and ${brokers[1]}, with the auth plugin" \
	"and the same database"
# Nothing is shared between the brokers but PostgreSQL: each has its own
# config, ports, log and registry snapshot file, and its own broker_id.
for b in "${brokers[@]}"; do
	fg_broker_start "$b" || fg_bail "broker $b did not start"
done
for b in "${brokers[@]}"; do
	fg_wait_log "$b" 'registry loaded from database' 10 ||
		fg_bail "the plugin of $b did not load the registry"
	say "  $b: PID ${FG_BROKER_PID[$b]}, devices on TLS port ${FG_TLS_PORT[$b]}" \
		"(client certificate required), accounts on port ${FG_PLAIN_PORT[$b]}"
	say "    $(grep -m 1 -o 'fleetgate: registry loaded from database.*' \
		"$FG_TMP/$b.log")"
done

step "Connecting the fleet (one fg_client process per device, kept connected)"
for b in "${brokers[@]}"; do
	fg_log_mark "$b"
done
for id in "${BENCH_DEVICES[@]}"; do
	fg_connect_bg "$id" "${home[${BENCH_MUNI[$id]}]}" "$id" "$id" \
		--wait-disconnect 600
done
fg_client_bg "$dash_user" --host 127.0.0.1 \
	--port "${FG_PLAIN_PORT[$dash_broker]}" --id dashboard-1 \
	--username "$dash_user" --password "$dash_password" --wait-disconnect 600
connected=0
not_connected=()
declare -A n_on=()
for id in "${BENCH_DEVICES[@]}"; do
	if fg_client_wait_line "$id" '^ready' 15; then
		connected=$((connected + 1))
		n_on[${BENCH_MUNI[$id]}]=$((${n_on[${BENCH_MUNI[$id]}]:-0} + 1))
	else
		not_connected+=("$id: $(fg_client_out "$id" | tr '\n' ' ')")
	fi
done
dash_ok=no
if fg_client_wait_line "$dash_user" '^ready' 15; then
	dash_ok=yes
fi
# The brokers' own view: connection_messages logs one line per admitted
# client, so each broker's count comes from its log, not from the clients.
declare -A n_log=()
for b in "${brokers[@]}"; do
	n_log[$b]=$(tail -c +"$((FG_LOG_MARK[$b] + 1))" "$FG_TMP/$b.log" |
		grep -c 'New client connected from ' || true)
done
for m in "${munis[@]}"; do
	say "  ${home[$m]}: $m ${n_on[$m]:-0} of $DEMO_PER_MUNI devices connected"
done
say "  $dash_broker: dashboard account '$dash_user' (client id dashboard-1):" \
	"connected=$dash_ok"
for b in "${brokers[@]}"; do
	say "  $b's log: ${n_log[$b]} clients admitted"
done
for m in "${munis[@]}"; do
	is "${n_on[$m]:-0}" "$DEMO_PER_MUNI" "every $m device is connected to ${home[$m]}"
done
if ((${#not_connected[@]} > 0)); then
	fg_diag "not connected:" "${not_connected[@]}"
fi
is "$dash_ok" yes "the dashboard account is connected to $dash_broker"
is "${n_log[north]} ${n_log[south]}" "$((DEMO_PER_MUNI + 1)) $DEMO_PER_MUNI" \
	"the brokers' logs agree: north admitted riverton and the dashboard, south lakeside"

step "The stranger tries to connect to north (valid certificate, not registered)"
fg_log_mark north
fg_connect north "$stranger"
say "  fg_client: $FG_OUT"
stranger_rc=$FG_RC
fg_wait_log north "fleetgate-auth: .*client_id=$stranger" 5 || true
say "  north's log: $(log_since north "fleetgate-auth: .*client_id=$stranger.*")"
is "$stranger_rc" 2 "the unregistered device is refused with a CONNACK"

step "The dashboard account, on south, with a wrong password"
fg_connect_plain south dashboard-2 --username "$dash_user" --password wrong
say "  fg_client: $FG_OUT"
is "$FG_RC" 2 "a wrong dashboard password is refused"

step "Revoking $victim's certificate in SQL while it is connected to north"
fp=${FG_FP[$victim]}
say "  fingerprint $fp"
fg_log_mark south
t_commit=$(commit_ms "select fleetgate.revoke_certificate(:'fp',
	'demo: device reported stolen')" -v fp="$fp") ||
	fg_bail "the revocation failed"
say "  committed at epoch_ms=$t_commit"
measure_kick "$victim" north "$t_commit"
revoke_kick_ms=$KICK_MS
is "$KICK_RC" 0 "the revoked device is disconnected from north"
ok "[[ $KICK_MS != - ]] && ((KICK_MS <= FG_KICK_LIMIT_MS))" \
	"the revoked device is disconnected within $FG_KICK_LIMIT_MS ms of the commit"

fg_connect north "$victim"
say "  reconnect attempt to north: $FG_OUT"
is "$FG_RC" 2 "the revoked device cannot connect to north again"
reload_seen south
fg_connect south "$victim"
say "  reconnect attempt to south: $FG_OUT"
is "$FG_RC" 2 "the revoked device cannot connect to south either"

step "Suspending $suspended (fleetgate.suspend_device) while it is connected to south"
fg_log_mark north
t_commit=$(commit_ms "select fleetgate.suspend_device(:'dev',
	'demo: sent for repair')" -v dev="$suspended") ||
	fg_bail "the suspension failed"
say "  committed at epoch_ms=$t_commit"
measure_kick "$suspended" south "$t_commit"
suspend_kick_ms=$KICK_MS
is "$KICK_RC" 0 "the suspended device is disconnected from south"
ok "[[ $KICK_MS != - ]] && ((KICK_MS <= FG_KICK_LIMIT_MS))" \
	"the suspended device is disconnected within $FG_KICK_LIMIT_MS ms of the commit"
reload_seen north
fg_connect north "$suspended"
say "  connect attempt to north: $FG_OUT"
is "$FG_RC" 2 "the suspended device cannot connect to north instead"

step "The rest of the fleet"
declare -A others=()
for b in "${brokers[@]}"; do
	others[$b]=$(still_connected "$b")
done
n_others=$((DEMO_PER_MUNI - 1))
dash_alive=$(fg_client_alive "$dash_user" && echo yes || echo no)
for m in "${munis[@]}"; do
	say "  ${home[$m]}: ${others[${home[$m]}]} of $n_others other $m devices" \
		"still connected"
done
say "  $dash_broker: dashboard still connected: $dash_alive"
is "${others[north]} ${others[south]} $dash_alive" "$n_others $n_others yes" \
	"every other device, and the dashboard, stays connected on both brokers"

step "Disconnecting the fleet"
for id in "${BENCH_DEVICES[@]}" "$dash_user"; do
	[[ $id == "$victim" || $id == "$suspended" ]] && continue
	fg_client_stop "$id"
done
say "  all clients sent a clean DISCONNECT and exited"

step "What the audit table recorded (source 'auth', written by the brokers)"
# The brokers write audit rows asynchronously: wait for the last ones.
r_kick=$(audit_why "event = 'kick' and client_id = '$victim'" \
	north:certificate_revoked)
r_again=$(audit_why "outcome = 'refused' and client_id = '$victim'" \
	north:certificate_revoked,south:certificate_revoked)
r_susp=$(audit_why "event = 'kick' and client_id = '$suspended'" \
	south:device_suspended)
r_susp_again=$(audit_why "outcome = 'refused' and client_id = '$suspended'" \
	north:device_suspended)
r_stranger=$(audit_why "outcome = 'refused' and client_id = '$stranger'" \
	north:unknown_certificate)
r_dash=$(audit_why "outcome = 'refused' and username = '$dash_user'" \
	south:bad_password)
audit_table "select broker_id as broker, event, outcome, reason, count(*) as rows
	from fleetgate.audit_events where source = 'auth'
	group by 1, 2, 3, 4 order by 1, 2, 3 desc, 4"
say
# In time order: each broker writes its rows in batches, so the ids of
# the two brokers' rows interleave by when they were written, not by when
# the event happened.
say "  the last rows, by time:"
audit_table "select id, to_char(at, 'HH24:MI:SS.MS') as at, broker_id as broker,
	event, outcome, reason, coalesce(device_id, username, client_id) as who
	from (select * from fleetgate.audit_events where source = 'auth'
	      order by at desc, id desc limit 7) last order by at, id"
say
say "  administrative changes recorded by the registry trigger:"
audit_table "select event, count(*) as rows, max(reason) as last_reason
	from fleetgate.audit_events where source = 'admin' group by 1 order by 1"

# per_broker WHERE: "north=N south=M" for the auth rows matching WHERE.
per_broker() {
	fg_psql_super "select string_agg(b || '=' || coalesce(n, 0), ' ' order by b)
		from unnest(array['${brokers[0]}', '${brokers[1]}']) b
		left join (select broker_id, count(*) n from fleetgate.audit_events
		           where source = 'auth' and $1 group by 1) a
		on a.broker_id = b"
}
n_acc=$(per_broker "event = 'connect' and outcome = 'accepted'")
n_ref=$(per_broker "event = 'connect' and outcome = 'refused'")
n_kick=$(per_broker "event = 'kick' and outcome = 'kicked'")
is "$n_acc" "north=$((DEMO_PER_MUNI + 1)) south=$DEMO_PER_MUNI" \
	"one accepted row per device and one for the dashboard, each from its broker"
is "$r_stranger" north:unknown_certificate \
	"the stranger's refusal is audited by north as unknown_certificate"
is "$r_dash" south:bad_password "the wrong password is audited by south as bad_password"
is "$r_kick" north:certificate_revoked "the kick is audited by north as certificate_revoked"
is "$r_again" north:certificate_revoked,south:certificate_revoked \
	"the refused reconnects are audited by both brokers as certificate_revoked"
is "$r_susp" south:device_suspended "the suspension kick is audited by south as device_suspended"
is "$r_susp_again" north:device_suspended \
	"the refused connect to north is audited by north as device_suspended"

for b in "${brokers[@]}"; do
	fg_broker_stop "$b"
done

step "Summary"
say "  fleet:      ${#BENCH_DEVICES[@]} devices in ${#munis[@]} municipalities" \
	"(${munis[0]} $DEMO_PER_MUNI, ${munis[1]} $DEMO_PER_MUNI), each with its" \
	"own certificate; 1 dashboard account"
say "  brokers:    ${brokers[0]} and ${brokers[1]}, one PostgreSQL;" \
	"${munis[0]} and the dashboard on ${home[${munis[0]}]}," \
	"${munis[1]} on ${home[${munis[1]}]}"
say "  connected:  $connected of ${#BENCH_DEVICES[@]} devices" \
	"(north ${n_on[riverton]:-0}, south ${n_on[lakeside]:-0}); dashboard $dash_ok"
say "  stranger:   refused (${r_stranger:-no audit row})"
say "  dashboard with a wrong password: refused (${r_dash:-no audit row})"
say "  revocation: $victim kicked $revoke_kick_ms ms after the commit" \
	"(${r_kick:-no audit row}); reconnect refused (${r_again:-no audit row})"
say "  suspension: $suspended kicked $suspend_kick_ms ms after the commit" \
	"(${r_susp:-no audit row}); connect refused (${r_susp_again:-no audit row})"
say "  others:     north ${others[north]}, south ${others[south]} stayed connected;" \
	"dashboard $dash_alive"
say "  audit:      accepted $n_acc; refused $n_ref; kicked $n_kick"
if ((FG_T_FAILED == 0)); then
	say "  result:     every expected outcome happened"
else
	say "  result:     $FG_T_FAILED expected outcome(s) did NOT happen (see 'not ok' above)"
fi
say
