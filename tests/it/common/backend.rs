//! Which store the tests run on: `WHATSTAT_TEST_BACKEND=sqlite` (the default) or
//! `postgres`. On PostgreSQL every test gets a fresh schema of its own in the database
//! at `WHATSTAT_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped when the test ends. An unreachable PostgreSQL fails the test: never skipped.

use rand::RngCore;

pub const BACKEND_VAR: &str = "WHATSTAT_TEST_BACKEND";
pub const POSTGRES_URL_VAR: &str = "WHATSTAT_TEST_POSTGRES_URL";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend chosen by `WHATSTAT_TEST_BACKEND`.
pub fn backend() -> Backend {
    match std::env::var(BACKEND_VAR).ok().as_deref() {
        None | Some("") | Some("sqlite") => Backend::Sqlite,
        Some("postgres") | Some("postgresql") => Backend::Postgres,
        Some(other) => panic!("{BACKEND_VAR}={other}: use `sqlite` or `postgres`"),
    }
}

/// The PostgreSQL server the tests use (its maintenance database).
pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string())
}

/// A fresh, empty database for one test, gone when this is dropped.
pub struct TestDatabase {
    pub url: String,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDatabase {
    /// On the backend `WHATSTAT_TEST_BACKEND` names.
    pub async fn fresh() -> Self {
        Self::fresh_on(backend()).await
    }

    pub async fn fresh_on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.path().join("whatstat.db").display()),
                dir,
                schema: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut bytes = [0u8; 8];
                rand::rng().fill_bytes(&mut bytes);
                let schema = format!("ws_test_{}", hex::encode(bytes));
                execute(&admin, &format!("CREATE SCHEMA {schema}"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL at {admin} is unreachable or refused CREATE SCHEMA ({e}); \
                             the postgres test pass needs it running (see scripts/test.sh)"
                        )
                    });
                let sep = if admin.contains('?') { '&' } else { '?' };
                TestDatabase {
                    url: format!("{admin}{sep}options=-csearch_path%3D{schema}"),
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop may run inside the test's runtime: use a thread with a runtime of its own.
        let admin = postgres_admin_url();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(execute(
                &admin,
                &format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"),
            ))
            .map_err(|e| format!("{schema}: {e}"))
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("warning: could not drop test schema {e}");
        }
    }
}

/// Runs SQL on a connection of its own.
pub async fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = task.await;
    result
}
