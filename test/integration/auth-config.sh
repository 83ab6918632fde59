#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# auth-config.sh: the auth plugin's options and what they change.
#
# Broken options stop the broker at start with a line naming the option,
# and no secret reaches the log; device API keys (per_device and all);
# credentials changed while a client is connected; re-authentication on
# SIGHUP; the registry read over TLS with sslmode=verify-full.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

[[ -f $FG_BUILD/fleetgate_auth.so ]] ||
	fg_bail "$FG_BUILD/fleetgate_auth.so is not built: run make"

fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca
fg_ca_make other other-ca
fg_server_cert
for d in dev-key dev-nokey dev-rekey dev-hup dev-thr; do
	fg_device_cert "$d"
	fg_register_device "$d" m1 "$FG_CERTS/$d.crt"
done

# --- options that stop the broker at start ---------------------------------

mapfile -t SAN_ENV < <(fg_sanitizer_env)

# start_fails DESC REGEX OPTION_LINE...: a broker with these plugin options
# exits non-zero at start, and its output matches REGEX.
start_fails() {
	local desc=$1 re=$2
	shift 2
	fg_start_fails "$desc" "$re" "plugin $FG_BUILD/fleetgate_auth.so" "$@"
}

start_fails "an unknown option stops the broker, naming the option" \
	"fleetgate-auth: cannot start: plugin_opt_colour: unknown option" \
	"plugin_opt_colour red"
start_fails "an api_key mode that does not exist stops the broker" \
	"plugin_opt_api_key: 'some' is not one of: off, per_device, all" \
	"plugin_opt_api_key some"
start_fails "a max_id_length of 0 stops the broker" \
	"plugin_opt_max_id_length: '0' is not an integer from 1 to 65535" \
	"plugin_opt_max_id_length 0"
start_fails "a password_budget_ms of 0 stops the broker" \
	"plugin_opt_password_budget_ms: '0' is not an integer from 1 to 1000" \
	"plugin_opt_password_budget_ms 0"
start_fails "a non-numeric audit_flush_ms stops the broker" \
	"plugin_opt_audit_flush_ms: 'soon' is not an integer" \
	"plugin_opt_audit_flush_ms soon"
start_fails "a workers mode that does not exist stops the broker" \
	"plugin_opt_workers: 'fork' is not one of: process, thread" \
	"plugin_opt_workers fork"
start_fails "an option given twice stops the broker" \
	"plugin_opt_broker_id: given more than once" \
	"plugin_opt_broker_id a" "plugin_opt_broker_id b"

# A password in the conninfo of an unreachable database never reaches the
# log, though the failure to connect does.
fg_free_port port
fg_free_port dead_port
{
	echo "per_listener_settings false"
	echo "allow_anonymous false"
	[[ $(id -u) -eq 0 ]] && echo "user root"
	echo "log_dest stdout"
	echo "log_type all"
	echo "listener $port 127.0.0.1"
	echo "plugin $FG_BUILD/fleetgate_auth.so"
	echo "plugin_opt_db_conninfo host=127.0.0.1 port=$dead_port dbname=x user=y password=hunter2-s3cret"
} >"$FG_TMP/secret.conf"
env "${SAN_ENV[@]}" mosquitto -c "$FG_TMP/secret.conf" >"$FG_TMP/secret.out" 2>&1 &
secret_pid=$!
fg_track "$secret_pid"
fg_wait_until 10 grep -q "fleetgate-registry: database unreachable" \
	"$FG_TMP/secret.out" || true
ok 'kill -0 "$secret_pid"' "the broker keeps running while its database is unreachable"
kill -TERM "$secret_pid" 2>/dev/null || true
wait "$secret_pid" 2>/dev/null || true
ok 'grep -q "fleetgate-registry: database unreachable" "$FG_TMP/secret.out"' \
	"the failure to reach the database is logged"
