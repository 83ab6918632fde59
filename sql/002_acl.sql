-- 002_acl.sql: topic access rules (who may publish, subscribe or receive on
-- which topics), read by the fleetgate ACL plugin.
--
-- Applied by sql/migrate.sh after 001_registry.sql, as the same owner. The
-- whole file is one transaction: it either adds everything or leaves the
-- database at version 1.
--
-- The rules are registry data like devices and accounts: every change is
-- audited (source 'admin') and announced on the channel fleetgate_registry,
-- so that every broker reloads within a second. What the rules mean (order,
-- deny wins at equal priority, the %c %u %m placeholders, the municipality
-- backstop) is the plugin's business and is documented there; this file
-- only makes sure that what is stored can be understood.

begin;

-- Refuses to run unless the database is at version 1, and serialises
-- concurrent migrate.sh runs.
call fleetgate.assert_migration(2);

-- Input checks -------------------------------------------------------------

-- Says what is wrong with an MQTT topic filter, or returns NULL when it is
-- acceptable. One definition serves the CHECK constraint and add_acl_rule,
-- so that a direct INSERT and the function refuse the same patterns, and the
-- function can still say why.
--
-- The MQTT rules checked: not empty, at most 65535 bytes (the length prefix
-- of an MQTT string), '#' only as a whole level and only as the last one,
-- '+' only as a whole level. NUL, which MQTT forbids too, needs no check:
-- PostgreSQL text cannot hold it. Placeholders (%c %u %m) are ordinary
-- characters here; the plugin substitutes them.
create function fleetgate.topic_filter_problem(filter text)
returns text
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    levels  text[];
    n       int;
    lvl     text;
