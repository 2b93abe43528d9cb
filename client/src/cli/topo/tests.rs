//! Tests of the topology/location CLI: size units, labels, grammar, views.

use super::*;
use crate::cli::args::{Cli, Command};
use clap::Parser;

#[test]
fn sizes_accept_decimal_and_binary_units() {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("123", 123),
        ("123B", 123),
        ("500MB", 500_000_000),
        ("500mb", 500_000_000),
        ("10GiB", 10 << 30),
        ("10 GiB", 10 << 30),
        ("1.5TiB", 3 << 39),
        ("1.5KB", 1500),
        ("2k", 2000),
        ("1Ki", 1024),
        (".5KiB", 512),
        ("1_000", 1000),
        ("15PiB", 15 << 50),
    ];
    for (s, want) in cases {
        assert_eq!(parse_size(s), Ok(*want), "{s}");
    }
    for bad in [
        "",
        "GiB",
        "1.2.3MB",
        "10XB",
        "-1",
        "0.1B",
        "1.0000001KB",
        "16384PiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad} should be refused");
    }
    assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
    assert!(parse_size("18446744073709551616").is_err());
}

#[test]
fn labels_parse_key_equals_value() {
    assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert_eq!(parse_label("a="), Ok(("a".into(), String::new())));
    assert!(parse_label("=b").is_err());
    assert!(parse_label("ab").is_err());
}

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("metactl").chain(args.iter().copied()))
        .expect("test input is valid")
}

#[test]
fn grammar_of_topology_commands() {
    let cli = parse(&[
        "silo",
        "add",
        "nas1",
        "--site",
        "a",
        "--kind",
        "nfs",
        "--tier",
        "warm",
        "--capacity",
        "1.5TiB",
        "--cost",
        "0.02",
        "--root",
        "/mnt/nas1",
        "--label",
        "rack=r1",
    ]);
    match cli.command {
        Command::Topo(TopoCmd::Silo(SiloCmd::Add(a))) => {
            assert_eq!(a.capacity, 3 << 39);
            assert_eq!(a.kind, KindArg::Nfs);
            assert_eq!(a.tier, TierArg::Warm);
            assert_eq!(a.labels, vec![("rack".into(), "r1".into())]);
        }
        c => panic!("{c:?}"),
    }
    let cli = parse(&[
        "silo", "set", "nas1", "--state", "draining", "--used", "10GiB",
    ]);
    assert!(matches!(
        cli.command,
        Command::Topo(TopoCmd::Silo(SiloCmd::Set(SiloSetArgs {
            state: Some(StateArg::Draining),
            used: Some(u),
            ..
        }))) if u == 10 << 30
    ));
    let cli = parse(&["locate", "/a/b", "--site", "x", "-o", "json"]);
    assert!(matches!(cli.command, Command::Topo(TopoCmd::Locate(ref l)) if l.site == "x"));
    let cli = parse(&["record-write", "/a", "--silo", "s", "--size", "500MB"]);
    assert!(
        matches!(cli.command, Command::Topo(TopoCmd::RecordWrite(ref r)) if r.size == 500_000_000)
    );
    assert!(
        Cli::try_parse_from(["metactl", "silo", "add", "x", "--site", "a", "--kind", "tape"])
            .is_err()
    );
    assert!(Cli::try_parse_from(["metactl", "site", "add", "x", "--label", "nokey"]).is_err());
}

#[test]
fn locate_view_marks_same_site_and_says_when_nothing_is_readable() {
    let v = LocateView::new(
        "/f".into(),
        pb::LocateResponse {
            ino: 7,
            content_gen: 2,
            size: 2048,
            instances: vec![pb::LocatedInstance {
                instance: Some(pb::Instance {
                    silo: "s1".into(),
                    ..Default::default()
                }),
                silo: Some(pb::Silo {
                    name: "s1".into(),
                    site: "a".into(),
                    tier: pb::SiloTier::Hot as i32,
                    kind: pb::SiloKind::Nvme as i32,
                    ..Default::default()
                }),
                same_site: true,
            }],
            ..Default::default()
        },
    );
    let t = v.table();
    assert!(
        t.contains("a*") && t.contains("nvme") && t.contains("hot"),
        "{t}"
    );
    let json = serde_json::to_value(&v).expect("test input is valid");
    assert_eq!(json["instances"][0]["tier"], "hot");
    let empty = LocateView::new("/g".into(), pb::LocateResponse::default());
    assert!(empty.table().contains("no readable copy"));
}
