//! Storage faults made for real, against the `whatstat serve` binary: a full disk (a small
//! tmpfs), a file system that turns read-only under the server (ext4 on a loop device,
//! after an error), and a private PostgreSQL server stopped and started under load. Each
//! fault answers 503 `storage_unavailable` with `Retry-After`, never 500; reads answer
//! where the store can still read; ingestion heals by itself when the fault ends; every
//! acknowledged event is counted exactly once.
//!
//! These tests mount file systems and run a PostgreSQL server of their own, so they need
//! root (CI runs as root). Run otherwise, they fail saying so. They pick their own stores,
//! whatever `WHATSTAT_TEST_BACKEND` says.

use crate::common;
use crate::helpers;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Served, serve_binary};
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MASTER: &str = "faults-test-master-key";
const ACCOUNT: &str = "acc";

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_string);
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "the storage-fault tests mount file systems (tmpfs, ext4 on a loop device) and run a \
         private PostgreSQL server, which needs root: run `cargo test --test it faults::` as \
         root, as CI does"
    );
}

/// Runs a command that must succeed; its standard output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file system mounted on a temporary directory, unmounted when dropped (a test that
/// fails included; the server using it must be dropped first).
struct Mounted {
    dir: tempfile::TempDir,
    /// The ext4 image behind a loop mount, in a directory of its own.
    _image: Option<tempfile::TempDir>,
}

impl Mounted {
    fn tmpfs(size: &str) -> Mounted {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("utf-8 path").to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        );
        Mounted { dir, _image: None }
    }

    /// ext4 in a file of `mib` MiB on a loop device, turned read-only on its first error.
    fn ext4(mib: u64) -> Mounted {
        let image_dir = tempfile::tempdir().expect("temp dir");
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib * 1024 * 1024))
            .expect("image file");
        let image = image.to_str().expect("utf-8 path").to_string();
        run("mkfs.ext4", &["-q", "-F", &image]);
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Mounted {
            dir,
            _image: Some(image_dir),
        };
        mounted.mount_image();
        mounted
    }

    fn mount_image(&self) {
        let image = self.image().expect("an ext4 image");
        run(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                image.to_str().expect("utf-8 path"),
                self.path_str(),
            ],
        );
    }

    fn image(&self) -> Option<PathBuf> {
        self._image.as_ref().map(|d| d.path().join("disk.img"))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 path")
    }

    /// Bytes free on the file system.
    fn available(&self) -> u64 {
        let out = run("df", &["--output=avail", "-B1", self.path_str()]);
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {out}"))
    }

    /// Makes the ext4 file system read-only as the kernel does after an error: open files
    /// stay open, and every write to them fails from now on.
    fn fail_to_read_only(&self) {
        let source = run("findmnt", &["-no", "SOURCE", self.path_str()]);
        let device = Path::new(source.trim())
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_else(|| panic!("findmnt SOURCE: {source}"))
            .to_string();
        std::fs::write(
            format!("/sys/fs/ext4/{device}/trigger_fs_error"),
            "storage-fault test",
        )
        .expect("trigger an ext4 error");
        let options = run("findmnt", &["-no", "OPTIONS", self.path_str()]);
        assert!(
            std::fs::write(self.path().join("probe"), b"x").is_err(),
            "the file system is still writable ({options})"
        );
    }

    /// After `fail_to_read_only`: unmounts, repairs and mounts the image again, writable.
    fn repair(&self) {
        run("umount", &[self.path_str()]);
        let image = self.image().expect("an ext4 image");
        // 0: clean, 1: errors corrected.
        let fsck = Command::new("e2fsck")
            .args(["-fy", image.to_str().expect("utf-8 path")])
            .output()
            .expect("run e2fsck");
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        self.mount_image();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let path = self.path_str().to_string();
        let done = Command::new("umount")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Still busy (a process holds a file): detach it now, freed when released.
            let _ = Command::new("umount").args(["-l", &path]).status();
        }
    }
}

