#!/usr/bin/env python3
"""Registry churn for auth.sh: random administrator changes, and a check
that a broker's registry snapshot holds what the database holds.

  registry_churn.py sql SEED COUNT HASH
      prints COUNT SQL statements (one transaction each under psql's
      autocommit): devices, certificates and accounts added, changed,
      renamed and removed, always valid against the schema; a pause of
      30 ms after every tenth, so that the changes come in many bursts,
      but for the last 100, which come as fast as psql sends them (some
      then arrive while the loader is reading the rows of earlier ones).
  registry_churn.py compare SNAPSHOT DUMP
      compares the devices, certificates and accounts of a broker's
      snapshot file with DUMP (the database's rows, written by the query
      in auth.sh); prints the differences and exits 1 when there are any.
"""
import json
import random
import sys

MUNIS = ["m1", "m-churn"]


def q(s):
    return "'" + s.replace("'", "''") + "'"


def churn(seed, count, pw_hash):
    rnd = random.Random(seed)
    devices = {}  # id -> list of fingerprints
    accounts = []
    n = 0
    out = []

    def new_fp():
        return "%064x" % rnd.getrandbits(256)

    for i in range(count):
        if i % 10 == 9 and i < count - 100:
            out.append("select pg_sleep(0.03);")
        op = rnd.random()
        if op < 0.2 or not devices:
            n += 1
            dev = "churn-%d" % n
            devices[dev] = []
            out.append("insert into fleetgate.devices (id, municipality_id, "
                       "status) values (%s, %s, 'active');"
                       % (q(dev), q(rnd.choice(MUNIS))))
        elif op < 0.4:
            dev = rnd.choice(sorted(devices))
            fp = new_fp()
            devices[dev].append(fp)
            out.append("insert into fleetgate.device_certificates "
                       "(fingerprint, device_id, not_before, not_after) "
                       "values (%s, %s, now() - interval '1 day', "
                       "now() + interval '1 year');" % (q(fp), q(dev)))
        elif op < 0.5:
            dev = rnd.choice(sorted(devices))
            out.append("update fleetgate.devices set status = %s, "
                       "municipality_id = %s where id = %s;"
                       % (q(rnd.choice(["active", "suspended",
                                        "decommissioned"])),
                          q(rnd.choice(MUNIS)), q(dev)))
        elif op < 0.6:
            certs = [(d, f) for d in sorted(devices) for f in devices[d]]
            if not certs:
                continue
            dev, fp = rnd.choice(certs)
            if rnd.random() < 0.5:
                out.append("update fleetgate.device_certificates set "
                           "revoked_at = now(), revocation_reason = 'churn' "
                           "where fingerprint = %s;" % q(fp))
            else:
                devices[dev].remove(fp)
                out.append("delete from fleetgate.device_certificates "
                           "where fingerprint = %s;" % q(fp))
        elif op < 0.7:
            dev = rnd.choice(sorted(devices))
            if devices[dev]:
                # Device and certificates in one statement, one commit.
                out.append("with c as (delete from "
                           "fleetgate.device_certificates where device_id "
                           "= %s) delete from fleetgate.devices where id "
                           "= %s;" % (q(dev), q(dev)))
            elif rnd.random() < 0.5:
                n += 1
                new = "churn-%d" % n
                devices[new] = []
                out.append("update fleetgate.devices set id = %s "
                           "where id = %s;" % (q(new), q(dev)))
            else:
                out.append("delete from fleetgate.devices where id = %s;"
                           % q(dev))
            del devices[dev]
        elif op < 0.8 or not accounts:
            n += 1
            user = "churn-user-%d" % n
            accounts.append(user)
            out.append("insert into fleetgate.accounts (username, "
                       "password_hash, role, municipality_id) values "
                       "(%s, %s, 'dashboard', %s);"
                       % (q(user), q(pw_hash), q(rnd.choice(MUNIS))))
        else:
            user = rnd.choice(accounts)
            r = rnd.random()
            if r < 0.3:
                n += 1
                new = "churn-user-%d" % n
                accounts[accounts.index(user)] = new
                out.append("update fleetgate.accounts set username = %s "
                           "where username = %s;" % (q(new), q(user)))
            elif r < 0.6:
                out.append("update fleetgate.accounts set disabled = not "
                           "disabled, role = %s where username = %s;"
                           % (q(rnd.choice(["dashboard", "operator"])),
                              q(user)))
            else:
                accounts.remove(user)
                out.append("delete from fleetgate.accounts where "
                           "username = %s;" % q(user))
    print("\n".join(out))


def rows_of_snapshot(path):
    with open(path, encoding="utf-8") as f:
        f.readline()  # the header: magic, format, checksum
        body = json.load(f)
    devices = {tuple(str(v) for v in r[:3]) for r in body["devices"]}
    certs = {(r[0], r[1], str(r[4] != 0)) for r in body["certificates"]}
    accounts = {(r[0], r[2], str(r[3]), str(r[5]))
                for r in body["accounts"]}
    return devices, certs, accounts


def rows_of_dump(path):
    devices, certs, accounts = set(), set(), set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            kind, *cols = line.rstrip("\n").split("|")
            if kind == "d":
                devices.add(tuple(cols))
            elif kind == "c":
                certs.add(tuple(cols))
            elif kind == "a":
                accounts.add(tuple(cols))
    return devices, certs, accounts


def churned(rows, key):
    """The rows of the churn (the other cases' rows are left alone)."""
    return {r for r in rows if r[key].startswith("churn-")}


def compare(snapshot, dump):
    bad = 0
    names = ("devices", "certificates", "accounts")
    keys = (0, 1, 0)  # device id, the certificate's device id, username
    for name, key, snap, db in zip(names, keys, rows_of_snapshot(snapshot),
                                   rows_of_dump(dump)):
        snap, db = churned(snap, key), churned(db, key)
        for row in sorted(db - snap)[:5]:
            print("%s: in the database, not in the registry: %s"
                  % (name, "|".join(row)))
        for row in sorted(snap - db)[:5]:
            print("%s: in the registry, not in the database: %s"
                  % (name, "|".join(row)))
        bad += len(db ^ snap)
        print("%s: %d in the database, %d in the registry"
              % (name, len(db), len(snap)))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "sql":
        churn(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
