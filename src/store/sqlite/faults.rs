//! Which SQLite failures are the storage being unavailable (full, read-only, failing or
//! held by another process) rather than a fault of the request or of the program.

use rusqlite::ErrorCode;

/// Whether `e` says that the store cannot take the work now but may later: the disk is
/// full (`SQLITE_FULL`), the file system is read-only (`SQLITE_READONLY`), reading or
/// writing the files failed (`SQLITE_IOERR*`), a file cannot be opened
/// (`SQLITE_CANTOPEN`), or another process holds the database past the busy timeout
/// (`SQLITE_BUSY`, `SQLITE_LOCKED`, `SQLITE_PROTOCOL`).
pub(crate) fn is_unavailable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::is_unavailable;
    use crate::store::StoreError;

    fn classified(e: rusqlite::Error) -> StoreError {
        StoreError::from(e)
    }

    #[test]
    fn a_full_database_is_unavailable() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 4;")
            .expect("schema");
        let e = (0..64)
            .find_map(|_| {
                conn.execute("INSERT INTO t VALUES (zeroblob(4096))", [])
                    .err()
            })
            .expect("a database of 4 pages fills up");
        assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
        assert!(is_unavailable(&e));
        assert!(matches!(classified(e), StoreError::Unavailable(m) if m.contains("full")));
    }

    #[test]
    fn a_read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ro.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE t (v INTEGER)"))
            .expect("create");
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
        let e = conn
            .execute("INSERT INTO t VALUES (1)", [])
            .expect_err("a read-only connection refuses writes");
        assert!(is_unavailable(&e), "{e}");
        assert!(matches!(classified(e), StoreError::Unavailable(_)));
    }

    #[test]
    fn a_database_held_by_another_writer_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("busy.db");
        let holder = Connection::open(&path).expect("open");
        holder
            .execute_batch("CREATE TABLE t (v INTEGER); BEGIN IMMEDIATE;")
            .expect("hold the write lock");
        let other = Connection::open(&path).expect("open");
        other
            .execute_batch("PRAGMA busy_timeout = 0")
            .expect("pragma");
        let e = other
            .execute_batch("BEGIN IMMEDIATE")
            .expect_err("the write lock is held");
        assert!(is_unavailable(&e), "{e}");
    }

    #[test]
    fn a_broken_rule_or_a_bad_statement_is_not_unavailable() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .expect("schema");
        let e = conn
            .execute("INSERT INTO t VALUES (1)", [])
            .expect_err("duplicate key");
        assert!(!is_unavailable(&e));
        assert!(matches!(classified(e), StoreError::Backend(_)));
        let e = conn
            .execute("SELECT nothing FROM nowhere", [])
            .expect_err("bad SQL");
        assert!(!is_unavailable(&e));
    }
}
