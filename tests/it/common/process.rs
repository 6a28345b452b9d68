//! The real `whatstat` binary as a child process, for tests that need separate processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// A running `whatstat serve`, killed on drop.
pub struct Served {
    pub child: Child,
    pub base: String,
    /// Every line it logged so far (colours removed).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes terminal colour sequences from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `whatstat serve --listen 127.0.0.1:0 --database-url URL --master-key KEY` plus
/// `extra` arguments and `env`, logs its output prefixed with `name`, and returns once it
/// logs the address it listens on (as text, or as JSON with `--log-format json`).
pub fn serve_binary(
    name: &'static str,
    database_url: &str,
    master_key: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    workdir: Option<&Path>,
) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whatstat"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--master-key",
        master_key,
    ])
    .args(extra)
    .env("NO_COLOR", "1")
    .env("WHATSTAT_LOG", "info")
    .env_remove("RUST_LOG")
    .env_remove("WHATSTAT_DATABASE_URL")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("start the whatstat binary");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            eprintln!("{name}: {line}");
            // Kept before the address is handed over, so that the caller sees the line.
            if let Ok(mut kept) = kept.lock() {
                kept.push(line.clone());
            }
            if !sent && line.contains("whatstat listening") {
                let addr = match serde_json::from_str::<Value>(&line) {
                    Ok(json) => json["addr"].as_str().map(str::to_string),
                    Err(_) => line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .map(str::to_string),
                };
                let _ = tx.send(addr);
                sent = true;
            }
            // Keep draining so the child never blocks on a full pipe.
        }
    });
    let mut served = Served {
        child,
        base: String::new(),
        log,
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("{name} logs `whatstat listening` within 90 s"))
        .expect("the listening line names addr=");
    served.base = format!("http://{addr}");
    served
}

/// Sends a request; the status and the body as JSON (or as a string if it is not JSON).
pub async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
