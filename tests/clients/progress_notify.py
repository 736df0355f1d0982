"""Watch progress notifications through python-etcd3 against a member started with
--experimental-watch-progress-notify-interval=500ms: a watcher that asked for them gets empty
responses carrying the current revision while idle, and one that did not gets none.

Usage: progress_notify.py HOST:PORT    Prints "progress notify OK" at the end.
"""

import os
import sys
import threading
import time

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3  # noqa: E402


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    c = etcd3.client(host=host, port=int(port), timeout=10)
    key = "/progress/%d" % int(time.time() * 1000)
    c.put(key, "1")
    revision = c.get(key)[1].mod_revision

    lock = threading.Lock()
    asked, not_asked = [], []

    def collect(into):
        def callback(resp):
            with lock:
                into.append(resp)
        return callback

    w1 = c.add_watch_callback(key + "/x", collect(asked), progress_notify=True)
    w2 = c.add_watch_callback(key + "/y", collect(not_asked))
    time.sleep(2.5)
    with lock:
        notifies = [r for r in asked if not r.events]
        assert len(notifies) >= 2, "progress notifications: %d" % len(notifies)
        for r in notifies:
            assert r.header.revision >= revision, (r.header.revision, revision)
        assert not not_asked, "unasked-for responses: %r" % not_asked
    # An event resets the idle clock; notifications then carry the new revision.
    c.put(key + "/y", "2")
    new_revision = c.get(key + "/y")[1].mod_revision
    time.sleep(1.5)
    with lock:
        assert len(not_asked) == 1 and len(not_asked[0].events) == 1, not_asked
        later = [r for r in asked if not r.events and r.header.revision >= new_revision]
        assert later, "no notification at the new revision %d" % new_revision
    c.cancel_watch(w1)
    c.cancel_watch(w2)
    print("progress notify OK")


if __name__ == "__main__":
    main()
