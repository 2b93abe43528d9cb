//! Txn across namespace and tags: a compare-and-set on a tag value guarding a tag update plus a
//! file creation. Concurrent clients on different nodes race; exactly one wins each round, and
//! a loser's steps leave no trace (all or nothing).

use std::time::Duration;

use metad_client::pb::{
    namespace_op, tag_op, Compare, CompareOp, CompareTarget, CreateFile, NamespaceOp, SetTags, Tag,
    TagOp, TxnStep,
};
use metad_client::ReadOptions;
use metad_testkit::{init_logging, Cluster};

const T: Duration = Duration::from_secs(20);

fn step_create(path: &str) -> TxnStep {
    TxnStep {
        op: Some(metad_client::pb::txn_step::Op::Namespace(NamespaceOp {
            op: Some(namespace_op::Op::Create(CreateFile {
                path: path.into(),
                ..Default::default()
            })),
        })),
    }
}

fn step_tag(path: &str, key: &str, value: &str) -> TxnStep {
    TxnStep {
        op: Some(metad_client::pb::txn_step::Op::Tag(TagOp {
            op: Some(tag_op::Op::Set(SetTags {
                path: path.into(),
                tags: vec![Tag {
                    key: key.into(),
                    value: value.into(),
                }],
                inherit: false,
            })),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_compare_and_set_txn_has_one_winner_and_losers_leave_no_trace() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let admin = cluster.client().await?;
    admin.mkdir("/job", false).await?;
    admin
        .set_tags("/job", &[("state".to_string(), "r0".to_string())], false)
        .await?;
    let clients = [
        cluster.client_for(1).await?,
        cluster.client_for(2).await?,
        cluster.client_for(3).await?,
    ];
    for round in 0..8 {
        let expect = format!("r{round}");
        let next = format!("r{}", round + 1);
        let futs = clients.iter().enumerate().map(|(i, c)| {
            let compare = Compare {
                path: "/job".into(),
                target: CompareTarget::Tag as i32,
                op: CompareOp::Equal as i32,
                tag_key: "state".into(),
                tag_value: expect.clone(),
                ..Default::default()
            };
            let then_ops = vec![
                step_tag("/job", "state", &next),
                step_create(&format!("/job/round{round}-client{i}")),
            ];
            async move { c.txn(vec![compare], then_ops, vec![]).await }
        });
        let results = futures::future::join_all(futs).await;
        let mut winners = 0;
        for r in results {
            if r?.succeeded {
                winners += 1;
            }
        }
        assert_eq!(
            winners, 1,
            "round {round}: exactly one compare-and-set wins"
        );
        let listing = admin
            .read_dir("/job", "", 0, false, ReadOptions::linearizable())
            .await?;
        let mine: Vec<_> = listing
            .entries
            .iter()
            .filter(|e| e.name.starts_with(&format!("round{round}-")))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "round {round}: only the winner's file exists"
        );
    }
    let tags = admin
        .get_tags("/job", false, ReadOptions::linearizable())
        .await?;
    assert!(
        tags.tags
            .iter()
            .any(|t| t.key == "state" && t.value == "r8"),
        "{tags:?}"
    );
    cluster.shutdown().await;
    Ok(())
}
