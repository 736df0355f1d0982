"""kazoo (the Python ZooKeeper client) against a quorumkv member's ZooKeeper port.

Usage: zk_kazoo.py HOST:PORT
Checks what the member serves so far: sessions, creates of every mode, data and versions,
children and Stat counters, sequential names, deletes, errors, one-shot watches, the system
nodes, and that a closed session's ephemerals are gone with their parent's Stat updated. Prints "ok" last.
"""
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import (BadVersionError, NoChildrenForEphemeralsError,
                              NodeExistsError, NoNodeError, NotEmptyError)

hosts = sys.argv[1]


def client():
    zk = KazooClient(hosts=hosts, timeout=10)
    zk.start(timeout=15)
    return zk


def raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc:
        return
    raise AssertionError("%s did not raise %s" % (fn.__name__, exc.__name__))


zk = client()
root = "/kazoo-check"
assert zk.create(root, b"v1") == root
raises(NodeExistsError, zk.create, root, b"again")
raises(NoNodeError, zk.create, root + "/missing/child", b"")

data, stat = zk.get(root)
assert data == b"v1" and stat.version == 0 and stat.numChildren == 0, stat

# Null data stays null, apart from empty.
zk.create(root + "-null", None)
data, stat = zk.get(root + "-null")
assert data is None and stat.dataLength == 0, (data, stat)
zk.set(root + "-null", b"")
assert zk.get(root + "-null")[0] == b""
zk.set(root + "-null", None)
assert zk.get(root + "-null")[0] is None
zk.delete(root + "-null")
assert stat.czxid == stat.mzxid == stat.pzxid, stat

stat = zk.set(root, b"v2", version=0)
assert stat.version == 1 and stat.dataLength == 2, stat
raises(BadVersionError, zk.set, root, b"v3", version=0)

# Sequential names count the parent's creates, deletes included.
first = zk.create(root + "/lock-", b"", ephemeral=True, sequence=True)
second = zk.create(root + "/lock-", b"", ephemeral=True, sequence=True)
assert (first, second) == (root + "/lock-0000000000", root + "/lock-0000000001"), (first, second)
zk.delete(first)
third = zk.create(root + "/lock-", b"", ephemeral=True, sequence=True)
assert third == root + "/lock-0000000002", third
raises(NoChildrenForEphemeralsError, zk.create, second + "/child", b"")
assert zk.exists(second).ephemeralOwner == zk.client_id[0]

parent = zk.exists(root)
# Three creates and a delete: four changes, two children.
assert (parent.cversion, parent.numChildren) == (4, 2), parent
assert sorted(zk.get_children(root)) == ["lock-0000000001", "lock-0000000002"]
children, stat = zk.get_children(root, include_data=True)
assert stat.numChildren == 2, stat

raises(NotEmptyError, zk.delete, root)
raises(BadVersionError, zk.delete, second, version=7)
assert zk.exists(root + "/nope") is None
raises(NoNodeError, zk.get, root + "/nope")

# One-shot watches: each fires once, for its kind of change.
seen = []
fired = threading.Semaphore(0)


def watcher(event):
    seen.append((event.type, event.path))
    fired.release()


def expect(*events):
    for _ in events:
        assert fired.acquire(timeout=10), "no event; seen %r" % seen
    assert seen == list(events), seen
    del seen[:]


w = root + "/watched"
assert zk.exists(w, watch=watcher) is None
zk.create(w, b"a")
expect(("CREATED", w))
zk.get(w, watch=watcher)
zk.set(w, b"b")
zk.set(w, b"c")
expect(("CHANGED", w))
zk.get_children(root, watch=watcher)
zk.create(w + "2", b"")
expect(("CHILD", root))
zk.exists(w, watch=watcher)
zk.delete(w)
zk.delete(w + "2")
expect(("DELETED", w))
raises(NoNodeError, zk.get, w, watch=watcher)
zk.create(w, b"")
zk.delete(w)
time.sleep(0.5)
assert seen == [], seen

# The system nodes are there, as on a real server.
assert "zookeeper" in zk.get_children("/")
assert sorted(zk.get_children("/zookeeper")) == ["config", "quota"]
raises(NodeExistsError, zk.create, "/zookeeper", b"")

# Closing the session removes its ephemerals and updates their parent.
before = zk.exists(root)
zk.stop()
zk.close()
zk = client()
zk.sync(root)
after = zk.exists(root)
assert zk.get_children(root) == [], zk.get_children(root)
assert after.numChildren == 0 and after.pzxid > before.pzxid, (before, after)
zk.delete(root, version=1)
assert zk.exists(root) is None
zk.stop()
print("ok")