ok '! grep -q "hunter2" "$FG_TMP/secret.out"' \
	"the database password never appears in the broker's log"

# --- device API keys --------------------------------------------------------

key_hash=$(fg_passwd_hash dev-key 'k-123-secret')
fg_psql_admin "select fleetgate.set_device_api_key('dev-key', :'h');" \
	-v h="$key_hash" >/dev/null
fg_psql_admin "select fleetgate.set_device_api_key('dev-rekey', :'h');" \
	-v h="$key_hash" >/dev/null

fg_broker_start keys "plugin_opt_api_key per_device" ||
	fg_bail "broker keys did not start"
fg_wait_log keys "registry loaded from database" 10 ||
	fail "broker keys loaded the registry"

fg_connect keys dev-key dev-key --username dev-key --password k-123-secret
expect_rc 0 "per_device: a flagged device with its API key is admitted"
fg_connect keys dev-key dev-key --username dev-key --password wrong-key
expect_rc 2 "per_device: a flagged device with a wrong API key is refused"
fg_connect keys dev-key dev-key
expect_rc 2 "per_device: a flagged device without an API key is refused"
ok 'fg_wait_audit 5 "broker_id = '"'keys'"' and reason = '"'bad_api_key'"'
	and device_id = '"'dev-key'"'"' \
	"the refusals are audited with reason bad_api_key and the device id"
fg_connect keys dev-nokey dev-nokey
expect_rc 0 "per_device: a device not flagged needs no API key"
fg_connect keys dev-key dev-key --v311 --username dev-key \
	--password k-123-secret
expect_rc 0 "per_device: the API key works over MQTT 3.1.1 as well"

# A key replaced while the device is connected ends its session.
fg_connect_bg rekey keys dev-rekey dev-rekey --username dev-rekey \
	--password k-123-secret --wait-disconnect 10
fg_client_wait_line rekey '^ready' 5 ||
	fail "dev-rekey connected with its key" "$(fg_client_out rekey)"
new_hash=$(fg_passwd_hash dev-rekey 'k-456-new')
fg_expect_kick "a device whose API key is replaced is disconnected" rekey \
	fg_psql_admin "select fleetgate.set_device_api_key('dev-rekey', :'h');" \
	-v h="$new_hash"
fg_connect keys dev-rekey dev-rekey --username dev-rekey \
	--password k-456-new
expect_rc 0 "it is admitted again with its new key"

fg_broker_start allkeys "plugin_opt_api_key all" ||
	fg_bail "broker allkeys did not start"
fg_wait_log allkeys "registry loaded from database" 10 ||
	fail "broker allkeys loaded the registry"
fg_connect allkeys dev-nokey dev-nokey
expect_rc 2 "all: a device without an API key hash is refused"
fg_connect allkeys dev-key dev-key --username dev-key --password k-123-secret
expect_rc 0 "all: a device with its API key is admitted"
fg_broker_stop allkeys

# --- accounts changed while connected ---------------------------------------

fg_add_account ops 'ops password' service m1
fg_add_account ops2 'ops2 password' service m1
fg_retry_rc 0 5 fg_client_run --host 127.0.0.1 \
	--port "${FG_PLAIN_PORT[keys]}" --id ops-probe --username ops \
	--password 'ops password' ||
	fail "the new service account is admitted" "$FG_OUT"
fg_client_bg ops --host 127.0.0.1 --port "${FG_PLAIN_PORT[keys]}" \
	--id ops-1 --username ops --password 'ops password' --wait-disconnect 10
fg_client_wait_line ops '^ready' 5 ||
	fail "the service account connected" "$(fg_client_out ops)"
fg_expect_kick "disabling a connected account disconnects it" ops \
	fg_psql_admin "update fleetgate.accounts set disabled = true
		where username = 'ops';"
ok 'fg_wait_audit 5 "broker_id = '"'keys'"' and event = '"'kick'"'
	and reason = '"'account_disabled'"' and username = '"'ops'"'"' \
	"the kick is audited with reason account_disabled"

