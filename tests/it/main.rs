//! The integration suite, one binary: the real server on a free loopback port, spoken to
//! over HTTP, on the backend `WHATSTAT_TEST_BACKEND` names (SQLite by default).

mod common;
mod helpers;
#[path = "../recount/mod.rs"]
mod recount;

mod analytics;
mod binary;
mod dashboard;
mod dashboard_api;
mod edge;
mod errors;
mod faults;
mod forwarding;
mod ingest;
mod keys;
mod metrics;
mod postgres_instances;
mod property;
mod retention;
mod spend;
mod store_conformance;
mod webhook;
