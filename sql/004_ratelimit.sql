-- 004_ratelimit.sql: per-device message and byte budgets, read by the
-- fleetgate ratelimit plugin.
--
-- Applied by sql/migrate.sh after 003, as the same owner. The whole file is
-- one transaction: it either adds everything or leaves the database at
-- version 3.
--
-- A budget is a number of messages and a number of payload bytes a device
-- may publish per window (window_s seconds, windows aligned to the epoch),
-- plus a burst: extra messages a device may send in a window when it left
-- at least that many unused in the window before. A row may be for one
-- device, for every device of a municipality, or global; for each field the
-- most specific row that gives it (not NULL) wins, so a device row may
-- change only the byte budget and inherit the rest. Fields no row gives
-- take the plugin's built-in defaults.
--
-- Limits are registry data like devices and rules: every change is audited
-- (source 'admin') and announced on the channel fleetgate_registry, so that
-- every broker applies it within a second.

begin;

-- Refuses to run unless the database is at version 3, and serialises
-- concurrent migrate.sh runs.
call fleetgate.assert_migration(4);

create table fleetgate.rate_limits (
    id                   bigserial primary key,
    scope_kind           text not null
                         constraint rate_limits_scope_kind_known
                         check (scope_kind in ('global', 'municipality',
                                               'device')),
    scope                text null,
    messages_per_window  int null
                         constraint rate_limits_messages_positive
                         check (messages_per_window > 0),
    bytes_per_window     bigint null
                         constraint rate_limits_bytes_positive
                         check (bytes_per_window > 0),
    window_s             int null
                         constraint rate_limits_window_range
                         check (window_s between 1 and 86400),
    burst                int null
                         constraint rate_limits_burst_not_negative
                         check (burst >= 0),
    comment              text null,
    created_at           timestamptz not null default now(),
    -- The global row names nobody; the others name their device or
    -- municipality, in the formats 001 enforces for those ids. Not a
    -- foreign key: a limit may be set before the device is registered.
    constraint rate_limits_scope_null_iff_global
        check ((scope is null) = (scope_kind = 'global')),
    constraint rate_limits_scope_format
        check (case scope_kind
                   when 'device' then scope ~ '^[A-Za-z0-9._:-]{1,64}$'
                   when 'municipality'
                       then scope ~ '^[A-Za-z0-9._-]{1,64}$'
                   else true
               end)
);

-- One row per scope: two rows for one device would make the answer depend
-- on the order the broker reads them in.
create unique index rate_limits_scope_idx
    on fleetgate.rate_limits (scope_kind, coalesce(scope, ''));

create trigger audit_change
    after insert or update or delete on fleetgate.rate_limits
    for each row execute function fleetgate.audit_registry_change();

-- Admin functions ------------------------------------------------------------
--
-- Same conventions as in 001: SECURITY INVOKER, input validated for clear
-- errors, invalid_parameter_value for bad input and no_data_found for an
-- unknown object, echoed values quoted and cut to 120 characters.

-- Create or replace the row of one scope. NULL fields inherit.
create function fleetgate.set_rate_limit(scope_kind text, scope text,
                                         messages_per_window int,
                                         bytes_per_window bigint,
                                         window_s int, burst int,
                                         comment text default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
-- ON CONFLICT names the table's columns, which the parameters shadow.
#variable_conflict use_column
begin
    if set_rate_limit.scope_kind is null
       or set_rate_limit.scope_kind not in ('global', 'municipality',
                                            'device') then
        raise exception 'unknown scope kind %',
                        coalesce(quote_literal(left(set_rate_limit.scope_kind,
                                                    120)), 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = 'global, municipality or device';
    end if;
    if (set_rate_limit.scope is null) <> (set_rate_limit.scope_kind = 'global')
    then
        raise exception 'scope must be NULL exactly for the global limit'
            using errcode = 'invalid_parameter_value';
    end if;
    if set_rate_limit.messages_per_window <= 0
       or set_rate_limit.bytes_per_window <= 0
       or set_rate_limit.burst < 0
       or set_rate_limit.window_s not between 1 and 86400 then
        raise exception 'limits must be positive (burst may be 0) and the '
                        'window 1 to 86400 seconds'
            using errcode = 'invalid_parameter_value',
                  hint = 'NULL inherits the field from the wider scope.';
    end if;
    insert into fleetgate.rate_limits
        (scope_kind, scope, messages_per_window, bytes_per_window, window_s,
         burst, comment)
    values (set_rate_limit.scope_kind, set_rate_limit.scope,
            set_rate_limit.messages_per_window,
            set_rate_limit.bytes_per_window, set_rate_limit.window_s,
            set_rate_limit.burst, set_rate_limit.comment)
    on conflict (scope_kind, coalesce(scope, '')) do update
        set messages_per_window = excluded.messages_per_window,
            bytes_per_window = excluded.bytes_per_window,
            window_s = excluded.window_s,
            burst = excluded.burst,
            comment = excluded.comment;
end
$$;

create function fleetgate.clear_rate_limit(scope_kind text, scope text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from fleetgate.rate_limits r
     where r.scope_kind = clear_rate_limit.scope_kind
       and r.scope is not distinct from clear_rate_limit.scope;
    if not found then
        raise exception 'no rate limit for % %',
                        coalesce(quote_literal(left(clear_rate_limit.scope_kind,
                                                    120)), 'NULL'),
                        coalesce(quote_literal(left(clear_rate_limit.scope,
                                                    120)), 'NULL')
            using errcode = 'no_data_found';
    end if;
end
$$;

-- A global default, so that every device has a budget the operator can see
-- and change: one reading a second on average, bursts of 60.
insert into fleetgate.rate_limits
    (scope_kind, scope, messages_per_window, bytes_per_window, window_s,
     burst, comment)
values ('global', null, 60, 1048576, 60, 60, 'default of migration 004');

-- Privileges -----------------------------------------------------------------

revoke all on fleetgate.rate_limits from public;
revoke all on sequence fleetgate.rate_limits_id_seq from public;
revoke all on function
    fleetgate.set_rate_limit(text, text, int, bigint, int, int, text),
    fleetgate.clear_rate_limit(text, text)
    from public;

grant select on fleetgate.rate_limits to fleetgate_broker;

-- No TRUNCATE: it fires no row trigger (no audit row, no reload).
grant select, insert, update, delete on fleetgate.rate_limits
    to fleetgate_admin;
grant usage, select on sequence fleetgate.rate_limits_id_seq
    to fleetgate_admin;
grant execute on function
    fleetgate.set_rate_limit(text, text, int, bigint, int, int, text),
    fleetgate.clear_rate_limit(text, text)
    to fleetgate_admin;

insert into fleetgate.schema_version (version) values (4);

commit;
