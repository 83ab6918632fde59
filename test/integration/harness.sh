#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# harness.sh: the integration harness itself works, without the auth plugin.
#
# Checks what every other suite stands on: the private PostgreSQL cluster
# and its users, the certificates (valid, expired, not yet valid, from an
# impostor CA with the same name), the broker configuration (TLS listener
# that requires a certificate, plain listener), and fg_client's exit codes
# and disconnect timing. A failure here is a harness or machine problem,
# not a plugin one.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

# --- PostgreSQL -----------------------------------------------------------
fg_pg_start || fg_bail "PostgreSQL did not start"
is "$(fg_psql_super "select current_database()")" fleet \
	"the cluster serves database fleet"
like "$(fg_psql_super "select max(version) from fleetgate.schema_version")" \
	'^[0-9]+$' "the migration recorded a schema version"
is "$(fg_psql_super "select string_agg(r.rolname || ':' || g.rolname, ','
	order by r.rolname) from pg_roles r
	join pg_auth_members m on m.member = r.oid
	join pg_roles g on g.oid = m.roleid
	where r.rolname in ('fg_broker', 'fg_admin') and r.rolcanlogin")" \
	"fg_admin:fleetgate_admin,fg_broker:fleetgate_broker" \
	"login users fg_broker and fg_admin are members of their group roles"
ok 'fg_psql_admin "select 1" >/dev/null' "fg_psql_admin connects as fg_admin"
ok '! fg_psql_admin "insert into fleetgate.schema_version values (999)" 2>/dev/null' \
	"fg_psql_admin stops on an SQL error"

# --- certificates ---------------------------------------------------------
fg_ca_make ca
fg_ca_make impostor
fg_server_cert
fg_device_cert dev-1
fg_device_cert dev-1 ca 30 dev-1-b
fg_device_cert_expired dev-old
fg_device_cert_future dev-new
fg_device_cert dev-x impostor

is "$(openssl x509 -noout -subject -in "$FG_CERTS/impostor.crt")" \
	"$(openssl x509 -noout -subject -in "$FG_CERTS/ca.crt")" \
	"the impostor CA has the same subject name as the real CA"
ok '! cmp -s "$FG_CERTS/impostor.crt" "$FG_CERTS/ca.crt"' \
	"the impostor CA is a different certificate"
like "$(openssl x509 -noout -text -in "$FG_CERTS/ca.crt")" \
	'ASN1 OID: prime256v1' "the CA key is EC P-256"
like "$(openssl x509 -noout -ext subjectAltName -in "$FG_CERTS/server.crt")" \
	'DNS:localhost, IP Address:127.0.0.1' \
	"the server certificate names localhost and 127.0.0.1"
is "$(openssl verify -CAfile "$FG_CERTS/ca.crt" "$FG_CERTS/dev-1.crt" 2>&1)" \
	"$FG_CERTS/dev-1.crt: OK" "a device certificate verifies against the CA"
like "$(openssl verify -CAfile "$FG_CERTS/ca.crt" "$FG_CERTS/dev-old.crt" 2>&1)" \
	'certificate has expired' "the expired certificate is expired for X.509"
like "$(openssl verify -CAfile "$FG_CERTS/ca.crt" "$FG_CERTS/dev-new.crt" 2>&1)" \
	'certificate is not yet valid' \
	"the not-yet-valid certificate is not yet valid for X.509"
like "$(openssl verify -CAfile "$FG_CERTS/ca.crt" "$FG_CERTS/dev-x.crt" 2>&1)" \
	'signature failure|unable to get local issuer' \
	"a certificate from the impostor CA does not verify against the real CA"
is "${FG_FP[dev-1]}" \
	"$(openssl x509 -outform der -in "$FG_CERTS/dev-1.crt" | sha256sum | cut -d' ' -f1)" \
	"the stored fingerprint is the SHA-256 of the DER"
ok '[[ ${FG_FP[dev-1]} != "${FG_FP[dev-1-b]}" ]]' \
	"two certificates of one device have different fingerprints"
like "$(stat -c %a "$FG_CERTS/dev-1.key")" '^600$' "private keys are mode 0600"

fg_register_device dev-1 m1 "$FG_CERTS/dev-1.crt"
fg_register_device dev-1 m1 "$FG_CERTS/dev-1-b.crt"
is "$(fg_psql_super "select count(*) from fleetgate.device_certificates
	where device_id = 'dev-1'")" 2 \
	"fg_register_device adds a second certificate to a registered device"
read -r nb na < <(fg_cert_dates "$FG_CERTS/dev-1.crt")
is "$(fg_psql_super "select to_char(not_before at time zone 'UTC',
	'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') || ' ' || to_char(not_after at time zone
	'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') from fleetgate.device_certificates
	where fingerprint = :'fp'" -v fp="${FG_FP[dev-1]}")" "$nb $na" \
	"the registry holds the certificate's validity window"
fg_register_device dev-2 m1 "$FG_CERTS/dev-x.crt" \
	"$(fg_iso_date '-3 days')" "$(fg_iso_date '-1 day')"
is "$(fg_psql_super "select not_after < now() from fleetgate.device_certificates
	where fingerprint = :'fp'" -v fp="${FG_FP[dev-x]}")" t \
	"fg_register_device takes an explicit validity window"
fg_add_account dash secret
like "$(fg_psql_super "select password_hash from fleetgate.accounts
	where username = 'dash'")" '^\$7\$' \
	"fg_add_account stores a mosquitto_passwd hash"

# --- broker without the plugin --------------------------------------------
FG_BROKER_PLUGIN=0 FG_BROKER_ANON=1 fg_broker_start bare ||
	fg_bail "broker without plugin did not start"
