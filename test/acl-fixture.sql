-- acl-fixture.sql: the fleet and rule set of the acl decision table
-- (test/unit/acl_cases.h, set FLEET; cases in test/acl-cases.tsv).
--
-- Run with psql as an administrator on a database at schema version 2
-- whose registry is otherwise empty, giving the password hash every
-- account gets (a mosquitto_passwd $6$ or $7$ hash):
--
--   psql -v ON_ERROR_STOP=1 -v pwhash='$7$101$...' -f test/acl-fixture.sql
--
-- The rule ids named in the comments are those a fresh database assigns;
-- the table's cases do not depend on them. The broker runs with default
-- acl options: isolation true, municipality_level 1. Accounts connect with
-- their username as client id.

begin;

select fleetgate.add_municipality('north', 'North');
select fleetgate.add_municipality('south', 'South');

select fleetgate.register_device('n-pump-1', 'north');
select fleetgate.register_device('n-pump-2', 'north');
select fleetgate.register_device('s-pump-1', 'south');
select fleetgate.register_device('mover', 'north');

select fleetgate.add_account('dash-n', :'pwhash', 'dashboard', 'north', false);
select fleetgate.add_account('dash-s', :'pwhash', 'dashboard', 'south', false);
select fleetgate.add_account('auditor', :'pwhash', 'auditor', 'south', false);
select fleetgate.add_account('auditx', :'pwhash', 'auditor', 'south', true);
select fleetgate.add_account('ops', :'pwhash', 'operator', null, true);
select fleetgate.add_account('kiosk', :'pwhash', 'kiosk', null, false);
select fleetgate.add_account('sysmon', :'pwhash', 'sysmon', 'north', false);
select fleetgate.add_account('alice', :'pwhash', 'user', 'north', false);
select fleetgate.add_account('drifter', :'pwhash', 'user', null, true);
-- Hostile names the schema admits. The auth plugin refuses the first three
-- at connect; the acl plugin gives them no rules.
select fleetgate.add_account('evil+', :'pwhash', 'user', 'north', false);
select fleetgate.add_account('evil#', :'pwhash', 'user', 'north', false);
select fleetgate.add_account('evil/x', :'pwhash', 'user', 'north', false);
select fleetgate.add_account('%m', :'pwhash', 'user', 'north', false);
select fleetgate.add_account('%u', :'pwhash', 'user', 'north', false);
select fleetgate.add_account('x''or''1''=''1', :'pwhash', 'user', 'north',
                             false);

-- 1-5: every device
select fleetgate.add_acl_rule('all_devices', null, 'water/%m/%c/#',
                              'publish', 'allow', 0,
                              'devices publish under their own topic');
select fleetgate.add_acl_rule('all_devices', null, 'water/%m/%c/cmd/#',
                              'publish', 'deny', 10,
                              'devices do not command themselves');
select fleetgate.add_acl_rule('all_devices', null, 'water/%m/%c/cmd/#',
                              'receive', 'allow', 0,
                              'devices receive their commands');
select fleetgate.add_acl_rule('all_devices', null, 'health/%m/dev-%c',
                              'publish', 'allow', 0,
                              'placeholder inside a level');
select fleetgate.add_acl_rule('all_devices', null, 'dev/%m/%u/inbox',
                              'receive', 'allow', 0,
                              '%u of a device is its id');
-- 6-7: devices of one municipality
select fleetgate.add_acl_rule('municipality', 'north', 'water/%m/broadcast/#',
                              'receive', 'allow', 0, 'north broadcasts');
select fleetgate.add_acl_rule('municipality', 'south',
                              'water/south/+/readings', 'receive', 'allow', 0,
                              'south devices see each other');
-- 8-11: one device
select fleetgate.add_acl_rule('device', 'n-pump-1',
                              'water/north/n-pump-1/debug/#', 'publish',
                              'deny', 20, 'debug output off');
select fleetgate.add_acl_rule('device', 'n-pump-1', 'status', 'publish',
                              'allow', 0, 'one-level topic');
select fleetgate.add_acl_rule('device', 'n-pump-2',
                              'water/north/n-pump-1/readings', 'receive',
                              'allow', 0, 'pump 2 watches pump 1');
select fleetgate.add_acl_rule('device', 's-pump-1',
                              'water/north/n-pump-1/readings', 'receive',
                              'allow', 0, 'crosses municipalities: isolated');
-- 12-17: dashboards
select fleetgate.add_acl_rule('role', 'dashboard', 'water/%m/#', 'receive',
                              'allow', 0, 'own municipality');
select fleetgate.add_acl_rule('role', 'dashboard', 'water/%m/+/secret/#',
                              'receive', 'deny', 5, 'no secrets');
select fleetgate.add_acl_rule('role', 'dashboard', 'water/%m/+/raw/#',
                              'receive', 'deny', 5, 'no raw data');
select fleetgate.add_acl_rule('role', 'dashboard', 'water/%m/+/cmd/#',
                              'publish', 'allow', 0, 'dashboards command');
select fleetgate.add_acl_rule('role', 'dashboard', 'water/%m/+/debug/#',
                              'subscribe', 'deny', 0,
                              'no debug subscriptions');
select fleetgate.add_acl_rule('role', 'dashboard', 'alerts/%m/#',
                              'subscribe', 'allow', 0,
                              'grants nothing without a receive rule');
-- 18-19: one dashboard account
select fleetgate.add_acl_rule('account', 'dash-n',
                              'water/north/n-pump-2/alarms', 'receive',
                              'deny', 0, 'deny wins at equal priority');
select fleetgate.add_acl_rule('account', 'dash-n',
                              'water/north/n-pump-1/raw/#', 'receive',
                              'allow', 10, 'beats the role deny at 5');
-- 20-21: auditors, allowed north by rule although they are south
select fleetgate.add_acl_rule('role', 'auditor', 'water/north/#', 'receive',
                              'allow', 0, 'isolated unless cross');
select fleetgate.add_acl_rule('role', 'auditor', 'water/south/#', 'receive',
                              'allow', 0, null);
-- 22-25: operators
select fleetgate.add_acl_rule('role', 'operator', 'water/#', 'receive',
                              'allow', 0, null);
select fleetgate.add_acl_rule('role', 'operator', 'water/+/+/cmd/#',
                              'publish', 'allow', 0, null);
select fleetgate.add_acl_rule('account', 'ops', 'water/+/+/cmd/reboot',
                              'publish', 'deny', 10, 'no remote reboots');
select fleetgate.add_acl_rule('account', 'ops', '#', 'receive', 'allow', 0,
                              'does not grant $SYS');
-- 26-28: broker monitoring, by name
select fleetgate.add_acl_rule('role', 'sysmon', '$SYS/#', 'receive', 'allow',
                              0, null);
select fleetgate.add_acl_rule('role', 'sysmon', '$SYS/broker/log/#',
                              'receive', 'deny', 5, null);
select fleetgate.add_acl_rule('role', 'sysmon', '$CONTROL/fleetgate/#',
                              'receive', 'allow', 0, null);
-- 29-30: kiosks, of no municipality
select fleetgate.add_acl_rule('role', 'kiosk', '#', 'receive', 'allow', 0,
                              'one-level topics only, by isolation');
select fleetgate.add_acl_rule('role', 'kiosk', 'status', 'publish', 'allow',
                              0, null);
-- 31-32: users' own space
select fleetgate.add_acl_rule('role', 'user', 'users/%m/%u/#', 'publish',
                              'allow', 0, null);
select fleetgate.add_acl_rule('role', 'user', 'users/%m/%u/#', 'receive',
                              'allow', 0, null);

commit;