/// One answer, with its `Retry-After`.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<String>,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.expect("body");
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after,
    }
}

/// Asserts a 503 `storage_unavailable` with a `Retry-After` of a few seconds.
fn assert_unavailable(a: &Answer, what: &str) {
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        a.body
    );
    assert_eq!(a.body["code"], "storage_unavailable", "{what}: {}", a.body);
    assert_error(
        a.status,
        &a.body,
        StatusCode::SERVICE_UNAVAILABLE,
        &["retry"],
    );
    let wait: u64 = a
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: Retry-After is {:?}", a.retry_after));
    assert!((1..=30).contains(&wait), "{what}: Retry-After {wait}");
}

async fn create_org(client: &reqwest::Client, base: &str, name: &str) -> Answer {
    send(
        client
            .post(format!("{base}/api/admin/orgs"))
            .bearer_auth(MASTER)
            .json(&json!({"name": name, "timezone": "UTC"})),
    )
    .await
}

async fn new_org(client: &reqwest::Client, base: &str) -> String {
    let a = create_org(client, base, "Faults").await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body["data"]["api_key"]
        .as_str()
        .expect("api_key")
        .to_string()
}

/// `n` outbound messages of one minute ago, with ids `tag-0`...
fn batch(tag: &str, n: usize) -> Value {
    let t = jiff::Timestamp::now().as_second() - 60;
    Value::Array(
        (0..n)
            .map(|i| outbound(ACCOUNT, &format!("{tag}-{i}"), "text", t))
            .collect(),
    )
}

async fn post(client: &reqwest::Client, base: &str, key: &str, events: &Value) -> Answer {
    send(
        client
            .post(format!("{base}/api/events"))
            .bearer_auth(key)
            .json(events),
    )
    .await
}

async fn messages(client: &reqwest::Client, base: &str, key: &str) -> Answer {
    send(
        client
            .get(format!(
                "{base}/api/analytics/messages?account_id={ACCOUNT}"
            ))
            .bearer_auth(key),
    )
    .await
}

/// The account's `total_sent`, which must be readable.
async fn total_sent(client: &reqwest::Client, base: &str, key: &str) -> i64 {
    let a = messages(client, base, key).await;
    assert_eq!(a.status, StatusCode::OK, "read the totals: {}", a.body);
    summary(&a.body["data"]).0
}

async fn assert_healthy(client: &reqwest::Client, base: &str) {
    let a = send(client.get(format!("{base}/health"))).await;
    assert_eq!(a.status, StatusCode::OK, "/health: {}", a.body);
}

