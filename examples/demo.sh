#!/usr/bin/env bash
# demo.sh: a simulated fleet against a broker with the fleetgate auth
# plugin, from nothing (`make demo`).
#
# It starts a private PostgreSQL cluster with the fleetgate schema and a
# mosquitto broker with the auth plugin (through test/lib.sh), registers
# DEMO_PER_MUNI devices in each of two municipalities, each with its own
# certificate, and one dashboard account, and then shows:
#   - every registered device and the dashboard connect and stay connected;
#   - a device with a certificate from the same CA that is not registered
#     is refused, and so is the dashboard with a wrong password;
#   - revoking a connected device's certificate in SQL disconnects it (the
#     time from the commit to the disconnect is measured), it cannot
#     reconnect, and every other device stays connected;
#   - what the audit table recorded.
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
stranger='stranger-0001'
victim='riverton-0003'
dash_user=dashboard
dash_password=demo-dashboard-password

fg_setup

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

step "Starting PostgreSQL and applying the fleetgate schema"
fg_pg_start || fg_bail "PostgreSQL did not start"
say "  cluster on 127.0.0.1:$PGPORT, database $PGDATABASE, schema version" \
	"$(fg_psql_super "select max(version) from fleetgate.schema_version")"

step "Making certificates (EC P-256): a CA, the broker, the fleet, a stranger"
fg_ca_make ca || fg_bail "cannot make the CA"
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

step "Starting mosquitto with the fleetgate auth plugin"
fg_broker_start demo || fg_bail "the broker did not start"
fg_wait_log demo 'registry loaded from database' 10 ||
	fg_bail "the plugin did not load the registry"
say "  broker PID ${FG_BROKER_PID[demo]}: devices on TLS port" \
	"${FG_TLS_PORT[demo]} (client certificate required), accounts on" \
	"port ${FG_PLAIN_PORT[demo]}"
say "  $(grep -m 1 -o 'fleetgate: registry loaded from database.*' \
	"$FG_TMP/demo.log")"

step "Connecting the fleet (one fg_client process per device, kept connected)"
for id in "${BENCH_DEVICES[@]}"; do
	fg_connect_bg "$id" demo "$id" "$id" --wait-disconnect 600
done
fg_client_bg "$dash_user" --host 127.0.0.1 --port "${FG_PLAIN_PORT[demo]}" \
	--id dashboard-1 --username "$dash_user" --password "$dash_password" \
	--wait-disconnect 600
connected=0
not_connected=()
for id in "${BENCH_DEVICES[@]}"; do
	if fg_client_wait_line "$id" '^ready' 15; then
		connected=$((connected + 1))
	else
		not_connected+=("$id: $(fg_client_out "$id" | tr '\n' ' ')")
	fi
done
dash_ok=no
if fg_client_wait_line "$dash_user" '^ready' 15; then
	dash_ok=yes
fi
for m in "${munis[@]}"; do
	n=0
	for id in "${BENCH_DEVICES[@]}"; do
		if [[ ${BENCH_MUNI[$id]} == "$m" ]] && fg_client_alive "$id"; then
			n=$((n + 1))
		fi
	done
	say "  $m: $n of $DEMO_PER_MUNI devices connected"
