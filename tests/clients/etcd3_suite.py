"""The python-etcd3 client against a running quorumkv: KV, transactions, leases, watches,
locks, maintenance and errors, asserted call by call.

Usage: etcd3_suite.py HOST:PORT [HOST:PORT ...]   (calls go to each endpoint in turn)
Prints "etcd3 suite OK" at the end; any failed assertion exits non-zero.
"""

import os
import sys
import threading
import time

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3  # noqa: E402
import grpc  # noqa: E402


def client(ep):
    host, port = ep.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=10)


def main():
    eps = sys.argv[1:] or ["127.0.0.1:2379"]
    clients = [client(e) for e in eps]
    c = clients[0]
    other = clients[-1]
    prefix = "/suite/%d/" % int(time.time() * 1000)

    # KV
    c.put(prefix + "a", "1")
    v, meta = other.get(prefix + "a")
    assert v == b"1", v
    assert meta.version == 1 and meta.create_revision == meta.mod_revision
    c.put(prefix + "a", "2")
    v, meta2 = c.get(prefix + "a")
    assert v == b"2" and meta2.version == 2 and meta2.create_revision == meta.create_revision
    for i in range(10):
        other.put(prefix + "p/%02d" % i, str(i))
    got = [(m.key, v) for v, m in c.get_prefix(prefix + "p/")]
    assert got == [((prefix + "p/%02d" % i).encode(), str(i).encode()) for i in range(10)], got
    desc = [m.key for _, m in c.get_prefix(prefix + "p/", sort_order="descend")]
    assert desc == sorted(desc, reverse=True)
    assert c.delete(prefix + "p/00")
    assert not c.delete(prefix + "p/00")
    c.delete_prefix(prefix + "p/")
    assert list(c.get_prefix(prefix + "p/")) == []
    assert c.get(prefix + "missing") == (None, None)

    # Transactions
    ok, _ = c.transaction(
        compare=[c.transactions.value(prefix + "a") == "2"],
        success=[c.transactions.put(prefix + "t", "yes")],
        failure=[c.transactions.put(prefix + "t", "no")],
    )
    assert ok and c.get(prefix + "t")[0] == b"yes"
    ok, responses = c.transaction(
        compare=[c.transactions.version(prefix + "a") > 5],
        success=[],
        failure=[c.transactions.get(prefix + "a")],
    )
    assert not ok and responses[0][0][0] == b"2"
    ok, _ = c.transaction(
        compare=[c.transactions.create(prefix + "new") == 0],
        success=[c.transactions.put(prefix + "new", "created")],
        failure=[],
    )
    assert ok
    assert c.replace(prefix + "new", "created", "replaced")
    assert not c.replace(prefix + "new", "created", "again")

    # Leases: attached keys go with the lease
    lease = c.lease(5)
    assert 1 <= lease.remaining_ttl <= 5
    c.put(prefix + "leased", "x", lease=lease)
    assert other.get(prefix + "leased")[0] == b"x"
    lease.refresh()
    assert [k for k in lease.keys] == [(prefix + "leased").encode()], lease.keys
    lease.revoke()
    assert c.get(prefix + "leased") == (None, None)
    # Expiry without keep-alive (the leader's lessor revokes through the log).
    short = c.lease(2)
    c.put(prefix + "expiring", "x", lease=short)
    deadline = time.time() + 15
    while c.get(prefix + "expiring")[0] is not None:
        assert time.time() < deadline, "lease did not expire"
        time.sleep(0.2)
    try:
        c.put(prefix + "bad", "x", lease=123456789)
        raise AssertionError("put with a missing lease succeeded")
    except Exception as e:  # the client wraps the gRPC error
        assert "lease not found" in str(e), e

    # Watches: events in order, exactly once
    events = []
    done = threading.Event()

    def cb(resp):
        if isinstance(resp, Exception):
            return
        for ev in resp.events:
            events.append((ev.key, ev.value, type(ev).__name__))
            if len(events) >= 3:
                done.set()

    wid = other.add_watch_prefix_callback(prefix + "w/", cb)
    time.sleep(0.3)
    c.put(prefix + "w/1", "a")
    c.put(prefix + "w/2", "b")
    c.delete(prefix + "w/1")
    assert done.wait(10), events
    other.cancel_watch(wid)
    assert events == [
        ((prefix + "w/1").encode(), b"a", "PutEvent"),
        ((prefix + "w/2").encode(), b"b", "PutEvent"),
        ((prefix + "w/1").encode(), b"", "DeleteEvent"),
    ], events
    # A watch from a past revision replays history.
    _, m = c.get(prefix + "w/2")
    it, cancel = c.watch(prefix + "w/2", start_revision=m.mod_revision)
    first = next(it)
    cancel()
    assert first.key == (prefix + "w/2").encode() and first.value == b"b"

    # Locks
    lock = c.lock(prefix + "lock", ttl=5)
    assert lock.acquire(timeout=5)
    assert lock.is_acquired()
    held = list(other.get_prefix("/locks/" + prefix + "lock"))
    assert len(held) == 1, held
    lock.release()
    assert list(other.get_prefix("/locks/" + prefix + "lock")) == []
    lock2 = other.lock(prefix + "lock", ttl=5)
    assert lock2.acquire(timeout=5)
    lock2.release()

    # Maintenance and cluster
    st = c.status()
    assert st.version and st.leader is not None and st.raft_index > 0
    members = list(c.members)
    assert len(members) >= 1 and all(m.client_urls for m in members), members

    # Errors: compacted revisions, oversized requests; the server keeps serving.
    c.put(prefix + "c", "1")
    _, m1 = c.get(prefix + "c")
    c.put(prefix + "c", "2")
    c.compact(m1.mod_revision + 1)
    from etcd3 import etcdrpc

    try:
        c.kvstub.Range(
            etcdrpc.RangeRequest(key=(prefix + "c").encode(), revision=m1.mod_revision),
            timeout=10,
        )
        raise AssertionError("read of a compacted revision succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE, e
        assert "required revision has been compacted" in e.details(), e.details()
    try:
        c.put(prefix + "big", "x" * (2 * 1024 * 1024))
        raise AssertionError("oversized put succeeded")
    except Exception as e:
        text = str(e)
        assert "too large" in text or "larger than max" in text or "RESOURCE_EXHAUSTED" in text, text
    c.put(prefix + "after-big", "ok")
    assert other.get(prefix + "after-big")[0] == b"ok"

    c.delete_prefix(prefix)
    print("etcd3 suite OK")


if __name__ == "__main__":
    main()