begin
    if coalesce(filter, '') = '' then
        return 'the pattern is empty';
    end if;
    if octet_length(filter) > 65535 then
        return 'the pattern is longer than 65535 bytes, the MQTT limit';
    end if;

    levels := string_to_array(filter, '/');
    n := cardinality(levels);
    for i in 1 .. n loop
        lvl := levels[i];
        if strpos(lvl, '#') > 0 and lvl <> '#' then
            return '''#'' must be a level of its own';
        end if;
        if lvl = '#' and i < n then
            return '''#'' must be the last level';
        end if;
        if strpos(lvl, '+') > 0 and lvl <> '+' then
            return '''+'' must be a level of its own';
        end if;
    end loop;
    return null;
end
$$;

-- Rules ----------------------------------------------------------------------

-- The subject is plain text, not a foreign key: a rule may be written before
-- its device or account exists (provisioning scripts set up the rules for a
-- batch first), and it outlives a decommissioned device harmlessly. Its
-- format is still checked against the formats 001 enforces for the ids it
-- names, because a subject that no identity can ever have is always a typo.
-- Account subjects additionally exclude '+', '#' and '/': the plugin gives
-- identities containing them no rules at all, so such a rule would be dead.
create table fleetgate.acl_rules (
    id            bigserial primary key,
    subject_kind  text not null
                  constraint acl_rules_subject_kind_known
                  check (subject_kind in ('device', 'account', 'role',
                                          'municipality', 'all_devices')),
    subject       text null,
    pattern       text not null
                  constraint acl_rules_pattern_format
                  check (fleetgate.topic_filter_problem(pattern) is null),
    access        text not null
                  constraint acl_rules_access_known
                  check (access in ('publish', 'subscribe', 'receive')),
    effect        text not null
                  constraint acl_rules_effect_known
                  check (effect in ('allow', 'deny')),
    priority      int not null default 0,
    comment       text null,
    created_at    timestamptz not null default now(),
    -- A rule for all devices has nobody to name; every other kind must name
    -- someone, or the plugin could not tell whom it is for.
    constraint acl_rules_subject_null_iff_all_devices
        check ((subject is null) = (subject_kind = 'all_devices')),
    constraint acl_rules_subject_format
        check (case subject_kind
                   when 'device' then subject ~ '^[A-Za-z0-9._:-]{1,64}$'
                   when 'account'
                       then subject ~ '^[^[:cntrl:][:space:]+#/]{1,64}$'
                   when 'role' then subject ~ '^[A-Za-z0-9._-]{1,64}$'
                   when 'municipality'
                       then subject ~ '^[A-Za-z0-9._-]{1,64}$'
                   else true
               end)
);

-- The plugin loads all rules at once, but operators look rules up by whom
-- they concern.
create index acl_rules_subject_idx
    on fleetgate.acl_rules (subject_kind, subject);

-- Audited and announced like every registry table; audit_registry_change
-- keys rows that are neither certificates nor accounts by their id column,
-- which is this table's primary key.
create trigger audit_change
    after insert or update or delete on fleetgate.acl_rules
    for each row execute function fleetgate.audit_registry_change();

-- Admin functions ------------------------------------------------------------
--
-- Same conventions as in 001: SECURITY INVOKER, input validated for clear
-- errors, invalid_parameter_value for bad input and no_data_found for an
-- unknown object, echoed values quoted and cut to 120 characters.

-- Returns the id of the new rule, which remove_acl_rule takes.
create function fleetgate.add_acl_rule(subject_kind text, subject text,
                                       pattern text, access text,
                                       effect text, priority int default 0,
                                       comment text default null)
returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    -- Computed here rather than in the IF below: PL/pgSQL would take the
    -- first THEN of a CASE as the end of the IF condition.
    subject_ok  boolean := case add_acl_rule.subject_kind
                               when 'device' then add_acl_rule.subject
                                   ~ '^[A-Za-z0-9._:-]{1,64}$'
                               when 'account' then add_acl_rule.subject
                                   ~ '^[^[:cntrl:][:space:]+#/]{1,64}$'
                               else add_acl_rule.subject
                                   ~ '^[A-Za-z0-9._-]{1,64}$'
                           end;
    problem     text;
    new_id      bigint;
begin
    if add_acl_rule.subject_kind is null
       or add_acl_rule.subject_kind not in ('device', 'account', 'role',
                                            'municipality', 'all_devices') then
        raise exception 'unknown subject kind %',
                        coalesce(quote_literal(left(add_acl_rule.subject_kind,
                                                    120)), 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = 'device, account, role, municipality or all_devices';
    end if;

    if add_acl_rule.subject_kind = 'all_devices' then
        if add_acl_rule.subject is not null then
            raise exception 'a rule for all_devices takes no subject (got %)',
                            quote_literal(left(add_acl_rule.subject, 120))
                using errcode = 'invalid_parameter_value',
                      hint = 'Pass NULL as the subject.';
        end if;
    elsif add_acl_rule.subject is null then
        raise exception 'a rule for subject kind % needs a subject',
                        add_acl_rule.subject_kind
            using errcode = 'invalid_parameter_value',
                  hint = 'A device id, an account username, a role name or '
                         'a municipality id, matching the kind.';
    elsif not subject_ok then
        raise exception 'invalid % subject %', add_acl_rule.subject_kind,
                        quote_literal(left(add_acl_rule.subject, 120))
            using errcode = 'invalid_parameter_value',
                  hint = case add_acl_rule.subject_kind
                             when 'device'
                                 then '1 to 64 characters from '
                                      'A-Z a-z 0-9 . _ : -'
                             when 'account'
                                 then '1 to 64 characters, no blanks, control '
                                      'characters, ''+'', ''#'' or ''/'''
                             else '1 to 64 characters from A-Z a-z 0-9 . _ -'
                         end;
    end if;

    problem := fleetgate.topic_filter_problem(add_acl_rule.pattern);
    if problem is not null then
        raise exception 'invalid topic pattern %: %',
                        coalesce(quote_literal(left(add_acl_rule.pattern, 120)),
                                 'NULL'),
                        problem
            using errcode = 'invalid_parameter_value',
                  hint = 'MQTT topic filter syntax: levels separated by ''/'', '
                         '''+'' alone in a level, ''#'' alone in the last '
                         'level; %c, %u and %m stand for the client id, the '
                         'username and the client''s municipality.';
    end if;

    if add_acl_rule.access is null
       or add_acl_rule.access not in ('publish', 'subscribe', 'receive') then
        raise exception 'unknown access %',
                        coalesce(quote_literal(left(add_acl_rule.access, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = 'publish, subscribe or receive';
    end if;
    if add_acl_rule.effect is null
       or add_acl_rule.effect not in ('allow', 'deny') then
        raise exception 'unknown effect %',
                        coalesce(quote_literal(left(add_acl_rule.effect, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = 'allow or deny';
    end if;
    -- An explicit NULL would otherwise surface as a bare NOT NULL violation.
    if add_acl_rule.priority is null then
        raise exception 'priority must be an integer, not NULL'
            using errcode = 'invalid_parameter_value',
                  hint = 'Leave it out for the default, 0.';
    end if;

    insert into fleetgate.acl_rules
        (subject_kind, subject, pattern, access, effect, priority, comment)
    values (add_acl_rule.subject_kind, add_acl_rule.subject,
            add_acl_rule.pattern, add_acl_rule.access, add_acl_rule.effect,
            add_acl_rule.priority, add_acl_rule.comment)
    returning acl_rules.id into new_id;
    return new_id;
end
$$;

create function fleetgate.remove_acl_rule(id bigint)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if remove_acl_rule.id is null then
        raise exception 'an acl rule id is required'
            using errcode = 'invalid_parameter_value';
    end if;
    delete from fleetgate.acl_rules r where r.id = remove_acl_rule.id;
    if not found then
        raise exception 'unknown acl rule %', remove_acl_rule.id
            using errcode = 'no_data_found';
    end if;
end
$$;

-- Privileges -----------------------------------------------------------------
--
-- New functions are executable by PUBLIC by default; take that back first.

revoke all on fleetgate.acl_rules from public;
revoke all on sequence fleetgate.acl_rules_id_seq from public;
revoke all on function
    fleetgate.topic_filter_problem(text),
    fleetgate.add_acl_rule(text, text, text, text, text, int, text),
    fleetgate.remove_acl_rule(bigint)
    from public;

-- The broker only reads the rules.
grant select on fleetgate.acl_rules to fleetgate_broker;

-- Administrators change the rules directly or through the functions, both
-- audited. No TRUNCATE, as for the other registry tables: it fires no row
-- trigger, so it would empty the rules without an audit row or a reload.
-- The CHECK on pattern calls topic_filter_problem, hence EXECUTE on it.
grant select, insert, update, delete on fleetgate.acl_rules
    to fleetgate_admin;
grant usage, select on sequence fleetgate.acl_rules_id_seq
    to fleetgate_admin;
grant execute on function
    fleetgate.topic_filter_problem(text),
    fleetgate.add_acl_rule(text, text, text, text, text, int, text),
    fleetgate.remove_acl_rule(bigint)
    to fleetgate_admin;

insert into fleetgate.schema_version (version) values (2);

commit;
