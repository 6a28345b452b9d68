//! `whatstat import`: the bulk path for history. Reads NDJSON in batches, applies each
//! with backfill allowed, and stores how far it got in the same commit as the batch, so
//! an interrupted import resumes exactly where its last commit ended. While it runs it
//! holds the organization's entity states from pruning, so that a status in a later batch
//! still finds the message an earlier batch wrote, however old that message is.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::engine::{EngineError, EventsBody, Ingest, Org};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is shorter than the {position} bytes already imported; it changed since")]
    Shrunk { path: String, position: i64 },
    #[error(
        "the batch starting at line {first_line} (lines counted from byte {resumed_at}) was refused and nothing of it applied; fix it and run again to resume there:\n{details}"
    )]
    Refused {
        first_line: usize,
        resumed_at: i64,
        details: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportReport {
    pub resumed_at_byte: i64,
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub ignored: u64,
}

/// Events per committed batch.
const BATCH: usize = 5_000;

/// How long the hold on pruning lasts once taken (it is taken again when half of that
/// has passed): an import that stops without releasing it (killed, crashed) keeps
/// compaction from pruning the organization's states for at most this long.
pub const HOLD_SECS: i64 = 600;

/// Names the import of this file's content for this organization: path and first bytes.
fn marker(org: &Org, path: &Path, head: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(path.to_string_lossy().as_bytes());
    h.update([0]);
    h.update(head);
    format!("import:{}:{}", org.id, &hex::encode(h.finalize())[..32])
}

pub async fn import(ingest: &Ingest, org: &Org, path: &Path) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let io = |source| ImportError::Io {
        path: shown.clone(),
        source,
    };
    let absolute = std::fs::canonicalize(path).map_err(io)?;
    let mut file = std::fs::File::open(&absolute).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut head = vec![0u8; 64 * 1024];
    let n = file.read(&mut head).map_err(io)?;
    head.truncate(n);
    let name = marker(org, &absolute, &head);
    // Taken before anything is written, so that compaction never sees a batch unheld.
    ingest.hold_states(org, &name, HOLD_SECS).await?;
    let result = import_held(ingest, org, file, &shown, size, &name).await;
    let released = ingest.release_states(org, &name).await;
    let report = result?;
    released?;
    Ok(report)
}

/// The import itself, while the hold named `name` lasts.
async fn import_held(
    ingest: &Ingest,
    org: &Org,
    mut file: std::fs::File,
    shown: &str,
    size: u64,
    name: &str,
) -> Result<ImportReport, ImportError> {
    let io = |source| ImportError::Io {
        path: shown.to_string(),
        source,
    };
    let mut held_since = std::time::Instant::now();
    let start = ingest.progress(name).await?.unwrap_or(0);
    if start as u64 > size {
        return Err(ImportError::Shrunk {
            path: shown.to_string(),
            position: start,
        });
    }
    file.seek(SeekFrom::Start(start as u64)).map_err(io)?;
    let mut reader = BufReader::new(file);
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} import {bar:30} {bytes}/{total_bytes} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start as u64);
    let mut report = ImportReport {
        resumed_at_byte: start,
        ..Default::default()
    };
    if start > 0 {
        tracing::info!(file = %shown, byte = start, "resuming import");
    }
    let mut position = start;
    // Line numbers are only known from where this run starts reading.
    let mut line_no = 0usize;
    loop {
        let mut body = Vec::with_capacity(BATCH * 200);
        let mut lines: Vec<usize> = Vec::with_capacity(BATCH);
        let mut line = Vec::new();
        while lines.len() < BATCH {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io)?;
            if read == 0 {
                break;
            }
            position += read as i64;
            line_no += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            body.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                body.push(b'\n');
            }
            lines.push(line_no);
        }
        if lines.is_empty() {
            break;
        }
        // Renewed well before it ends, and rarely: every renewal is a write of its own.
        if held_since.elapsed().as_secs() >= HOLD_SECS as u64 / 2 {
            ingest.hold_states(org, name, HOLD_SECS).await?;
            held_since = std::time::Instant::now();
        }
        let result = ingest
            .ingest_tracked(
                org,
                EventsBody::Ndjson(&body),
                true,
                Some((name.to_string(), position)),
            )
            .await;
        match result {
            Ok(r) => {
                report.events += lines.len() as u64;
                report.accepted += r.accepted;
                report.duplicates += r.duplicates;
                report.ignored += r.ignored.len() as u64;
            }
            Err(EngineError::InvalidEvents { errors, .. }) => {
                let details = errors
                    .iter()
                    .take(20)
                    .map(|e| {
                        format!(
                            "  line {}: {}",
                            lines.get(e.index).copied().unwrap_or(0),
                            e.message
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                bar.abandon();
                return Err(ImportError::Refused {
                    first_line: lines[0],
                    resumed_at: start,
                    details,
                });
            }
            Err(e) => {
                bar.abandon();
                return Err(e.into());
            }
        }
        bar.set_position(position as u64);
        bar.set_message(format!("{} events", report.events));
    }
    bar.finish_with_message(format!("{} events", report.events));
    Ok(report)
}
