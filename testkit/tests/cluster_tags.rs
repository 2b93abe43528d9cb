//! The Tags service end to end on a 3-node cluster: exactly-once SetTags/RemoveTags through
//! Raft, GetTags (own and effective), FindByTags streaming, ListTagKeys, refusals with their
//! codes, and reads on a follower. Uses the root directory, which always exists, so it needs no
//! namespace RPCs; the tree-shaped cases live in the `sm::tags` unit and property tests.

use std::time::Duration;

use metad_client::{ErrorCode, ReadOptions};
use metad_testkit::{init_logging, Cluster};

const T: Duration = Duration::from_secs(20);

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_round_trip_through_the_cluster() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let c = cluster.client().await?;

    let set = c
        .set_tags("/", &pairs(&[("tier", "hot"), ("owner", "ops")]), true)
        .await?;
    assert_eq!(set.keys, vec!["owner", "tier"]);
    let rev = set.header.revision;
    assert!(rev > 0);

    // Same tags again: nothing changes and the revision does not move.
    let again = c.set_tags("/", &pairs(&[("tier", "hot")]), true).await?;
    assert!(again.keys.is_empty());
    assert_eq!(again.header.revision, rev);

    let own = c.get_tags("/", false, ReadOptions::default()).await?;
    assert_eq!(own.ino, 1);
    assert_eq!(own.tags.len(), 2);
    assert!(own.tags.iter().all(|t| t.inherit && t.source.is_none()));

    // Every node answers the same (read-your-writes on a follower via min_revision).
    for i in 0..3 {
        let r = c
            .on_endpoint(i)?
            .find_by_tags(
                "/",
                "tier=hot and has(owner)",
                None,
                0,
                ReadOptions::serializable().min_revision(rev),
            )
            .await?;
        assert_eq!(r.matches.len(), 1, "node {i}");
        assert_eq!(r.matches[0].path, "/");
        assert_eq!(r.next_cursor, None);
        assert!(r.plan.starts_with("index"), "{}", r.plan);
        assert!(r.header.revision >= rev);
    }
    let none = c
        .find_by_tags("/", "tier=cold", None, 10, ReadOptions::default())
        .await?;
    assert!(none.matches.is_empty());

    let keys = c.list_tag_keys("", 1, ReadOptions::default()).await?;
    assert_eq!(keys.keys, vec![("owner".to_string(), 1)]);
    assert_eq!(keys.next_after.as_deref(), Some("owner"));
    let keys = c.list_tag_keys("owner", 10, ReadOptions::default()).await?;
    assert_eq!(keys.keys, vec![("tier".to_string(), 1)]);

    let rm = c.remove_tags("/", &["owner".to_string()]).await?;
    assert_eq!(rm.keys, vec!["owner"]);
    assert!(rm.header.revision > rev);

    // Refusals carry their stable codes and change nothing.
    let e = c
        .set_tags("/", &pairs(&[(&"k".repeat(129), "v")]), false)
        .await
        .expect_err("key too long");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("128"), "{}", e.message());
    let e = c
        .set_tags("/missing", &pairs(&[("a", "b")]), false)
        .await
        .expect_err("missing path");
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = c
        .find_by_tags("/", "tier=", None, 0, ReadOptions::default())
        .await
        .expect_err("bad expr");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("position 5"), "{}", e.message());
    let e = c
        .find_by_tags("/", "has(x)", None, 10_001, ReadOptions::default())
        .await
        .expect_err("limit");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let keys = c.list_tag_keys("", 0, ReadOptions::default()).await?;
    assert_eq!(keys.keys, vec![("tier".to_string(), 1)]);

    cluster.shutdown().await;
    Ok(())
}
