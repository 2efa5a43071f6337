//! The one error type of this crate.

/// Everything a store operation can fail with.
///
/// The writer's retry loop needs one question answered: [`StoreError::is_retryable`]. A batch
/// whose [`crate::FlowWrite::write_flows`] failed was not written at all (each batch is one
/// transaction), so retrying the whole batch after a retryable error stores it exactly once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The connection to the database server is gone or could not be made (server restart,
    /// `pg_terminate_backend`, network loss). The store reconnects on its next call.
    #[error("database connection lost: {0}")]
    ConnectionLost(#[source] postgres::Error),
    /// Any other PostgreSQL error.
    #[error("PostgreSQL: {0}")]
    Postgres(#[source] postgres::Error),
    /// An SQLite error.
    #[error("SQLite: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// The ClickHouse server could not be reached, or the connection broke during a request
    /// (server down or restarting, network loss, timeout). The next call tries again.
    #[error("ClickHouse unreachable: {0}")]
    ClickHouseUnreachable(#[source] ureq::Error),
    /// The ClickHouse server answered with an error.
    #[error("ClickHouse (HTTP {status}, code {code}): {message}")]
    ClickHouse {
        /// HTTP status of the reply.
        status: u16,
        /// ClickHouse's error code (`Code: N` of the reply; 0 when the reply has none).
        code: u32,
        /// The first line of the server's message.
        message: String,
    },
    /// A ClickHouse reply this crate cannot read (a row cut short, a value it never writes).
    #[error("unexpected ClickHouse reply: {0}")]
    ClickHouseReply(&'static str),
    /// A setting is missing or malformed.
    #[error("invalid store setting {setting}: {why}")]
    Config {
        /// The setting (URL, environment variable or field) at fault.
        setting: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A flow's timestamp is outside the range both backends store (years 1 to 9999 UTC).
    #[error("flow timestamp {ts_micros} us is outside years 1..=9999")]
    TimestampOutOfRange {
        /// The offending value, microseconds since the Unix epoch.
        ts_micros: i64,
    },
    /// A value read from the database does not fit its Rust type (for instance a negative
    /// interface index written by hand): the row was not produced by this crate.
    #[error("column {column} holds {value}, which does not fit")]
    BadValue {
        /// The column name.
        column: &'static str,
        /// The value found.
        value: i64,
    },
    /// The database carries a schema newer than this build understands.
    #[error("schema version {found} is newer than the newest this build knows ({supported})")]
    SchemaTooNew {
        /// Version found in the migrations table.
        found: u32,
        /// Newest version this build can apply.
        supported: u32,
    },
    /// A [`crate::query::Query`] the backends cannot run (see [`crate::query::Query::validate`]).
    #[error("invalid query: {0}")]
    Query(&'static str),
}

impl StoreError {
    /// Whether retrying the same operation later can succeed: connection loss, a server that is
    /// starting or shutting down, serialization failures and deadlocks (PostgreSQL), a busy or
    /// locked database file (SQLite). Configuration and data errors are not retryable.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::ConnectionLost(_) => true,
            StoreError::Postgres(e) => e.code().is_some_and(|c| {
                let c = c.code();
                // 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available
                matches!(c, "40001" | "40P01" | "55P03")
            }),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            StoreError::ClickHouseUnreachable(_) => true,
            // 159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 209 SOCKET_TIMEOUT,
            // 210 NETWORK_ERROR, 216 QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING (an insert of
            // the batch still runs), 242 TABLE_IS_READ_ONLY, 252 TOO_MANY_PARTS,
            // 319 UNKNOWN_STATUS_OF_INSERT; or no code and 502/503/504 (a proxy, a server
            // shutting down)
            StoreError::ClickHouse { status, code, .. } => {
                matches!(code, 159 | 202 | 209 | 210 | 216 | 242 | 252 | 319)
                    || (*code == 0 && matches!(status, 502..=504))
            }
            _ => false,
        }
    }

    /// Classifies a PostgreSQL error: connection-level failures become
    /// [`StoreError::ConnectionLost`].
    pub(crate) fn pg(e: postgres::Error) -> StoreError {
        let lost = e.is_closed()
            || e.code().is_some_and(|c| {
                let c = c.code();
                // class 08 connection exception; 57P01 admin_shutdown (pg_terminate_backend),
                // 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up)
                c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
            })
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if lost {
            StoreError::ConnectionLost(e)
        } else {
            StoreError::Postgres(e)
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}
