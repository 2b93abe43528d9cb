//! Tests of the `metactl` grammar, output views and error reporting (no server needed).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::args::*;
use super::commands::{client_config, exit_code, hint, render, Output, ADD_LEARNER_WAIT_MIN};
use super::output::{ClusterStatusView, MemberListView, View};
use crate::{pb, ClientError, ErrorCode};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("metactl").chain(args.iter().copied()))
}

#[test]
fn grammar_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_target_the_dev_cluster() {
    // The env var would override the default; only check when it is not set.
    if std::env::var_os("METAD_ENDPOINTS").is_some() {
        return;
    }
    let cli = parse(&["cluster", "status"]).unwrap();
    assert_eq!(
        cli.endpoints.0,
        vec![
            "http://127.0.0.1:7001",
            "http://127.0.0.1:7002",
            "http://127.0.0.1:7003"
        ]
    );
    assert_eq!(cli.output, OutputFormat::Table);
    assert_eq!(cli.timeout, Duration::from_secs(10));
    assert!(matches!(cli.command, Command::Cluster(ClusterCmd::Status)));
    let cfg = client_config(&cli);
    assert_eq!(cfg.total_timeout, Duration::from_secs(10));
    assert_eq!(cfg.request_timeout, Duration::from_secs(5));
}

#[test]
fn add_learner_wait_outlasts_the_leaders_own_limit() {
    let base = [
        "member",
        "add-learner",
        "--id",
        "4",
        "--site",
        "s",
        "--peer-addr",
        "h:1",
        "--client-addr",
        "h:2",
    ];
    let cli = parse(&base).expect("parse");
    assert_eq!(client_config(&cli).total_timeout, Duration::from_secs(10));
    let mut waiting = base.to_vec();
    waiting.push("--wait");
    let cli = parse(&waiting).expect("parse");
    assert_eq!(client_config(&cli).total_timeout, ADD_LEARNER_WAIT_MIN);
    waiting.extend(["--timeout", "10m"]);
    let cli = parse(&waiting).expect("parse");
    assert_eq!(client_config(&cli).total_timeout, Duration::from_secs(600));
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let cli = parse(&[
        "member",
        "list",
        "-o",
        "json",
        "--endpoints",
        "a:1,b:2",
        "--timeout",
        "500ms",
    ])
    .unwrap();
    assert_eq!(cli.output, OutputFormat::Json);
    assert_eq!(cli.endpoints.0, vec!["http://a:1", "http://b:2"]);
    assert_eq!(cli.timeout, Duration::from_millis(500));
    assert!(matches!(cli.command, Command::Member(MemberCmd::List)));
}

#[test]
fn member_commands_parse() {
    let cli = parse(&[
        "member",
        "add-learner",
        "--id",
        "4",
        "--site",
        "dc2",
        "--peer-addr",
        "10.0.0.4:7101",
        "--client-addr",
        "10.0.0.4:7001",
        "--wait",
    ])
    .unwrap();
    match cli.command {
        Command::Member(MemberCmd::AddLearner(a)) => {
            assert_eq!((a.id, a.site.as_str(), a.wait), (4, "dc2", true));
            assert_eq!(a.peer_addr, "10.0.0.4:7101");
            assert_eq!(a.client_addr, "10.0.0.4:7001");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&["member", "promote", "4"]).unwrap().command,
        Command::Member(MemberCmd::Promote { id: 4 })
    ));
    assert!(matches!(
        parse(&["member", "remove", "5"]).unwrap().command,
        Command::Member(MemberCmd::Remove { id: 5 })
    ));
    assert!(
        parse(&["member", "add-learner", "--id", "4"]).is_err(),
        "missing required flags"
    );
    assert!(parse(&["member", "promote", "four"]).is_err());
}

