//! Txn unit tests: compares, then/else branches, atomicity, limits and validation.

use metad_proto::raft::v1::command::Op;
use metad_proto::v1::*;
use metad_proto::ErrorCode;

use super::{create, events_from, mkdir, rename, revision, Sm};

fn cmp(path: &str, target: CompareTarget, op: CompareOp) -> Compare {
    Compare {
        path: path.into(),
        target: target as i32,
        op: op as i32,
        ..Default::default()
    }
}

fn step(op: Op) -> TxnStep {
    match op {
        Op::Namespace(n) => TxnStep {
            op: Some(txn_step::Op::Namespace(n)),
        },
        _ => unreachable!(),
    }
}

#[test]
fn txn_then_else_and_atomicity() {
    let mut sm = Sm::new();
    sm.ok(mkdir("/d"));
    let d = sm.stat("/d").expect("d");
    // Compare-and-set on mod_revision.
    let mut c = cmp("/d", CompareTarget::ModRevision, CompareOp::Equal);
    c.number = d.mod_revision;
    let t = TxnOp {
        compares: vec![c.clone()],
        then_ops: vec![step(create("/d/a")), step(create("/d/b"))],
        else_ops: vec![step(create("/d/lost"))],
    };
    let r = sm.txn(t.clone()).expect("txn");
    assert!(r.succeeded);
    assert_eq!(r.results.len(), 2);
    let rev = revision(&sm.kv);
    let ev = events_from(&sm.kv, rev, 10).expect("ev");
    assert_eq!(ev.len(), 2, "both steps share one revision");
    // Same compare again: /d changed, so the else branch runs.
    let r = sm.txn(t).expect("txn");
    assert!(!r.succeeded);
    assert!(sm.stat("/d/lost").is_some());
    // Failing compare without else: nothing changes.
    let rev = revision(&sm.kv);
    let mut c = cmp("/d/a", CompareTarget::Exists, CompareOp::Equal);
    c.exists = false;
    let r = sm
        .txn(TxnOp {
            compares: vec![c],
            then_ops: vec![step(create("/d/x"))],
            else_ops: vec![],
        })
        .expect("txn");
    assert!(!r.succeeded && r.results.is_empty());
    assert_eq!(revision(&sm.kv), rev);
    // A refused step refuses everything, naming the step.
    let tree = sm.tree();
    let (code, msg) = sm
        .txn(TxnOp {
            compares: vec![],
            then_ops: vec![step(create("/d/new")), step(create("/d/a"))],
            else_ops: vec![],
        })
        .expect_err("refused");
    assert_eq!(code, ErrorCode::AlreadyExists);
    assert!(msg.starts_with("then_ops[1].namespace.path:"), "{msg}");
    assert_eq!(sm.tree(), tree);
    assert_eq!(revision(&sm.kv), rev);
    // Steps see the effects of earlier steps.
    let r = sm
        .txn(TxnOp {
            compares: vec![],
            then_ops: vec![
                step(mkdir("/t")),
                step(create("/t/f")),
                step(rename("/t/f", "/t/g", RenameMode::NoReplace)),
            ],
            else_ops: vec![],
        })
        .expect("txn");
    assert!(r.succeeded);
    assert!(sm.stat("/t/g").is_some());
    sm.tree();
}

