//! `metactl` commands run end to end (parse, call, render) against a fake metad node.

#![allow(clippy::unwrap_used)]

mod common;

use common::{serve, Node};

#[tokio::test]
async fn metactl_commands_render_json() {
    use clap::Parser;
    use metad_client::cli::{commands, Cli};

    let a = Node::new(1, vec![]);
    let addr = serve(&a).await;
    let parse = |args: &[&str]| {
        let base = ["metactl", "--endpoints", addr.as_str(), "-o", "json"];
        Cli::try_parse_from(base.iter().chain(args.iter())).unwrap()
    };
    let out = commands::execute(&parse(&["cluster", "status"]))
        .await
        .unwrap();
    assert_eq!(out.json["responder_id"], 1);
    let out = commands::execute(&parse(&["debug", "register", "put", "k", "v"]))
        .await
        .unwrap();
    assert_eq!(out.json["value"], "v");
    assert_eq!(out.json["node_id"], 1);
    let out = commands::execute(&parse(&["cluster", "node-status"]))
        .await
        .unwrap();
    assert_eq!(out.json["id"], 1);
    let text = commands::render(&out, true);
    assert!(serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .is_object());
}