#[test]
fn debug_register_commands_parse() {
    match parse(&["debug", "register", "incr", "hits", "-3"])
        .unwrap()
        .command
    {
        Command::Debug(DebugCmd::Register(RegisterCmd::Incr { key, delta })) => {
            assert_eq!((key.as_str(), delta), ("hits", -3));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["debug", "register", "incr", "hits"])
        .unwrap()
        .command
    {
        Command::Debug(DebugCmd::Register(RegisterCmd::Incr { delta, .. })) => assert_eq!(delta, 1),
        other => panic!("{other:?}"),
    }
    match parse(&[
        "debug",
        "register",
        "get",
        "k",
        "--node",
        "2",
        "--serializable",
        "--min-revision",
        "9",
    ])
    .unwrap()
    .command
    {
        Command::Debug(DebugCmd::Register(RegisterCmd::Get {
            node,
            serializable,
            min_revision,
            ..
        })) => {
            assert_eq!((node, serializable, min_revision), (Some(2), true, 9));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn usage_errors_are_exit_code_2() {
    for bad in [
        &["cluster"][..],
        &["nonsense"],
        &["cluster", "status", "--endpoints", "no-port"],
        &["cluster", "status", "--endpoints", "https://a:1"],
        &["cluster", "status", "--timeout", "0s"],
        &["cluster", "status", "--timeout", "5h"],
        &["cluster", "status", "-o", "yaml"],
    ] {
        let err = parse(bad).expect_err(&format!("{bad:?}"));
        assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
    }
    assert_eq!(exit_code(&ClientError::InvalidConfig("x".into())), 2);
    assert_eq!(
        exit_code(&ClientError::rpc(ErrorCode::InvalidArgument, "x")),
        2
    );
    assert_eq!(exit_code(&ClientError::rpc(ErrorCode::NotFound, "x")), 1);
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn transport_errors_hint_at_metad_dev_only_for_default_endpoints() {
    let defaults = crate::endpoint::parse_list(DEFAULT_ENDPOINTS).unwrap();
    let err = ClientError::Transport {
        endpoint: "http://127.0.0.1:7001".into(),
        message: "refused".into(),
    };
    assert!(err.to_string().starts_with("UNAVAILABLE: "));
    let dev = parse(&["cluster", "status", "--endpoints", DEFAULT_ENDPOINTS]).unwrap();
    assert!(hint(&err, &dev, &defaults).unwrap().contains("metad dev"));
    let other = parse(&["cluster", "status", "--endpoints", "10.0.0.1:7001"]).unwrap();
    let h = hint(&err, &other, &defaults).unwrap();
    assert!(
        !h.contains("metad dev") && h.contains("10.0.0.1:7001"),
        "{h}"
    );
}

fn sample_status() -> pb::StatusResponse {
    let st = |id: u64, state: &str| pb::NodeStatusResponse {
        id,
        state: state.into(),
        term: 3,
        commit_index: 20,
        applied_index: 19,
        revision: 11,
        ..Default::default()
    };
    let node = |id: u64, status: Option<pb::NodeStatusResponse>, error: &str| pb::NodeReport {
        id,
        site: format!("dc{id}"),
        client_addr: format!("127.0.0.1:700{id}"),
        role: pb::MemberRole::Voter as i32,
        status,
        error: error.into(),
    };
    pb::StatusResponse {
        leader_id: 2,
        leader_addr: "127.0.0.1:7002".into(),
        term: 3,
        responder_id: 1,
        nodes: vec![
            node(1, Some(st(1, "follower")), ""),
            node(2, Some(st(2, "leader")), ""),
            node(3, None, "connection refused"),
        ],
    }
}

#[test]
fn cluster_status_table_marks_leader_and_errors() {
    let t = ClusterStatusView::from(sample_status()).table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("leader: 2 (127.0.0.1:7002)  term: 3"),
        "{t}"
    );
    assert!(lines[1].starts_with("ID  SITE  ROLE   STATE"), "{t}");
    assert!(lines[1].ends_with("ADDR            ERROR"), "{t}");
    assert!(lines[3].starts_with("2*  dc2   voter  leader"), "{t}");
    assert!(
        lines[4].contains("unreachable") && lines[4].ends_with("connection refused"),
        "{t}"
    );
}

#[test]
fn cluster_status_json_is_one_object_with_stable_fields() {
    let out = Output {
        json: serde_json::to_value(ClusterStatusView::from(sample_status())).unwrap(),
        table: String::new(),
    };
    let text = render(&out, true);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["leader_id"], 2);
    assert_eq!(v["nodes"][1]["is_leader"], true);
    assert_eq!(v["nodes"][1]["status"]["state"], "leader");
    assert_eq!(v["nodes"][2]["status"], serde_json::Value::Null);
    assert_eq!(v["nodes"][2]["error"], "connection refused");
    assert_eq!(v["nodes"][0]["role"], "voter");
}

#[test]
fn member_list_marks_leader() {
    let resp = pb::MemberListResponse {
        leader_id: 1,
        members: vec![
            pb::Member {
                id: 1,
                site: "a".into(),
                role: pb::MemberRole::Voter as i32,
                ..Default::default()
            },
            pb::Member {
                id: 4,
                site: "b".into(),
                role: pb::MemberRole::Learner as i32,
                ..Default::default()
            },
        ],
    };
    let t = MemberListView::from(resp).table();
    assert!(t.contains("1*  a     voter"), "{t}");
    assert!(t.contains("4   b     learner"), "{t}");
}
