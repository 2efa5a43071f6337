//! ClickHouse's HTTP interface through `ureq`: statements in the body, `INSERT … FORMAT
//! RowBinary` with the rows in the body, replies in RowBinary streamed row by row.
//!
//! Only what 18.16 and current releases both accept: the `database` URL parameter, settings as
//! URL parameters, HTTP basic authentication, `Code: N, …` error bodies with a non-200 status.

use std::io::Read;
use std::ops::ControlFlow;
use std::time::Duration;

use crate::StoreError;

/// Error replies are read up to this size.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Small replies (counts, marks, the exporters list) are read up to this size.
const MAX_SMALL_REPLY: u64 = 64 * 1024 * 1024;

/// What [`Http::query_rows`] hands each row to: continue or stop, or fail the read.
pub(crate) type RowSink<'a> = dyn FnMut(&[u8]) -> Result<ControlFlow<()>, StoreError> + 'a;

/// One server, one database, one connection pool.
pub(crate) struct Http {
    agent: ureq::Agent,
    base: String,
    database: String,
    auth: Option<String>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // no password
        f.debug_struct("Http")
            .field("base", &self.base)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub(crate) fn new(
        url: &str,
        database: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            // below the server's keep_alive_timeout (3 s by default): a pooled connection the
            // server already closed would fail a request that never reached it
            .max_idle_age(Duration::from_secs(2))
            .build()
            .new_agent();
        let auth = (user.is_some() || password.is_some()).then(|| {
            let pair = format!("{}:{}", user.unwrap_or("default"), password.unwrap_or(""));
            format!("Basic {}", base64(pair.as_bytes()))
        });
        Http {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            database: database.to_owned(),
            auth,
        }
    }

    fn post(
        &self,
        in_database: bool,
        url_query: Option<&str>,
        settings: &[(&str, String)],
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        let mut url = format!("{}/?", self.base);
        if in_database {
            url.push_str("database=");
            url.push_str(&percent(&self.database));
        }
        if let Some(q) = url_query {
            url.push_str("&query=");
            url.push_str(&percent(q));
        }
        for (k, v) in settings {
            url.push('&');
            url.push_str(k);
            url.push('=');
            url.push_str(&percent(v));
        }
        let mut req = self.agent.post(&url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.send(body).map_err(StoreError::ClickHouseUnreachable)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_string()
            .unwrap_or_default();
        Err(server_error(status, &text))
    }

    /// Runs a statement in the database (or outside any, for `CREATE DATABASE`).
    pub(crate) fn execute(&self, sql: &str, in_database: bool) -> Result<(), StoreError> {
        let mut resp = self.post(in_database, None, &[], sql.as_bytes())?;
        resp.body_mut()
            .with_config()
            .limit(MAX_SMALL_REPLY)
            .read_to_vec()
            .map_err(StoreError::ClickHouseUnreachable)?;
        Ok(())
    }

    /// A small reply, whole (a `FORMAT RowBinary` query's bytes).
    pub(crate) fn query(&self, sql: &str) -> Result<Vec<u8>, StoreError> {
        self.query_with(sql, &[])
    }

    /// [`Http::query`] with settings for this statement.
    pub(crate) fn query_with(
        &self,
        sql: &str,
        settings: &[(&str, String)],
    ) -> Result<Vec<u8>, StoreError> {
        let mut resp = self.post(true, None, settings, sql.as_bytes())?;
        resp.body_mut()
            .with_config()
            .limit(MAX_SMALL_REPLY)
            .read_to_vec()
            .map_err(StoreError::ClickHouseUnreachable)
    }

    /// Streams a `FORMAT RowBinary` reply of fixed-length rows to `f`, row by row; stops
    /// reading (the connection is dropped) when `f` breaks. Memory stays at one buffer.
    pub(crate) fn query_rows(
        &self,
        sql: &str,
        row_len: usize,
        f: &mut RowSink<'_>,
    ) -> Result<(), StoreError> {
        self.query_rows_with(sql, row_len, &[], f)
    }

    /// [`Http::query_rows`] with settings for this statement.
    pub(crate) fn query_rows_with(
        &self,
        sql: &str,
        row_len: usize,
        settings: &[(&str, String)],
        f: &mut RowSink<'_>,
    ) -> Result<(), StoreError> {
        let resp = self.post(true, None, settings, sql.as_bytes())?;
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; row_len * 4096];
        let mut filled = 0;
        loop {
            let n = reader
                .read(&mut buf[filled..])
                .map_err(|e| StoreError::ClickHouseUnreachable(ureq::Error::Io(e)))?;
            if n == 0 {
                return if filled == 0 {
                    Ok(())
                } else {
                    Err(StoreError::ClickHouseReply(
                        "RowBinary reply ends inside a row",
                    ))
                };
            }
            filled += n;
            let whole = filled - filled % row_len;
            for row in buf[..whole].chunks_exact(row_len) {
                if f(row)?.is_break() {
                    return Ok(());
                }
            }
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
    }

    /// `INSERT INTO <table> (<columns>) FORMAT RowBinary` with `rows` as the body.
    pub(crate) fn insert(
        &self,
        table: &str,
        columns: &str,
        rows: &[u8],
        settings: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let q = format!("INSERT INTO {table} ({columns}) FORMAT RowBinary");
        let mut resp = self.post(true, Some(&q), settings, rows)?;
        resp.body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_vec()
            .map_err(StoreError::ClickHouseUnreachable)?;
        Ok(())
    }
}

/// `Code: 60, e.displayText() = DB::Exception: Table … doesn't exist, …` (18.16) or
/// `Code: 60. DB::Exception: …` (current releases).
fn server_error(status: u16, text: &str) -> StoreError {
    let text = text.trim();
    let code = text
        .strip_prefix("Code: ")
        .and_then(|r| {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            r[..end].parse().ok()
        })
        .unwrap_or(0);
    let message: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(500)
        .collect();
    StoreError::ClickHouse {
        status,
        code,
        message,
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_base64() {
        assert_eq!(base64(b"default:"), "ZGVmYXVsdDo=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn test_error_codes_of_both_generations() {
        let old = "Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist., e.what() = DB::Exception\n";
        let new =
            "Code: 60. DB::Exception: Table x.y does not exist. (UNKNOWN_TABLE) (version 24.3)";
        for text in [old, new] {
            assert!(matches!(
                server_error(404, text),
                StoreError::ClickHouse { code: 60, .. }
            ));
        }
        assert!(matches!(
            server_error(502, "Bad gateway"),
            StoreError::ClickHouse {
                code: 0,
                status: 502,
                ..
            }
        ));
        assert_eq!(percent("a b(c)"), "a%20b%28c%29");
    }
}
