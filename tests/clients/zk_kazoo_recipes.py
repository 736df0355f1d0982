"""kazoo's transactions, ACLs and recipes against a quorumkv member's ZooKeeper port.

Usage: zk_kazoo_recipes.py HOST:PORT[,HOST:PORT...]
Transactions (committed whole, or failed with kazoo's per-operation exceptions), digest ACLs
and NoAuth, the lock, election, counter, party and queue recipes across two sessions, and
ephemerals of a lock holder released when its session closes. Prints "ok" last.
"""
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import (BadVersionError, NoAuthError, NoNodeError,
                              RolledBackError, RuntimeInconsistency)
from kazoo.security import make_digest_acl

hosts = sys.argv[1]


def client(**kw):
    zk = KazooClient(hosts=hosts, timeout=10, **kw)
    zk.start(timeout=15)
    return zk


a, b = client(), client()
root = "/recipes"
a.ensure_path(root)

# A transaction: all in one zxid.
t = a.transaction()
t.create(root + "/t1", b"1")
t.create(root + "/t2", b"2")
t.check(root, 0)
t.set_data(root + "/t1", b"11")
results = t.commit()
assert results[:2] == [root + "/t1", root + "/t2"], results
s1, s2 = a.exists(root + "/t1"), a.exists(root + "/t2")
assert s1.czxid == s2.czxid and s1.version == 1, (s1, s2)

# A failed one: nothing applied; kazoo's exceptions say which op failed.
t = a.transaction()
t.create(root + "/t3", b"")
t.set_data(root + "/t1", b"x", version=7)
t.delete(root + "/t2")
results = t.commit()
assert isinstance(results[0], RolledBackError), results
assert isinstance(results[1], BadVersionError), results
assert isinstance(results[2], RuntimeInconsistency), results
assert a.exists(root + "/t3") is None and a.exists(root + "/t2") is not None

# Digest ACLs: only the credentialed session may read or change.
acl = make_digest_acl("alice", "pw", all=True)
a.add_auth("digest", "alice:pw")
a.create(root + "/secret", b"s", acl=[acl])
# Reads are the member's own: a session on another member syncs to see another's writes.
b.sync(root)
# (Deleting it needs DELETE on its parent, which is open, as in ZooKeeper.)
for fn, args in ((b.get, ()), (b.set, (b"x",)), (b.get_children, ())):
    try:
        fn(root + "/secret", *args)
        raise AssertionError("%s allowed without auth" % fn.__name__)
    except NoAuthError:
        pass
try:
    b.create(root + "/secret/child", b"")
    raise AssertionError("created below it without auth")
except NoAuthError:
    pass
assert a.get(root + "/secret")[0] == b"s"
acls, _ = a.get_acls(root + "/secret")
assert acls[0].id.id == acl.id.id, acls
b.add_auth("digest", "alice:pw")
assert b.get(root + "/secret")[0] == b"s"
a.delete(root + "/secret")

# The lock: one holder at a time, handed over when released.
order = []
lock_a, lock_b = a.Lock(root + "/lock", "a"), b.Lock(root + "/lock", "b")
assert lock_a.acquire(timeout=10)
b.sync(root)
got = threading.Event()


def take_b():
    with lock_b:
        order.append("b")
        got.set()


th = threading.Thread(target=take_b)
th.start()
time.sleep(0.5)
assert not got.is_set(), "two holders"
assert lock_b.contenders() == ["a", "b"], lock_b.contenders()
order.append("a")
lock_a.release()
assert got.wait(10), "the lock was never handed over"
th.join()
assert order == ["a", "b"], order

# Election: the first candidate leads; when its session ends, the other does.
led = threading.Event()
c = client()
elected = []


def lead_c():
    elected.append("c")
    time.sleep(1)
    c_leading_done.set()


c_leading_done = threading.Event()
election_c = c.Election(root + "/election", "c")
threading.Thread(target=election_c.run, args=(lead_c,), daemon=True).start()
time.sleep(0.5)
b.sync(root)
election_b = b.Election(root + "/election", "b")
assert election_b.contenders()[0] == "c", election_b.contenders()
c.stop()
c.close()


def lead_b():
    elected.append("b")
    led.set()


threading.Thread(target=election_b.run, args=(lead_b,), daemon=True).start()
assert led.wait(15), "no new leader after the first one's session ended"
assert elected[0] == "c" and elected[-1] == "b", elected

# Counter, party and queue.
counter = a.Counter(root + "/counter")
counter += 5
b.Counter(root + "/counter").__add__(2)
a.sync(root)
assert a.Counter(root + "/counter").value == 7
party_a, party_b = a.Party(root + "/party", "a"), b.Party(root + "/party", "b")
party_a.join()
party_b.join()
a.sync(root)
b.sync(root)
assert sorted(party_a) == ["a", "b"] and len(party_b) == 2
party_b.leave()
a.sync(root)
assert list(party_a) == ["a"]
q = a.Queue(root + "/queue")
for item in (b"1", b"2", b"3"):
    q.put(item)
b.sync(root)
assert [b.Queue(root + "/queue").get() for _ in range(3)] == [b"1", b"2", b"3"]

a.stop()
b.stop()
print("ok")
