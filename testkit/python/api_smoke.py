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
    import grpc
    from metad.v1 import (
        common_pb2,
        namespace_pb2,
        namespace_pb2_grpc,
        tags_pb2,
        tags_pb2_grpc,
        topology_pb2,
        topology_pb2_grpc,
    )

    ns = namespace_pb2_grpc.NamespaceStub(channel)
    tags = tags_pb2_grpc.TagsStub(channel)
    topo = topology_pb2_grpc.TopologyStub(channel)
    loc = topology_pb2_grpc.LocationStub(channel)

    # Namespace: a directory (with parents) and a file.
    ns.Mkdir(namespace_pb2.MkdirRequest(header=header(), path="/py/data", parents=True), timeout=10)
    created = ns.Create(namespace_pb2.CreateRequest(header=header(), path="/py/data/a.bin"), timeout=10)
    rev = created.header.revision
    print(f"created /py/data/a.bin ino={created.inode.ino} revision={rev}")

    # A retry with the same (client_id, seq) returns the first reply instead of failing.
    h = header()
    first = ns.Mkdir(namespace_pb2.MkdirRequest(header=h, path="/py/once"), timeout=10)
    again = ns.Mkdir(namespace_pb2.MkdirRequest(header=h, path="/py/once"), timeout=10)
    assert first.header.revision == again.header.revision, (first.header, again.header)

    # Bad input: a clear INVALID_ARGUMENT naming the field.
    try:
        ns.Mkdir(namespace_pb2.MkdirRequest(header=header(), path="relative/path"), timeout=10)
        raise AssertionError("a relative path must be refused")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        assert "path" in e.details(), e.details()

    # Tags, inherited from the directory, found through the index.
    tags.SetTags(
        tags_pb2.SetTagsRequest(
            header=header(), path="/py/data", inherit=True,
            tags=[tags_pb2.Tag(key="project", value="vision")],
        ),
        timeout=10,
    )
    found = []
    for page in tags.FindByTags(tags_pb2.FindByTagsRequest(scope="/py", expr="project=vision"), timeout=10):
        found.extend(m.path for m in page.matches)
    assert "/py/data/a.bin" in found, found
    print(f"find project=vision -> {found}")

    # Sites, silos, instances, and Locate from two sites.
    for site in ("py-a", "py-b"):
        topo.RegisterSite(topology_pb2.RegisterSiteRequest(header=header(), name=site), timeout=10)
    for name, site, tier in (("py-nas", "py-a", topology_pb2.SILO_TIER_WARM), ("py-nvme", "py-b", topology_pb2.SILO_TIER_HOT)):
        topo.RegisterSilo(
            topology_pb2.RegisterSiloRequest(
                header=header(), name=name, site=site, kind=topology_pb2.SILO_KIND_POSIX, tier=tier,
                capacity_bytes=1 << 40, cost_per_gib_month=0.02, root=f"/srv/{name}",
            ),
            timeout=10,
        )
        loc.AddInstance(topology_pb2.AddInstanceRequest(header=header(), path="/py/data/a.bin", silo=name, bytes=4096), timeout=10)
    linearizable = common_pb2.ReadOptions(consistency=common_pb2.CONSISTENCY_LINEARIZABLE)
    for site, first_silo in (("py-a", "py-nas"), ("py-b", "py-nvme")):
        r = loc.Locate(topology_pb2.LocateRequest(read=linearizable, path="/py/data/a.bin", client_site=site), timeout=10)
        order = [i.instance.silo for i in r.instances]
        assert order[0] == first_silo, (site, order)
        print(f"locate from {site}: {order}")


if __name__ == "__main__":
    sys.exit(main())
