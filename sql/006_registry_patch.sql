-- 006_registry_patch.sql: a notification names the row's old key too when
-- an update changed it.
--
-- Applied by sql/migrate.sh after 005, as the same owner, in one
-- transaction.
--
-- From this version on, brokers patch their registry with the rows the
-- notifications on fleetgate_registry name, instead of reading every row
-- again after each change. A row whose key an update changed (a device,
-- certificate or account renamed) must leave the registry under its old
-- key, which the payload so far did not carry: it now holds "old_id"
-- beside "id" when the two differ. Only the trigger function changes.

begin;

call fleetgate.assert_migration(6);

create or replace function fleetgate.audit_registry_change()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    op         text := lower(tg_op);
    old_row    jsonb;
    new_row    jsonb;
    row_value  jsonb;
    key_name   text;
    changed    jsonb;
    old_key    text;
begin
    if tg_op <> 'INSERT' then
        old_row := to_jsonb(old);
    end if;
    if tg_op <> 'DELETE' then
        new_row := to_jsonb(new);
    end if;
    row_value := coalesce(new_row, old_row);
    key_name := case tg_table_name
                    when 'device_certificates' then 'fingerprint'
                    when 'accounts' then 'username'
                    else 'id'
                end;
    if tg_op = 'UPDATE'
       and (old_row ->> key_name) is distinct from (new_row ->> key_name) then
        old_key := old_row ->> key_name;
    end if;

    -- Names of the columns that changed, computed before redaction so that
    -- a new password shows up as a change even though both sides read '***'.
    if tg_op = 'UPDATE' then
        select coalesce(jsonb_agg(n.key order by n.key), '[]'::jsonb)
          into changed
          from jsonb_each(new_row) as n
         where n.value is distinct from old_row -> n.key;
    end if;

    insert into fleetgate.audit_events
        (source, event, actor, reason, device_id, fingerprint, username,
         old_value, new_value, detail)
    values (
        'admin',
        tg_table_name || '_' || op,
        coalesce(nullif(current_setting('fleetgate.actor', true), ''),
                 session_user::text),
        nullif(current_setting('fleetgate.reason', true), ''),
        case tg_table_name
            when 'devices' then row_value ->> 'id'
            when 'device_certificates' then row_value ->> 'device_id'
        end,
        case when tg_table_name = 'device_certificates'
             then row_value ->> 'fingerprint' end,
        case when tg_table_name = 'accounts'
             then row_value ->> 'username' end,
        fleetgate.redact_secrets(old_row),
        fleetgate.redact_secrets(new_row),
        jsonb_strip_nulls(jsonb_build_object(
            'session_user', session_user::text,
            'changed', changed)));

    -- Brokers LISTEN here and patch their registry with the row named;
    -- old_id (only when an update changed the key) names the row to drop.
    perform pg_notify('fleetgate_registry',
                      jsonb_strip_nulls(
                          jsonb_build_object('table', tg_table_name,
                                             'op', op,
                                             'id', row_value ->> key_name,
                                             'old_id', old_key))::text);
    return null;
end
$$;

insert into fleetgate.schema_version (version) values (6);

commit;