fg_client_bg ops2 --host 127.0.0.1 --port "${FG_PLAIN_PORT[keys]}" \
	--id ops2-1 --username ops2 --password 'ops2 password' \
	--wait-disconnect 10
fg_client_wait_line ops2 '^ready' 5 ||
	fail "the second service account connected" "$(fg_client_out ops2)"
ops2_hash=$(fg_passwd_hash ops2 'a new password')
fg_expect_kick "changing a connected account's password disconnects it" ops2 \
	fg_psql_admin "update fleetgate.accounts set password_hash = :'h'
		where username = 'ops2';" -v h="$ops2_hash"

# --- SIGHUP -----------------------------------------------------------------

fg_connect_bg hup keys dev-hup dev-hup --hold 30
fg_client_wait_line hup '^connack rc=0' 5 ||
	fail "dev-hup connected" "$(fg_client_out hup)"
kill -HUP "${FG_BROKER_PID[keys]}"
ok 'fg_wait_audit 5 "broker_id = '"'keys'"' and event = '"'reauth'"'
	and outcome = '"'accepted'"' and device_id = '"'dev-hup'"'"' \
	"on SIGHUP a connected device is authenticated again (audited as reauth)"
sleep 0.5
ok 'fg_client_alive hup' "and stays connected"
fg_client_stop hup
fg_broker_stop keys

# --- password checks: a cache and a budget of broker time -------------------
# A hash of 100,000 iterations (fewer under the sanitizers) costs the
# broker thread tens of milliseconds a check. With password_budget_ms 5
# one such check spends the budget of the next seconds: a login with a
# new password is then refused as server_busy, while one with the
# password just checked is answered from the cache, and a connected
# account authenticated again on SIGHUP is not hashed again either.
slow_iterations=$((100000 / FG_SLOW))
slow_hash() {
	python3 -c 'import base64, hashlib, sys
salt = bytes(range(12))
h = hashlib.pbkdf2_hmac("sha512", sys.argv[1].encode(), salt, int(sys.argv[2]))
print("$7$%s$%s$%s" % (sys.argv[2], base64.b64encode(salt).decode(),
                       base64.b64encode(h).decode()))' "$1" "$2"
}
fg_psql_admin "select fleetgate.add_account('slow', :'h', 'dashboard', 'm1')" \
	-v h="$(slow_hash 'slow but sure' "$slow_iterations")" >/dev/null ||
	fail "the account with a slow hash was added"
fg_broker_start slow "plugin_opt_password_budget_ms 5" ||
	fg_bail "broker slow did not start"
fg_wait_log slow "registry loaded from database" 10 ||
	fail "broker slow loaded the registry"
ok 'fg_log_has slow "password_cache_s=3600 password_budget_ms=5"' \
	"the broker logs the password check settings at start"
fg_audit_mark
fg_connect_plain slow slow-1 --username slow --password 'slow but sure'
expect_rc 0 "an account with a hash of $slow_iterations iterations logs in"
fg_connect_plain slow slow-2 --username slow --password 'a guess'
expect_rc 2 "right after, a login with another password is refused: the hashing budget is spent"
ok 'fg_wait_audit 3 "broker_id = '"'slow'"' and outcome = '"'refused'"'
	and reason = '"'server_busy'"' and client_id = '"'slow-2'"'"' \
	"the refusal is audited with reason server_busy"
ok 'fg_wait_log slow "password checks have used their budget of password_budget_ms=5" 3' \
	"the broker warns that password checks are over their budget"
fg_connect_plain slow slow-3 --username slow --password 'slow but sure'
expect_rc 0 "the password just checked is answered from the cache and logs in"
fg_client_bg slow-hup --host 127.0.0.1 --port "${FG_PLAIN_PORT[slow]}" \
	--id slow-4 --username slow --password 'slow but sure' --hold 30
