#!/usr/bin/env python3
"""Differential run: one seeded random stream of ZooKeeper operations sent to two servers
(real ZooKeeper and a quorumkv member), every answer compared.

Usage: zk_diff.py --a HOST:PORT --b HOST:PORT [--seed S] [--ops N]

Three sessions per server take turns at random: creates of every mode (persistent,
ephemeral, sequential, both, container), sets and deletes with right, wrong and any versions,
exists, getData and getChildren (some arming one-shot watches), transactions of creates,
sets, deletes and checks, and sessions closed and opened again. Replies, error classes,
children, sequence names, data and Stat counters must match; zxids are compared by their
order of first appearance and times not at all, ephemeral owners by which session holds
them. Watch events each session received are compared at the end. On the first difference
it prints the step, both answers and how to replay it, and exits 1; prints "same" otherwise.
"""

import argparse
import random
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.serialization import Create2
from kazoo.security import OPEN_ACL_UNSAFE


class CreateContainer(Create2):
    """createContainer (opcode 19), which kazoo has no call for; answered as create2 is."""

    type = 19

ROOT = "/zkdiff"
NAMES = ["a", "b", "c", "d"]


class Side:
    """One server: its sessions, their watch events, and the zxid and session maps that
    make its answers comparable."""

    def __init__(self, hosts, seed):
        self.hosts = hosts
        self.root = "%s-%d" % (ROOT, seed)
        self.sessions = [None, None, None]
        self.events = [[], [], []]
        self.lock = threading.Lock()
        self.zxids = {}
        self.owners = {}
        for i in range(3):
            self.open(i)

    def open(self, i):
        c = KazooClient(hosts=self.hosts, timeout=10)
        c.start(timeout=15)
        self.sessions[i] = c
        self.owners[c.client_id[0]] = "s%d" % i

    def close(self, i):
        self.sessions[i].stop()
        self.sessions[i].close()

    def watcher(self, i):
        def fire(event):
            with self.lock:
                self.events[i].append((event.type, event.path))
        return fire

    def zxid(self, z):
        if z <= 0:
            return z
        return "z%d" % self.zxids.setdefault(z, len(self.zxids))

    def stat(self, st):
        if st is None:
            return None
        return (self.zxid(st.czxid), self.zxid(st.mzxid), self.zxid(st.pzxid), st.version,
                st.cversion, st.aversion, self.owners.get(st.ephemeralOwner, st.ephemeralOwner),
                st.dataLength, st.numChildren)

    def shown(self, v):
        """An answer with its server's own numbers replaced by comparable ones."""
        if isinstance(v, BaseException):
            return type(v).__name__
        if hasattr(v, "czxid"):
            return self.stat(v)
        if isinstance(v, tuple):
            return tuple(self.shown(x) for x in v)
        if isinstance(v, list):
            return [self.shown(x) for x in v]
        if isinstance(v, str) and v.startswith(self.root):
            return "ROOT" + v[len(self.root):]
        return v


def path(rng, root):
    depth = rng.choice([1, 1, 2, 2, 3])
    return root + "".join("/" + rng.choice(NAMES) for _ in range(depth))


def step(rng):
    """A random operation, as a function of (side, session) answering something."""
    kind = rng.choice(["create"] * 5 + ["set"] * 3 + ["delete"] * 3 + ["exists", "get",
                      "children"] * 2 + ["multi"] * 2 + ["reopen"])
    p = path(rng, "{root}")
    data = rng.choice([b"", b"x", b"yy" * rng.randint(1, 8), None])
    version = rng.choice([-1, -1, 0, 1, 2])
    watch = rng.random() < 0.3
    mode = rng.choice(["persistent", "ephemeral", "sequence", "ephemeral_sequence", "container"])

    def run(side, i):
        c = side.sessions[i]
        at = p.format(root=side.root)
        if kind == "create" and mode == "container":
            done = c.handler.async_result()
            c._call(CreateContainer(at, data or b"", OPEN_ACL_UNSAFE, 4), done)
            return done.get(timeout=15)
        if kind == "create":
            return c.create(at, data, ephemeral="ephemeral" in mode, sequence="sequence" in mode,
                            makepath=rng_free_makepath(at), include_data=True)
        if kind == "set":
            return c.set(at, data if data is not None else b"", version=version)
        if kind == "delete":
            return c.delete(at, version=version)
        if kind == "exists":
            return c.exists(at, watch=side.watcher(i) if watch else None)
        if kind == "get":
            return c.get(at, watch=side.watcher(i) if watch else None)
        if kind == "children":
            kids, st = c.get_children(at, watch=side.watcher(i) if watch else None,
                                      include_data=True)
            return sorted(kids), st
        if kind == "multi":
            t = c.transaction()
            t.create(at + "-m", b"m")
            t.check(at, version)
            t.set_data(at, b"t")
            t.delete(at + "-m")
            return t.commit()
        side.close(i)
        side.open(i)
        return "reopened"

    return "%s %s%s" % (kind, p, " (%s)" % mode if kind == "create" else ""), run


def rng_free_makepath(at):
    # Parents are made for paths whose last name is "a", so deep trees grow; the choice depends
    # only on the path, so both sides make the same one.
    return at.endswith("/a")


def answer(side, i, run):
    try:
        return side.shown(run(side, i))
    except KazooException as e:
        return side.shown(e)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="real ZooKeeper, HOST:PORT")
    p.add_argument("--b", required=True, help="quorumkv, HOST:PORT")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=300)
    args = p.parse_args()
    rng = random.Random(args.seed)
    a, b = Side(args.a, args.seed), Side(args.b, args.seed)
    for side in (a, b):
        side.sessions[0].ensure_path(side.root)
    tally = {}
    for n in range(args.ops):
        i = rng.randrange(3)
        what, run = step(rng)
        # The same choices on both sides: the operation reads no randomness while it runs.
        got_a, got_b = answer(a, i, run), answer(b, i, run)
        outcome = got_a if isinstance(got_a, str) and got_a.endswith("Error") else "answered"
        tally[outcome] = tally.get(outcome, 0) + 1
        if got_a != got_b:
            print("step %d, session %d: %s" % (n, i, what))
            print("  ZooKeeper: %r" % (got_a,))
            print("  quorumkv:  %r" % (got_b,))
            print("replay: zk_diff.py --a %s --b %s --seed %d --ops %d"
                  % (args.a, args.b, args.seed, n + 1))
            return 1
    # Events in flight arrive: a sync on each session, then a moment.
    for side in (a, b):
        for c in side.sessions:
            c.sync(side.root)
    time.sleep(0.5)
    for i in range(3):
        ev_a = [(t, a.shown(p)) for t, p in a.events[i]]
        ev_b = [(t, b.shown(p)) for t, p in b.events[i]]
        if ev_a != ev_b:
            print("watch events of session %d differ:" % i)
            print("  ZooKeeper: %r" % (ev_a,))
            print("  quorumkv:  %r" % (ev_b,))
            print("replay: zk_diff.py --a %s --b %s --seed %d --ops %d"
                  % (args.a, args.b, args.seed, args.ops))
            return 1
    events = sum(len(e) for e in a.events)
    print("same (%d operations, seed %d: %s; %d watch events)" % (
        args.ops, args.seed, ", ".join("%s %d" % kv for kv in sorted(tally.items())), events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
