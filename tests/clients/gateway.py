"""Plain HTTP against a quorumkv client port, as curl users of etcd's gateway would talk to it:
/health, /version, /metrics, and JSON calls under /v3/ (and /v3beta/), including a watch
stream and the Authorization header once authentication is on.

Usage: gateway.py HOST:PORT
Prints "gateway OK" at the end; any failed assertion exits non-zero.
"""

import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request


def b64(s):
    return base64.b64encode(s.encode()).decode()


def call(base, path, body, token=None, expect=200):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    if token:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    assert status == expect, (path, status, data)
    return json.loads(data)


def main():
    base = "http://" + sys.argv[1]
    prefix = "/gw/%d/" % int(time.time() * 1000)

    with urllib.request.urlopen(base + "/health", timeout=10) as r:
        assert json.loads(r.read()) == {"health": "true"}
    with urllib.request.urlopen(base + "/version", timeout=10) as r:
        assert "etcdserver" in json.loads(r.read())
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        assert b"etcd_server_has_leader 1" in r.read()

    put = call(base, "/v3/kv/put", {"key": b64(prefix + "a"), "value": b64("1")})
    rev = int(put["header"]["revision"])
    got = call(base, "/v3/kv/range", {"key": b64(prefix + "a")})
    assert got["count"] == "1" and base64.b64decode(got["kvs"][0]["value"]) == b"1", got
    assert int(got["kvs"][0]["mod_revision"]) == rev
    got = call(base, "/v3beta/kv/range", {"key": b64(prefix), "range_end": b64(prefix[:-1] + "0"),
                                          "count_only": True})
    assert got["count"] == "1" and "kvs" not in got, got
    txn = call(base, "/v3/kv/txn", {
        "compare": [{"key": b64(prefix + "a"), "target": "VALUE", "result": "EQUAL",
                     "value": b64("1")}],
        "success": [{"request_put": {"key": b64(prefix + "b"), "value": b64("2")}}],
    })
    assert txn["succeeded"] is True, txn
    err = call(base, "/v3/kv/range", {"key": ""}, expect=400)
    assert err["error"] == "etcdserver: key is not provided" and err["code"] == 3, err
    err = call(base, "/v3/kv/range", {"key": b64("a"), "revision": "999999"}, expect=400)
    assert "future revision" in err["error"], err
    lease = call(base, "/v3/lease/grant", {"TTL": 60})
    ttl = call(base, "/v3/lease/timetolive", {"ID": lease["ID"]})
    assert ttl["ID"] == lease["ID"] and int(ttl["TTL"]) > 0, ttl
    call(base, "/v3/lease/revoke", {"ID": lease["ID"]})
    status = call(base, "/v3/maintenance/status", {})
    assert status["leader"] == status["header"]["member_id"], status
    members = call(base, "/v3/cluster/member/list", {})
    assert len(members["members"]) == 1, members

    # A watch stream: one JSON object per line, each {"result": WatchResponse}.
    lines = []

    def watch():
        req = urllib.request.Request(
            base + "/v3/watch", method="POST",
            data=json.dumps({"create_request": {"key": b64(prefix + "w")}}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            for line in r:
                lines.append(json.loads(line))
                if len(lines) == 2:
                    return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    deadline = time.time() + 10
    while not lines and time.time() < deadline:
        time.sleep(0.05)
    assert lines and lines[0]["result"]["created"] is True, lines
    call(base, "/v3/kv/put", {"key": b64(prefix + "w"), "value": b64("x")})
    t.join(10)
    assert len(lines) == 2, lines
    ev = lines[1]["result"]["events"][0]
    assert base64.b64decode(ev["kv"]["value"]) == b"x", ev

    # Authentication: the token from /v3/auth/authenticate goes in the Authorization header.
    call(base, "/v3/auth/user/add", {"name": "root", "password": "pw"})
    call(base, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    call(base, "/v3/auth/enable", {})
    err = call(base, "/v3/kv/range", {"key": b64(prefix + "a")}, expect=400)
    assert err["error"] == "etcdserver: user name is empty", err
    err = call(base, "/v3/auth/authenticate", {"name": "root", "password": "no"}, expect=400)
    assert "authentication failed" in err["error"], err
    token = call(base, "/v3/auth/authenticate", {"name": "root", "password": "pw"})["token"]
    got = call(base, "/v3/kv/range", {"key": b64(prefix + "a")}, token=token)
    assert got["count"] == "1", got
    err = call(base, "/v3/kv/range", {"key": b64(prefix + "a")}, token="bogus", expect=401)
    assert err["error"] == "etcdserver: invalid auth token", err
    call(base, "/v3/auth/disable", {}, token=token)
    call(base, "/v3/kv/range", {"key": b64(prefix + "a")})

    # The writes reached the disk: the WAL's fdatasyncs and the backend's durable commits (one
    # follows every quiet spell of --backend-batch-interval) are in etcd's disk histograms.
    def counts():
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.endswith("_duration_seconds_count"):
                out[name] = float(value)
        return out

    deadline = time.time() + 10
    got = counts()
    while got.get("etcd_disk_backend_commit_duration_seconds_count", 0) < 1 and time.time() < deadline:
        time.sleep(0.1)
        got = counts()
    assert got.get("etcd_disk_backend_commit_duration_seconds_count", 0) >= 1, got
    assert got.get("etcd_disk_wal_fsync_duration_seconds_count", 0) >= 1, got

    print("gateway OK")


if __name__ == "__main__":
    main()
