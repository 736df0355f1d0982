"""python-etcd3 against a quorumkv with authentication on: a user with readwrite on /app/ and
read on /shared, an anonymous client, and watches checked for read access.

Usage: etcd3_auth.py HOST:PORT USER PASSWORD LEADER_HOST:PORT
Prints "etcd3 auth OK" at the end; any failed assertion exits non-zero.
"""

import os
import sys

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3  # noqa: E402
import grpc  # noqa: E402
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402


def authed(host, port, user, password):
    c = etcd3.client(host=host, port=port, user=user, password=password, timeout=10)
    # python-etcd3 also attaches the token as call credentials, which grpc refuses on a
    # plaintext channel; the metadata it sends as well is what etcd reads.
    c.call_credentials = None
    c.watcher._credentials = None
    return c


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    except etcd3.exceptions.Etcd3Exception as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, grpc.RpcError):
            return cause.code(), cause.details()
        return None, str(e)
    return None, None


def main():
    ep, user, password, leader = sys.argv[1:5]
    host, port = ep.rsplit(":", 1)
    port = int(port)

    anon = etcd3.client(host=host, port=port, timeout=10)
    code, details = code_of(lambda: anon.get("/app/x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details == "etcdserver: user name is empty", details

    code, details = code_of(lambda: etcd3.client(
        host=host, port=port, user=user, password=password + "-wrong", timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "authentication failed" in details, details

    c = authed(host, port, user, password)
    c.put("/app/py", "1")
    assert c.get("/app/py")[0] == b"1"
    assert c.get("/shared/missing") == (None, None)
    code, details = code_of(lambda: c.put("/shared/x", "1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (code, details)
    assert details == "etcdserver: permission denied", details
    code, _ = code_of(lambda: c.get("/other"))
    assert code == grpc.StatusCode.PERMISSION_DENIED, code

    # A transaction needs read access for its compares and both branches' ops.
    ok, _ = c.transaction(
        compare=[c.transactions.value("/app/py") == "1"],
        success=[c.transactions.put("/app/py", "2")],
        failure=[c.transactions.get("/shared/a")],
    )
    assert ok and c.get("/app/py")[0] == b"2"
    code, _ = code_of(lambda: c.transaction(
        compare=[c.transactions.value("/other") == "1"],
        success=[c.transactions.put("/app/py", "3")],
        failure=[],
    ))
    assert code == grpc.StatusCode.PERMISSION_DENIED, code
    code, _ = code_of(lambda: c.transaction(
        compare=[],
        success=[c.transactions.put("/app/py", "3")],
        failure=[c.transactions.put("/other", "3")],
    ))
    assert code == grpc.StatusCode.PERMISSION_DENIED, code
    assert c.get("/app/py")[0] == b"2"

    # Watches: allowed under /app/, refused (created, then canceled) elsewhere.
    events, cancel = c.watch_prefix("/app/")
    c.put("/app/watched", "w")
    ev = next(events)
    assert ev.key == b"/app/watched" and ev.value == b"w", ev
    cancel()

    channel = grpc.insecure_channel(ep)
    stub = rpc_pb2_grpc.WatchStub(channel)
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"/other"))
    stream = stub.Watch(iter([create]), metadata=(("token", c.metadata[0][1]),), timeout=10)
    first = next(stream)
    assert first.created and first.canceled, first
    # etcd words the reason as the gRPC error a unary call would get.
    denied = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    assert first.cancel_reason == denied, first.cancel_reason
    channel.close()

    # A bad token is refused as etcd refuses it, so clients authenticate again.
    kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(ep))
    try:
        kv.Range(rpc_pb2.RangeRequest(key=b"/app/py"), metadata=(("token", "bogus.1"),))
        raise AssertionError("a bogus token was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.code()
        assert e.details() == "etcdserver: invalid auth token", e.details()

    # The members' Internal.Propose is not on the client port: a forged Authenticate (a token
    # for root, no password) and a tokenless put sent straight to the leader find no service.
    internal = grpc.insecure_channel(leader)
    propose = internal.unary_unary("/quorumkv.Internal/Propose",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
    forged = b"\x0a\x04root\x1a\x06forged"
    put = b"\x0a\x06/app/f\x12\x01x"
    for what, body in (("a forged Authenticate", b"\x72" + bytes([len(forged)]) + forged),
                       ("a tokenless put", b"\x1a" + bytes([len(put)]) + put)):
        try:
            propose(body, timeout=10)
            raise AssertionError(what + " was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (what, e.code(), e.details())
    for target in (ep, leader):
        kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(target))
        try:
            kv.Range(rpc_pb2.RangeRequest(key=b"/app/py"), metadata=(("token", "forged"),))
            raise AssertionError("the forged token was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.code()
    assert c.get("/app/f") == (None, None)

    print("etcd3 auth OK")


if __name__ == "__main__":
    main()
