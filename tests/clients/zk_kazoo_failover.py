"""A kazoo session moving between quorumkv members when the one it is connected to dies.

Usage: zk_kazoo_failover.py HOST:PORT,HOST:PORT,...
Creates an ephemeral and watches, prints "connected PORT" and waits for a line on stdin
naming the members still alive (comma list); meanwhile the caller kills the member on PORT.
Then, through a second session on a live member, changes the watched nodes; checks that the
first session came back on another member with its id, that its ephemeral survived, that
kazoo's data and children watch recipes (which read again after a reconnect; kazoo sends no
setWatches) saw the changes, and that the session stays alive on that member for several
timeouts (touches relayed to the leader). Prints "ok" last.
"""
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

hosts = sys.argv[1]
zk = KazooClient(hosts=hosts, timeout=4, randomize_hosts=True)
zk.start(timeout=20)
root = "/failover"
zk.ensure_path(root + "/kids")
zk.create(root + "/data", b"before")
eph = zk.create(root + "/eph-", b"", ephemeral=True, sequence=True)
session = zk.client_id[0]

seen = {"data": None, "kids": None}
changed = threading.Event()


def data_changed(data, stat):
    seen["data"] = data
    if seen == {"data": b"after", "kids": ["k"]}:
        changed.set()


def kids_changed(children):
    seen["kids"] = sorted(children)
    if seen == {"data": b"after", "kids": ["k"]}:
        changed.set()


zk.DataWatch(root + "/data", data_changed)
zk.ChildrenWatch(root + "/kids", kids_changed)
reconnected = threading.Event()


def listener(state):
    if state == KazooState.SUSPENDED:
        reconnected.clear()
    elif state == KazooState.CONNECTED:
        reconnected.set()


zk.add_listener(listener)
port = zk._connection._socket.getpeername()[1]
print("connected %d" % port, flush=True)
alive = sys.stdin.readline().strip()
assert alive, "no members named"

other = KazooClient(hosts=alive, timeout=10)
other.start(timeout=30)
other.set(root + "/data", b"after")
other.create(root + "/kids/k", b"")

deadline = time.time() + 30
while not (zk.connected and zk._connection._socket is not None
           and zk._connection._socket.getpeername()[1] != port):
    assert time.time() < deadline, "never reconnected to another member"
    time.sleep(0.1)
assert zk.client_id[0] == session, "a new session: the old one was lost"
assert changed.wait(15), "the watches never saw the changes: %r" % seen
stat = zk.exists(eph)
assert stat is not None and stat.ephemeralOwner == session, stat
# Several session timeouts on this member: its touches keep the session alive at the leader.
time.sleep(10)
assert zk.client_id[0] == session and zk.exists(eph) is not None, "the session expired"
assert other.exists(eph) is not None
zk.stop()
zk.close()
# Another client's member may not have applied the close yet: sync first, as ZooKeeper's
# clients must to see what another client did.
other.sync(root)
assert other.exists(eph) is None, "the ephemeral outlived its closed session"
other.stop()
print("ok")