/// Posts `events` until they are acknowledged (within `within`); their `(accepted,
/// duplicates)` and how long it took.
async fn post_until_acknowledged(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    events: &Value,
    within: Duration,
) -> ((u64, u64), Duration) {
    let started = Instant::now();
    loop {
        let a = post(client, base, key, events).await;
        match a.status {
            StatusCode::OK => return (counts(&a.body), started.elapsed()),
            StatusCode::SERVICE_UNAVAILABLE => assert_unavailable(&a, "a retry"),
            other => panic!("a retry answered {other}: {}", a.body),
        }
        assert!(
            started.elapsed() < within,
            "not acknowledged within {within:?}: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serve_sqlite(name: &'static str, dir: &Path) -> Served {
    let url = format!("sqlite://{}", dir.join("whatstat.db").display());
    serve_binary(name, &url, MASTER, &[], &[], None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_answering_reads_and_heals_when_space_returns() {
    require_root();
    let disk = Mounted::tmpfs("16m");
    let server = serve_sqlite("full-disk", disk.path());
    let client = reqwest::Client::new();
    let key = new_org(&client, &server.base).await;

    // Leave the store about 1 MiB.
    let filler = disk.path().join("filler");
    let room = disk.available().saturating_sub(1024 * 1024);
    std::fs::write(&filler, vec![0xa5u8; usize::try_from(room).expect("size")])
        .expect("write the filler");

    const N: usize = 500;
    let mut acknowledged = 0;
    let mut batches = 0;
    let mut refused = Vec::new();
    let started = Instant::now();
    while refused.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the store took {acknowledged} events and never filled"
        );
        let events = batch(&format!("a{batches}"), N);
        batches += 1;
        let a = post(&client, &server.base, &key, &events).await;
        match a.status {
            StatusCode::OK => {
                assert_eq!(counts(&a.body), (N as u64, 0));
                acknowledged += N as u64;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_unavailable(&a, "a write to a full disk");
                refused.push(events);
            }
            other => panic!("a write to a full disk answered {other}: {}", a.body),
        }
    }
    let filled_after = acknowledged;
    // While it is full: writes are refused (or, where a page is free, taken), never 500;
    // reads answer, with every acknowledged event.
    for i in 0..3 {
        let events = batch(&format!("b{i}"), N);
        let a = post(&client, &server.base, &key, &events).await;
        match a.status {
            StatusCode::OK => acknowledged += counts(&a.body).0,
            _ => {
                assert_unavailable(&a, "a write to a full disk");
                refused.push(events);
            }
        }
    }
    assert_healthy(&client, &server.base).await;
    assert_eq!(
        total_sent(&client, &server.base, &key).await,
        acknowledged as i64
    );

    // Space returns: the refused batches are taken whole (nothing of them was stored),
    // without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let mut heal = None;
    for events in &refused {
        let (c, took) =
            post_until_acknowledged(&client, &server.base, &key, events, Duration::from_secs(10))
                .await;
        heal.get_or_insert(took);
        assert_eq!(c, (N as u64, 0), "a refused batch was partly stored");
        acknowledged += c.0;
    }
    for i in 0..2 {
        let a = post(&client, &server.base, &key, &batch(&format!("c{i}"), N)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        acknowledged += counts(&a.body).0;
    }
    assert_eq!(
        total_sent(&client, &server.base, &key).await,
        acknowledged as i64
    );
    eprintln!(
        "full disk: refused after {filled_after} events in 1 MiB; {} batch(es) refused; healed {:?} after space returned",
        refused.len(),
        heal.unwrap_or_default()
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_turned_read_only_refuses_writes_with_503_and_keeps_answering_reads() {
    require_root();
    let disk = Mounted::ext4(32);
    let server = serve_sqlite("read-only", disk.path());
    let client = reqwest::Client::new();
    let key = new_org(&client, &server.base).await;
    let mut acknowledged = 0;
    for i in 0..3 {
        let a = post(&client, &server.base, &key, &batch(&format!("a{i}"), 200)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        acknowledged += counts(&a.body).0;
    }

    disk.fail_to_read_only();
    let refused = batch("r", 200);
    for _ in 0..3 {
        let a = post(&client, &server.base, &key, &refused).await;
        assert_unavailable(&a, "events posted to a read-only store");
    }
    let a = create_org(&client, &server.base, "Another").await;
    assert_unavailable(&a, "an organization created on a read-only store");
    assert_healthy(&client, &server.base).await;
    assert_eq!(
        total_sent(&client, &server.base, &key).await,
        acknowledged as i64
    );

    // The file system repaired and the server started again: every acknowledged event is
    // there, none of the refused ones, and ingestion works.
    drop(server);
    disk.repair();
    let server = serve_sqlite("read-only-repaired", disk.path());
    assert_eq!(
        total_sent(&client, &server.base, &key).await,
        acknowledged as i64
    );
    let a = post(&client, &server.base, &key, &refused).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(counts(&a.body), (200, 0));
    assert_eq!(
        total_sent(&client, &server.base, &key).await,
        acknowledged as i64 + 200
    );
    drop(server);
}

/// A PostgreSQL server of the test's own, in a temporary directory, run as `postgres`;
/// stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn init() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("temp dir");
        run("chown", &["postgres:", dir.path().to_str().expect("utf-8")]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = PrivatePostgres { dir, bin, port };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> String {
        let tool = self.bin.join(tool).display().to_string();
        let mut all = vec!["-u", "postgres", "--", tool.as_str()];
        all.extend_from_slice(args);
        run("runuser", &all)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=32MB -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    /// Stops the server the way a crash does (`immediate`) or an operator does (`fast`).
    fn stop(&self, mode: &str) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "30", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &pg_ctl, "-D", &self.data()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// What one loader saw: its batches' event ids, `(accepted, duplicates)` summed, how many
/// 503 answers came, and any other answer.
#[derive(Default)]
struct Load {
    ids: Vec<String>,
    accepted: u64,
    duplicates: u64,
    /// Duplicates in batches acknowledged at their first try (there must be none).
    first_try_duplicates: u64,
    unavailable: u64,
    unexpected: Vec<String>,
}

/// Posts batches of 20 events, alternately to each of `bases`, until `stop`; each batch
/// is posted again after a 503 until it is acknowledged.
async fn load(
    bases: Vec<String>,
    key: String,
    tag: String,
    stop: Arc<AtomicBool>,
    successes: Arc<Mutex<Vec<Instant>>>,
) -> Load {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut seen = Load::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let events = batch(&format!("{tag}-{n}"), 20);
        n += 1;
        let mut tries = 0;
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let base = &bases[(n + tries) % bases.len()];
            tries += 1;
            let a = match client
                .post(format!("{base}/api/events"))
                .bearer_auth(&key)
                .json(&events)
                .send()
                .await
            {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let text = resp.text().await.unwrap_or_default();
                    Answer {
                        status,
                        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                        retry_after,
                    }
                }
                Err(e) => {
                    seen.unexpected.push(format!("no answer: {e}"));
                    return seen;
                }
            };
            match a.status {
                StatusCode::OK => {
                    let (acc, dup) = counts(&a.body);
                    seen.accepted += acc;
                    seen.duplicates += dup;
                    if tries == 1 {
                        seen.first_try_duplicates += dup;
                    }
                    if let Ok(mut t) = successes.lock() {
                        t.push(Instant::now());
                    }
                    break;
                }
                StatusCode::SERVICE_UNAVAILABLE
                    if a.body["code"] == "storage_unavailable"
                        && a.retry_after
                            .as_deref()
                            .is_some_and(|v| v.parse::<u64>().is_ok()) =>
                {
                    seen.unavailable += 1;
                }
                other => {
                    seen.unexpected
                        .push(format!("{other} {:?}: {}", a.retry_after, a.body));
                    return seen;
                }
            }
            if Instant::now() > deadline {
                seen.unexpected
                    .push(format!("batch {tag}-{n} not acknowledged within 25 s"));
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.ids
            .extend((0..20).map(|i| format!("{tag}-{}-{i}", n - 1)));
    }
    seen
}

/// Reads a live stream until an `update` event arrives or `within` passes.
async fn next_update(r: &mut reqwest::Response, within: Duration) -> bool {
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if buf.contains("event: update\n") {
            return true;
        }
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(c))) => buf.push_str(&String::from_utf8_lossy(&c)),
            _ => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_answers_503_and_heals_when_it_is_back() {
    require_root();
    let pg = PrivatePostgres::init();
    pg.start();
    let url = pg.url();
    let workdir = tempfile::tempdir().expect("temp dir");
    let env = [("WHATSTAT_SECRET_KEY", "faults-test-secret")];
    let a = serve_binary("pg-a", &url, MASTER, &[], &env, Some(workdir.path()));
    let b = serve_binary("pg-b", &url, MASTER, &[], &env, Some(workdir.path()));
    let client = reqwest::Client::new();
    let key = new_org(&client, &a.base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(Mutex::new(Vec::new()));
    // The first acknowledgement after an instant, once there is one.
    let first_success_after = |since: Instant| {
        successes
            .lock()
            .ok()
            .and_then(|t| t.iter().filter(|t| **t > since).min().copied())
    };
    let loaders: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(load(
                vec![a.base.clone(), b.base.clone()],
                key.clone(),
                format!("l{i}"),
                stop.clone(),
                successes.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Stopped as by a crash: writes and reads answer 503 on both instances.
    pg.stop("immediate");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for base in [&a.base, &b.base] {
        let r = post(&client, base, &key, &batch("down", 1)).await;
        assert_unavailable(&r, "events posted while PostgreSQL is down");
        let r = messages(&client, base, &key).await;
        assert_unavailable(&r, "a read while PostgreSQL is down");
        assert_healthy(&client, base).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Started again: ingestion heals by itself.
    let starting = Instant::now();
    pg.start();
    let restarted = Instant::now();
    let healed = loop {
        if let Some(t) = first_success_after(starting) {
            break t;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "no write acknowledged within 15 s of PostgreSQL's restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Stopped the way an operator does (`fast`: sessions are told 57P01), briefly.
    pg.stop("fast");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = post(&client, &a.base, &key, &batch("down-fast", 1)).await;
    assert_unavailable(&r, "events posted while PostgreSQL is down");
    let starting_fast = Instant::now();
    pg.start();
    let restarted_fast = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    let mut ids = HashSet::new();
    let (mut accepted, mut duplicates, mut unavailable, mut first_try_duplicates) = (0, 0, 0, 0);
    for l in loaders {
        let seen = l.await.expect("loader");
        assert!(seen.unexpected.is_empty(), "{:?}", seen.unexpected);
        for id in seen.ids {
            assert!(ids.insert(id), "an id was posted by two loaders");
        }
        accepted += seen.accepted;
        duplicates += seen.duplicates;
        unavailable += seen.unavailable;
        first_try_duplicates += seen.first_try_duplicates;
    }
    let fast_healed =
        first_success_after(starting_fast).expect("a write acknowledged after the second restart");
    assert!(
        unavailable > 0,
        "the loaders never saw a 503 while PostgreSQL was down"
    );
    // Every acknowledged event counted once: a batch whose commit was cut off by the stop
    // may have been stored, and then came back as duplicates, never counted twice.
    assert_eq!(first_try_duplicates, 0);
    assert_eq!(accepted + duplicates, ids.len() as u64);
    assert_eq!(total_sent(&client, &a.base, &key).await, ids.len() as i64);
    assert_eq!(total_sent(&client, &b.base, &key).await, ids.len() as i64);

    // The instances hear each other's commits again: the listening connection was made
    // again by itself.
    let relay_started = Instant::now();
    let mut stream = client
        .get(format!("{}/api/stream", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let mut relayed = false;
    for i in 0..15 {
        let r = post(&client, &a.base, &key, &batch(&format!("relay{i}"), 1)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if next_update(&mut stream, Duration::from_secs(1)).await {
            relayed = true;
            break;
        }
    }
    assert!(
        relayed,
        "instance b heard no commit of instance a within 15 s of the restart"
    );
    let after = |t: Instant, since: Instant| t.saturating_duration_since(since);
    eprintln!(
        "postgres restart: {} events acknowledged, {duplicates} reported as duplicates on a retry, {unavailable} answers 503. \
         Immediate stop: `pg_ctl start` called {:?} after the stop took {:?}; first write acknowledged {:?} after it was called. \
         Fast stop: `pg_ctl start` took {:?}; first write acknowledged {:?} after it was called. \
         The relay heard a commit {:?} after the check began.",
        ids.len(),
        after(starting, stopped),
        after(restarted, starting),
        after(healed, starting),
        after(restarted_fast, starting_fast),
        after(fast_healed, starting_fast),
        relay_started.elapsed()
    );
    drop(stream);
    drop(a);
    drop(b);
}
