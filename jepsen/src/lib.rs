//! metad-jepsen: a black-box consistency harness. It starts real `metad` processes (each in
//! its own network namespace), drives them through the public client library while nemeses
//! inject faults (partitions, kills, pauses, clock skew, membership changes, WAN latency),
//! records every operation, and checks the history.
//!
//! Modules: `history` (the record and its format), `workload` (clients per workload),
//! `check` (pure checkers), `control` (processes, namespaces, the peer proxy), `nemesis`
//! (fault schedules), `report` (results folder: verdict, plots, summary), `runner` (one run).

pub mod check;
pub mod control;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod runner;
pub mod workload;