fg_client_wait_line slow-hup '^connack rc=0' 5 ||
	fail "slow-4 connected" "$(fg_client_out slow-hup)"
kill -HUP "${FG_BROKER_PID[slow]}"
ok 'fg_wait_audit 5 "broker_id = '"'slow'"' and event = '"'reauth'"'
	and outcome = '"'accepted'"' and client_id = '"'slow-4'"'"' \
	"on SIGHUP the connected account is authenticated again while the budget is spent"
sleep 0.5
ok 'fg_client_alive slow-hup' "and stays connected"
fg_client_stop slow-hup
fg_broker_stop slow

# --- the loader and the audit writer as threads of the broker -----------------
fg_broker_start threads "plugin_opt_workers thread" ||
	fg_bail "broker threads did not start"
fg_wait_registry threads || true
threads=$(fg_broker_threads threads | sort | tr '\n' ' ')
is "$threads" "fg-audit fg-registry mosquitto " \
	"with workers thread, the loader and the audit writer are threads of the broker"
is "$(fg_worker_pid threads)" "" "and there is no worker process"
fg_connect_bg thr threads dev-thr dev-thr --wait-disconnect 60
fg_client_wait_line thr '^ready$' 5 || true
fg_expect_kick \
	"with workers thread, a revocation disconnects the device within ${FG_KICK_LIMIT_MS} ms" \
	thr fg_revoke dev-thr "workers thread"
fg_connect threads dev-thr dev-thr
expect_rc 2 "and it is refused from then on"
fg_connect threads dev-nokey dev-nokey
expect_rc 0 "another device is still admitted"
fg_broker_stop threads

# --- the registry over TLS (sslmode=verify-full) -----------------------------

pg_owner=$(stat -c %U "$FG_PG_DIR/data")
ssl_dir=$FG_PG_DIR/ssl
mkdir -p "$ssl_dir"
cp "$FG_CERTS/server.crt" "$FG_CERTS/server.key" "$ssl_dir/"
chown -R "$pg_owner" "$ssl_dir"
chmod 700 "$ssl_dir"
chmod 600 "$ssl_dir/server.key"
fg_psql_super "alter system set ssl_cert_file = :'c';
	alter system set ssl_key_file = :'k';
	alter system set ssl = on;" \
	-v c="$ssl_dir/server.crt" -v k="$ssl_dir/server.key" >/dev/null
fg_psql_super "select pg_reload_conf();" >/dev/null
fg_wait_sql "show ssl" on 5 || fail "PostgreSQL turned TLS on"

# By name alone: the plugin resolves localhost itself (getaddrinfo_a) and
# gives libpq the address, keeping the name for verify-full.
FG_BROKER_CONNINFO_EXTRA="host=localhost sslmode=verify-full sslrootcert=$FG_CERTS/ca.crt" \
	fg_broker_start tls || fg_bail "broker tls did not start"
fg_wait_log tls "registry loaded from database" 10 ||
	fail "broker tls loaded the registry over TLS"
fg_connect tls dev-nokey dev-nokey
expect_rc 0 "with the registry read over verify-full TLS (host given by name) a device is admitted"
ok 'fg_wait_sql "select count(*) > 0 and bool_and(s.ssl)
	from pg_stat_activity a join pg_stat_ssl s using (pid)
	where a.application_name like '"'fleetgate-%'"'" t 5' \
	"every database session of the plugin uses TLS"
fg_broker_stop tls

FG_BROKER_CONNINFO_EXTRA="host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=$FG_CERTS/other.crt" \
	fg_broker_start tlsbad || fg_bail "broker tlsbad did not start"
ok 'fg_wait_log tlsbad "fleetgate-registry: database unreachable.*certificate verify failed" 10' \
	"a database certificate from another CA is refused by verify-full"
fg_connect tlsbad dev-nokey dev-nokey
expect_rc 2 "and with no registry nobody is admitted"
fg_broker_stop tlsbad