done
say "  dashboard account '$dash_user' (client id dashboard-1): connected=$dash_ok"
is "$connected" "${#BENCH_DEVICES[@]}" "every registered device is connected"
if ((${#not_connected[@]} > 0)); then
	fg_diag "not connected:" "${not_connected[@]}"
fi
is "$dash_ok" yes "the dashboard account is connected"

step "The stranger tries to connect (valid certificate, not registered)"
fg_log_mark demo
fg_connect demo "$stranger"
say "  fg_client: $FG_OUT"
stranger_rc=$FG_RC
fg_wait_log demo "fleetgate-auth: .*client_id=$stranger" 5 || true
say "  broker log: $(tail -c +"$((FG_LOG_MARK[demo] + 1))" "$FG_TMP/demo.log" |
	grep -m 1 -o "fleetgate-auth: .*client_id=$stranger.*" || echo '(no line)')"
is "$stranger_rc" 2 "the unregistered device is refused with a CONNACK"

step "The dashboard with a wrong password"
fg_connect_plain demo dashboard-2 --username "$dash_user" --password wrong
say "  fg_client: $FG_OUT"
is "$FG_RC" 2 "a wrong dashboard password is refused"

step "Revoking $victim's certificate in SQL while it is connected"
fp=${FG_FP[$victim]}
say "  fingerprint $fp"
commit_ms=$(fg_psql_admin "begin;
	select fleetgate.revoke_certificate(:'fp', 'demo: device reported stolen');
	select (extract(epoch from clock_timestamp()) * 1000)::bigint;
	commit;" -v fp="$fp" | grep -E '^[0-9]+$' | tail -n 1) ||
	fg_bail "the revocation failed"
say "  committed at epoch_ms=$commit_ms"
fg_client_wait "$victim" 5
say "  fg_client ($victim): $(tr '\n' ' ' <<<"$FG_OUT")"
disc_ms=$(fg_field "$FG_OUT" epoch_ms)
kick_ms=-
if [[ $FG_RC == 0 && -n $disc_ms ]]; then
	kick_ms=$((disc_ms - commit_ms))
fi
say "  broker log: $(grep -m 1 -o "fleetgate-auth: kick .*client_id=$victim.*" \
	"$FG_TMP/demo.log" || echo '(no line)')"
say "  kicked $kick_ms ms after the commit (limit $FG_KICK_LIMIT_MS ms)"
is "$FG_RC" 0 "the revoked device is disconnected"
ok "[[ $kick_ms != - ]] && ((kick_ms <= FG_KICK_LIMIT_MS))" \
	"the revoked device is disconnected within $FG_KICK_LIMIT_MS ms of the commit"

fg_connect demo "$victim"
say "  reconnect attempt: $FG_OUT"
is "$FG_RC" 2 "the revoked device cannot connect again"

others=0
for id in "${BENCH_DEVICES[@]}"; do
	[[ $id == "$victim" ]] && continue
	if fg_client_alive "$id" && ! fg__client_has "$id" '^disconnected'; then
		others=$((others + 1))
	fi
done
say "  still connected: $others of $((${#BENCH_DEVICES[@]} - 1)) other devices," \
	"dashboard $(fg_client_alive "$dash_user" && echo yes || echo no)"
is "$others" "$((${#BENCH_DEVICES[@]} - 1))" "every other device stays connected"

step "Disconnecting the fleet"
for id in "${BENCH_DEVICES[@]}" "$dash_user"; do
	[[ $id == "$victim" ]] && continue
	fg_client_stop "$id"
done
say "  all clients sent a clean DISCONNECT and exited"

step "What the audit table recorded (source 'auth', written by the broker)"
fg_wait_audit 5 "source = 'auth' and event = 'kick'" || true
fg_wait_audit 5 "source = 'auth' and outcome = 'refused' and client_id = '$victim'" || true
audit_table "select event, outcome, reason, count(*) as rows
	from fleetgate.audit_events where source = 'auth'
	group by 1, 2, 3 order by 1, 2 desc, 3"
say
say "  the last rows:"
audit_table "select id, to_char(at, 'HH24:MI:SS.MS') as at, event, outcome,
	reason, coalesce(device_id, username, client_id) as who, address
	from (select * from fleetgate.audit_events where source = 'auth'
	      order by id desc limit 6) last order by id"
say
say "  administrative changes recorded by the registry trigger:"
audit_table "select event, count(*) as rows, max(reason) as last_reason
	from fleetgate.audit_events where source = 'admin' group by 1 order by 1"

count_auth() {
	fg_psql_super "select count(*) from fleetgate.audit_events
		where source = 'auth' and $1"
}
n_acc=$(count_auth "event = 'connect' and outcome = 'accepted'")
n_ref=$(count_auth "event = 'connect' and outcome = 'refused'")
n_kick=$(count_auth "event = 'kick' and outcome = 'kicked'")
r_stranger=$(fg_psql_super "select string_agg(distinct reason, ',')
	from fleetgate.audit_events where source = 'auth'
	and outcome = 'refused' and client_id = '$stranger'")
r_kick=$(fg_psql_super "select string_agg(distinct reason, ',')
	from fleetgate.audit_events where source = 'auth'
	and event = 'kick' and client_id = '$victim'")
r_again=$(fg_psql_super "select string_agg(distinct reason, ',')
	from fleetgate.audit_events where source = 'auth'
	and outcome = 'refused' and client_id = '$victim'")
r_dash=$(fg_psql_super "select string_agg(distinct reason, ',')
	from fleetgate.audit_events where source = 'auth'
	and outcome = 'refused' and username = '$dash_user'")
is "$n_acc" "$((${#BENCH_DEVICES[@]} + 1))" \
	"one accepted row per device and one for the dashboard"
is "$r_stranger" unknown_certificate "the stranger's refusal is audited as unknown_certificate"
is "$r_dash" bad_password "the wrong password is audited as bad_password"
is "$r_kick" certificate_revoked "the kick is audited as certificate_revoked"
is "$r_again" certificate_revoked "the refused reconnect is audited as certificate_revoked"

fg_broker_stop demo

step "Summary"
say "  fleet:      ${#BENCH_DEVICES[@]} devices in ${#munis[@]} municipalities" \
	"(${munis[0]} $DEMO_PER_MUNI, ${munis[1]} $DEMO_PER_MUNI), each with its" \
	"own certificate; 1 dashboard account"
say "  connected:  $connected of ${#BENCH_DEVICES[@]} devices; dashboard $dash_ok"
say "  stranger:   refused (${r_stranger:-no audit row})"
say "  dashboard with a wrong password: refused (${r_dash:-no audit row})"
say "  revocation: $victim kicked $kick_ms ms after the commit" \
	"(${r_kick:-no audit row}); reconnect refused (${r_again:-no audit row});" \
	"$others others stayed connected"
say "  audit:      accepted=$n_acc refused=$n_ref kicked=$n_kick"
if ((FG_T_FAILED == 0)); then
	say "  result:     every expected outcome happened"
else
	say "  result:     $FG_T_FAILED expected outcome(s) did NOT happen (see 'not ok' above)"
fi
say
