"""The gRPC call counters of a quorumkv member's /metrics, read as etcd's dashboards and
alerts read them: grpc_server_started_total and grpc_server_handled_total with go-grpc-prometheus'
labels (grpc_type among them), a stream counted as started while it is open and as handled
once it ends.

Usage: grpc_metrics.py HOST:PORT
Prints "grpc metrics OK" at the end; any failed assertion exits non-zero.
"""

import re
import sys
import time
import urllib.request

import etcd3

LINE = re.compile(r'^(grpc_server_(?:started|handled)_total)\{([^}]*)\} (\d+)$')


def scrape(base):
    """{(metric, service, method, type): count}, handled counts summed over codes."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in m.group(2).split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        key = (m.group(1), labels["grpc_service"], labels["grpc_method"], labels["grpc_type"])
        out[key] = out.get(key, 0) + int(m.group(3))
    return out


def open_streams(counts, service, method):
    started = counts.get(("grpc_server_started_total", service, method, "bidi_stream"), 0)
    handled = counts.get(("grpc_server_handled_total", service, method, "bidi_stream"), 0)
    return started - handled


def main():
    ep = sys.argv[1]
    base = "http://" + ep
    host, port = ep.rsplit(":", 1)
    prefix = "/metrics/%d/" % int(time.time() * 1000)

    before = scrape(base)
    c = etcd3.client(host=host, port=int(port))
    for i in range(5):
        c.put(prefix + str(i), "v")
    events, cancel = c.watch_prefix(prefix)
    c.put(prefix + "w", "w")
    assert next(events).key == (prefix + "w").encode()

    during = scrape(base)
    put = ("etcdserverpb.KV", "Put", "unary")
    assert during[("grpc_server_started_total",) + put] >= before.get(
        ("grpc_server_started_total",) + put, 0) + 6, during
    assert during[("grpc_server_handled_total",) + put] == during[
        ("grpc_server_started_total",) + put], during
    opened = open_streams(during, "etcdserverpb.Watch", "Watch")
    assert opened >= 1, during

    # Closing the client ends its watch stream: handled catches up with started.
    cancel()
    c.close()
    deadline = time.time() + 10
    while True:
        after = scrape(base)
        if open_streams(after, "etcdserverpb.Watch", "Watch") == opened - 1:
            break
        assert time.time() < deadline, after
        time.sleep(0.1)
    print("grpc metrics OK")


if __name__ == "__main__":
    main()
