"""Writes unique keys through python-etcd3 from three clients per endpoint for a while,
keeping on through failures, and records every key whose put was acknowledged.

Usage: acked_writes.py HOST:PORT[,HOST:PORT...] SECONDS OUT_FILE
Writes one acknowledged key per line to OUT_FILE and prints "acked N".
"""

import sys
import threading
import time

import etcd3


def main():
    endpoints = sys.argv[1].split(",")
    stop = time.time() + float(sys.argv[2])
    acked = []
    lock = threading.Lock()

    def writer(ep, n):
        host, port = ep.rsplit(":", 1)
        c = etcd3.client(host=host, port=int(port), timeout=2)
        i = 0
        while time.time() < stop:
            key = "acked/%d/%06d" % (n, i)
            i += 1
            try:
                c.put(key, "v")
            except Exception:
                # Unknown outcome: the key may or may not be there; only acks are recorded.
                time.sleep(0.05)
                continue
            with lock:
                acked.append(key)

    threads = [
        threading.Thread(target=writer, args=(ep, n))
        for n, ep in enumerate(endpoints * 3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(sys.argv[3], "w") as f:
        f.write("\n".join(acked))
    print("acked", len(acked))


if __name__ == "__main__":
    main()