#[test]
fn txn_compares() {
    let mut sm = Sm::new();
    sm.ok(mkdir("/d"));
    sm.ok(create("/d/f"));
    let f = sm.stat("/d/f").expect("f");
    let holds = |sm: &mut Sm, c: Compare| {
        sm.txn(TxnOp {
            compares: vec![c],
            ..Default::default()
        })
        .expect("txn")
        .succeeded
    };
    let mut c = cmp("/d/f", CompareTarget::Kind, CompareOp::Equal);
    c.kind = InodeKind::File as i32;
    assert!(holds(&mut sm, c.clone()));
    c.op = CompareOp::NotEqual as i32;
    assert!(!holds(&mut sm, c));
    let mut c = cmp("/d/f", CompareTarget::ModRevision, CompareOp::Less);
    c.number = f.mod_revision + 1;
    assert!(holds(&mut sm, c.clone()));
    c.op = CompareOp::Greater as i32;
    assert!(!holds(&mut sm, c));
    let mut c = cmp("/d/f", CompareTarget::CreateRevision, CompareOp::Equal);
    c.number = f.create_revision;
    assert!(holds(&mut sm, c));
    let c = cmp("/d/f", CompareTarget::ContentGen, CompareOp::Equal);
    assert!(holds(&mut sm, c));
    // Absent objects: mod_revision 0, kind unspecified, not existing; through a file = absent.
    let c = cmp("/d/nope", CompareTarget::ModRevision, CompareOp::Equal);
    assert!(holds(&mut sm, c));
    let c = cmp("/d/f/x", CompareTarget::Exists, CompareOp::Equal);
    assert!(holds(&mut sm, c));
    // Tags: the own value is absent on this branch, so only NOT_EQUAL holds.
    let mut c = cmp("/d/f", CompareTarget::Tag, CompareOp::Equal);
    c.tag_key = "k".into();
    c.tag_value = "v".into();
    assert!(!holds(&mut sm, c.clone()));
    c.op = CompareOp::NotEqual as i32;
    assert!(holds(&mut sm, c));
    assert_eq!(revision(&sm.kv), 2, "compares alone change nothing");
}

#[test]
fn txn_limits_and_validation() {
    let mut sm = Sm::new();
    let many = |n: usize| vec![cmp("/", CompareTarget::Exists, CompareOp::Equal); n];
    let (code, msg) = sm
        .txn(TxnOp {
            compares: many(129),
            ..Default::default()
        })
        .expect_err("limit");
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(msg.starts_with("compares:") && msg.contains("128"), "{msg}");
    assert!(sm
        .txn(TxnOp {
            compares: many(128),
            ..Default::default()
        })
        .is_ok());
    let steps = |n: usize| {
        (0..n)
            .map(|i| step(mkdir(&format!("/d{i}"))))
            .collect::<Vec<_>>()
    };
    let (code, msg) = sm
        .txn(TxnOp {
            then_ops: steps(129),
            ..Default::default()
        })
        .expect_err("limit");
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(msg.starts_with("then_ops:") && msg.contains("128"), "{msg}");
    let (code, _) = sm
        .txn(TxnOp {
            else_ops: steps(129),
            ..Default::default()
        })
        .expect_err("limit");
    assert_eq!(code, ErrorCode::InvalidArgument);
    let r = sm
        .txn(TxnOp {
            then_ops: steps(128),
            ..Default::default()
        })
        .expect("128 ok");
    assert_eq!(r.results.len(), 128);
    // Ordered ops are refused where meaningless; unspecified target/op refused.
    for c in [
        cmp("/", CompareTarget::Exists, CompareOp::Less),
        cmp("/", CompareTarget::Kind, CompareOp::Greater),
        cmp("/", CompareTarget::Unspecified, CompareOp::Equal),
        cmp("/", CompareTarget::ModRevision, CompareOp::Unspecified),
        cmp("/", CompareTarget::Tag, CompareOp::Equal),
        cmp("rel", CompareTarget::Exists, CompareOp::Equal),
    ] {
        let (code, msg) = sm
            .txn(TxnOp {
                compares: vec![c],
                ..Default::default()
            })
            .expect_err("invalid");
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(msg.starts_with("compares[0]."), "{msg}");
    }
    let (code, msg) = sm
        .txn(TxnOp {
            then_ops: vec![TxnStep { op: None }],
            ..Default::default()
        })
        .expect_err("missing");
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(msg.starts_with("then_ops[0].op"), "{msg}");
    // A tag step is handed to the tags code (UNIMPLEMENTED until that work is merged, or its
    // own validation); either way, nothing before it in the Txn stays applied.
    let rev = revision(&sm.kv);
    let res = sm.txn(TxnOp {
        then_ops: vec![
            step(mkdir("/before-tag")),
            TxnStep {
                op: Some(txn_step::Op::Tag(TagOp::default())),
            },
        ],
        ..Default::default()
    });
    if let Err((_, msg)) = res {
        assert!(msg.starts_with("then_ops[1].tag"), "{msg}");
        assert_eq!(revision(&sm.kv), rev);
        assert!(sm.stat("/before-tag").is_none());
    }
}