ok '[[ -n ${bare_TLS_PORT:-} && -n ${bare_PLAIN_PORT:-} && -n ${bare_PID:-} ]]' \
	"fg_broker_start exports NAME_TLS_PORT, NAME_PLAIN_PORT and NAME_PID"
fg_connect bare dev-1
is "$FG_RC/$(fg_field "$FG_OUT" rc)" 0/0 \
	"a valid certificate completes the TLS handshake and gets CONNACK 0"
fg_connect bare dev-1 dev-1 --v311
is "$FG_RC" 0 "fg_client speaks MQTT 3.1.1 too"
fg_connect bare dev-old
is "$FG_RC" 3 "an X.509-expired certificate fails the TLS handshake"
fg_connect bare dev-new
is "$FG_RC" 3 "an X.509-not-yet-valid certificate fails the TLS handshake"
fg_connect bare dev-x
is "$FG_RC" 3 "a certificate from the impostor CA fails the TLS handshake"
fg_client_run --host 127.0.0.1 --port "${FG_TLS_PORT[bare]}" \
	--cafile "$FG_CERTS/ca.crt" --id dev-1
is "$FG_RC" 3 "the TLS listener requires a client certificate"
fg_connect_plain bare anyone
is "$FG_RC" 0 "the plain listener takes clients without TLS"
ok 'mosquitto_pub -h 127.0.0.1 -p "${FG_TLS_PORT[bare]}" --cafile "$FG_CERTS/ca.crt" \
	--cert "$FG_CERTS/dev-1.crt" --key "$FG_CERTS/dev-1.key" -i dev-1 \
	-t fg/test -m hello -q 1' \
	"mosquitto_pub connects with the same certificate files"
fg_client_run --raw --id-hex "$(printf 'dev-1' | od -An -tx1 | tr -d ' \n')" \
	--host 127.0.0.1 --port "${FG_TLS_PORT[bare]}" --cafile "$FG_CERTS/ca.crt" \
	--cert "$FG_CERTS/dev-1.crt" --key "$FG_CERTS/dev-1.key"
is "$FG_RC" 0 "fg_client --raw sends a well-formed CONNECT over TLS"
fg_client_run --raw --id-hex 6465760131 --v311 \
	--host 127.0.0.1 --port "${FG_TLS_PORT[bare]}" --cafile "$FG_CERTS/ca.crt" \
	--cert "$FG_CERTS/dev-1.crt" --key "$FG_CERTS/dev-1.key"
is "$FG_RC" 3 "the broker drops a CONNECT whose client id holds a control character"

# Disconnect timing: the broker going away must be seen at once.
fg_connect_bg held bare dev-1 dev-1 --hold 20
fg_connect_bg waiter bare dev-1-b dev-1-b --wait-disconnect 20
fg_client_wait_line held '^connack rc=0' 5 || true
fg_client_wait_line waiter '^ready$' 5 || true
kill -USR1 "${FG_CLIENT_PID[waiter]}"
t0=$(fg_now_ms)
fg_broker_stop bare
fg_client_wait held 5
is "$FG_RC" 4 "fg_client --hold exits 4 when the broker disconnects it"
like "$FG_OUT" 'disconnected after_ms=[0-9]+ ' "and prints when it happened"
fg_client_wait waiter 5
is "$FG_RC" 0 "fg_client --wait-disconnect exits 0 on a disconnect"
since=$(fg_field "$FG_OUT" ms_since_signal)
epoch=$(fg_field "$FG_OUT" epoch_ms)
like "$since" '^[0-9]+$' "it measures from SIGUSR1 ($since ms)"
ok '(( epoch >= t0 - 5 && epoch - t0 < 3000 ))' \
	"its epoch_ms is on the script's clock ($((epoch - t0)) ms after the stop began)"

FG_BROKER_PLUGIN=0 fg_broker_start closed ||
	fg_bail "broker without plugin did not start"
fg_connect closed dev-1
is "$FG_RC/$(fg_field "$FG_OUT" rc)" 2/135 \
	"without the plugin and without anonymous access a device is refused (v5 0x87)"
fg_connect closed dev-1 dev-1 --v311
is "$FG_RC/$(fg_field "$FG_OUT" rc)" 2/5 "... and 3.1.1 gets CONNACK 5"
fg_connect_bg short closed dev-1 dev-1 --wait-disconnect 1
fg_client_wait short 5
is "$FG_RC" 2 "a refused client with --wait-disconnect exits 2"
fg_broker_stop closed

# --- PostgreSQL restart keeps port and data -------------------------------
port=$PGPORT
fg_pg_restart || fail "fg_pg_restart"
is "$PGPORT/$(fg_psql_super "select count(*) from fleetgate.devices")" \
	"$port/2" "fg_pg_restart keeps the port and the data"
fg_pg_stop
ok '! fg_psql_super "select 1" 2>/dev/null' "fg_pg_stop stops the server"
fg_pg_resume || fail "fg_pg_resume"
is "$(fg_psql_super "select count(*) from fleetgate.devices")" 2 \
	"fg_pg_resume starts it again on the same port"
# A script that ends while the cluster is frozen must not leave it behind.
read -r pm <"$FG_PG_DIR/data/postmaster.pid"
fg_pg_freeze
if fg_pg_stop; then
	pass "fg_pg_stop stops a frozen cluster"
else
	fail "fg_pg_stop stops a frozen cluster"
fi
# (A zombie is gone: it waits only for this shell to collect it.)
running() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]
}
ok '! running "$pm"' "... and its postmaster is gone"
fg_pg_resume || fail "fg_pg_resume after a frozen stop"
