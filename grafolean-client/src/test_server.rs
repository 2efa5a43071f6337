//! An in-process stand-in for the Grafolean backend, for tests (feature `test-server`).
//!
//! It speaks HTTP/1.1 on `127.0.0.1:<random port>` (std only: a listener thread and one
//! thread per connection, one request per connection) and implements the calls a NetFlow
//! bot makes with the real backend's behaviour from `grafolean-api.md`:
//!
//! * `status/info` without authentication; readiness set with [`TestServer::set_status`];
//! * the `b=` token check: 401 `Access denied` for a missing, malformed or unknown token,
//!   500 `Could not validate access` for a token with a newline;
//! * permissions per bot kind: a systemwide bot may do everything under `accounts`; an
//!   account bot gets what the web UI grants (values POST, entities/credentials/sensors
//!   GET on its own account) and 403 otherwise, notably on entity POST unless
//!   [`TestServer::allow_entity_post`] was called;
//! * `accounts/{id}/values/` POST: 400 for a bad path (`%` other than lowercase `%2e`/`%3a`,
//!   other characters, empty segments, `system.` prefix), a bad value, `t`, or an empty
//!   list; 500 for a repeated path, a missing `p`/`v` or a non-list body; all or nothing;
//!   and, like the real backend, path rows are recorded even for rejected batches
//!   ([`TestServer::paths`]);
//! * entity suggestions (strict schema, 201 `{"id":N}`), 404 `No such ...` for unknown
//!   entities, credentials and sensors, 422 for non-integer ids.
//!
//! IDs are pseudo-random integers in 1..2^31, as on the real backend.
//!
//! Fault knobs: [`TestServer::fail_next`] (500 for the next N requests),
//! [`TestServer::hang_next`] (the next N requests wait before being handled) and
//! [`TestServer::answer_late_next`] (handled at once, answered late). What was
//! received: [`TestServer::values`], [`TestServer::suggested_entities`],
//! [`TestServer::requests`].
//!
//! ```
//! use grafolean_client::test_server::{BotKind, TestServer};
//! use grafolean_client::{Client, Token, ValueBatch};
//!
//! let server = TestServer::start()?;
//! let account = server.add_account("Test");
//! let (_bot, token) = server.add_bot(BotKind::Account(account));
//! let client = Client::new(&server.url(), Token::new(&token)?)?;
//! let mut batch = ValueBatch::new();
//! batch.try_insert("netflow.1min.ingress", 42.0)?;
//! client.post_values(account, &batch)?;
//! assert_eq!(server.values()[0].path, "netflow.1min.ingress");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::model::{AccountId, CredentialId, EntityId, SensorId, UserId};

/// Longest request head (request line and headers) the server reads.
const MAX_HEAD: usize = 64 * 1024;
/// Longest request body the server reads.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Which kind of bot a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotKind {
    /// The systemwide NetFlow bot: permission on everything under `accounts`.
    Systemwide,
    /// An account bot created in the web UI, tied to this account.
    Account(AccountId),
}

/// One value the server stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedValue {
    /// The account it was posted to.
    pub account: AccountId,
    /// The path, exactly as stored.
    pub path: String,
    /// Server time of the POST (UNIX seconds); equal for all values of one POST.
    pub time: f64,
    /// The value as a number.
    pub value: f64,
    /// The value as sent (a JSON number or string).
    pub raw: Value,
}

/// An entity created through `POST accounts/{id}/entities/`.
#[derive(Debug, Clone, PartialEq)]
pub struct SuggestedEntity {
    /// The account.
    pub account: AccountId,
    /// The id the server gave it.
    pub id: EntityId,
    /// The body as received.
    pub body: Value,
}

/// One request the server handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path without the query string, e.g. `/api/accounts/1/values/`.
    pub path: String,
    /// Status code answered.
    pub status: u16,
}

#[derive(Debug)]
struct Bot {
    id: i64,
    token: String,
    kind: BotKind,
    may_post_entities: bool,
}

#[derive(Debug, Default)]
struct State {
    rng: u64,
    status: Value,
    bots: Vec<Bot>,
    accounts: BTreeMap<i64, String>,
    entities: BTreeMap<i64, (i64, Value)>,
    credentials: BTreeMap<i64, (i64, Value)>,
    sensors: BTreeMap<i64, (i64, Value)>,
    paths: BTreeSet<(i64, String)>,
    values: Vec<ReceivedValue>,
    suggested: Vec<SuggestedEntity>,
    requests: Vec<RecordedRequest>,
    fail_next: usize,
    hang_next: usize,
    hang_for: Duration,
    late_next: usize,
    late_by: Duration,
}

impl State {
    /// A fresh random-looking id in 1..2^31 (xorshift; deterministic per server).
    fn new_id(&mut self) -> i64 {
        loop {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let id = i64::try_from(self.rng % 2_147_483_646).unwrap_or(0) + 1;
            let used = self.accounts.contains_key(&id)
                || self.entities.contains_key(&id)
                || self.credentials.contains_key(&id)
                || self.sensors.contains_key(&id)
                || self.bots.iter().any(|b| b.id == id);
            if !used {
                return id;
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server for the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stand-in backend. Stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1` with a free port, ready (`status/info` says migrated
    /// and a user exists) and with no accounts or bots.
    pub fn start() -> io::Result<TestServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = State {
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(addr.port()),
            status: json!({
                "alive": true, "db_migration_needed": false, "db_version": 30,
                "user_exists": true, "cors_domains": [], "mqtt_ws_hostname": "",
                "mqtt_ws_port": "", "enable_signup": false
            }),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("grafolean-test-server".to_owned())
            .spawn(move || accept_loop(&listener, &accept_shared))?;
        Ok(TestServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The `BACKEND_URL` to give a client: `http://127.0.0.1:<port>/api`.
    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `status/info` reports: `db_migration_needed` and `user_exists`.
    pub fn set_status(&self, db_migration_needed: bool, user_exists: Option<bool>) {
        let mut s = self.shared.lock();
        s.status["db_migration_needed"] = json!(db_migration_needed);
        s.status["user_exists"] = json!(user_exists);
    }

    /// Creates an account.
    pub fn add_account(&self, name: &str) -> AccountId {
        let mut s = self.shared.lock();
        let id = s.new_id();
        s.accounts.insert(id, name.to_owned());
        AccountId(id)
    }

    /// Creates a NetFlow bot; returns its user id and token (a random-looking UUID).
    pub fn add_bot(&self, kind: BotKind) -> (UserId, String) {
        let mut s = self.shared.lock();
        let id = s.new_id();
        let a = s.new_id();
        let b = s.new_id();
        let token = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a,
            b & 0xffff,
            id & 0xfff,
            a & 0xfff,
            (id << 16) ^ b
        );
        s.bots.push(Bot {
            id,
            token: token.clone(),
            kind,
            may_post_entities: false,
        });
        (UserId(id), token)
    }

    /// Grants an account bot POST on its account's entities (the extra permission a person
    /// must add for the exporter suggestions to work).
    pub fn allow_entity_post(&self, bot: UserId) {
        let mut s = self.shared.lock();
        for b in s.bots.iter_mut().filter(|b| b.id == bot.0) {
            b.may_post_entities = true;
        }
    }

    /// Creates a NetFlow credential (`details {}`).
    pub fn add_credential(&self, account: AccountId, name: &str) -> CredentialId {
        let mut s = self.shared.lock();
        let id = s.new_id();
        let body = json!({"id": id, "name": name, "protocol": "netflow", "details": {}});
        s.credentials.insert(id, (account.0, body));
        CredentialId(id)
    }

    /// Creates a NetFlow sensor (`details {}`).
    pub fn add_sensor(
        &self,
        account: AccountId,
        name: &str,
        default_interval: Option<u64>,
    ) -> SensorId {
        let mut s = self.shared.lock();
        let id = s.new_id();
        let body = json!({"id": id, "name": name, "protocol": "netflow",
                          "default_interval": default_interval, "details": {}});
        s.sensors.insert(id, (account.0, body));
        SensorId(id)
    }

    /// Creates an entity from a raw JSON object, stored as given plus `id` (so tests can
    /// create the malformed entities the real backend accepts: no `details.ipv4`, garbage
    /// addresses, empty sensors...). `parent` and `protocols` default to `null` and `{}`.
    pub fn add_entity(&self, account: AccountId, body: Value) -> EntityId {
        let mut s = self.shared.lock();
        let id = s.new_id();
        let mut obj = match body {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("value".to_owned(), other);
                m
            }
        };
        obj.insert("id".to_owned(), json!(id));
        obj.entry("parent").or_insert(Value::Null);
        obj.entry("protocols").or_insert_with(|| json!({}));
        s.entities.insert(id, (account.0, Value::Object(obj)));
        EntityId(id)
    }

    /// Creates a device entity at `ipv4` with NetFlow enabled (credential, one sensor with
    /// `interval: null`, and `bot`, where `None` means any NetFlow bot).
    pub fn add_netflow_entity(
        &self,
        account: AccountId,
        name: &str,
        ipv4: &str,
        credential: CredentialId,
        sensor: SensorId,
        bot: Option<UserId>,
    ) -> EntityId {
        self.add_entity(
            account,
            json!({
                "name": name, "entity_type": "device", "details": {"ipv4": ipv4},
                "protocols": {"netflow": {"credential": credential.0,
                    "sensors": [{"sensor": sensor.0, "interval": null}],
                    "bot": bot.map(|b| b.0)}}
            }),
        )
    }

    /// Removes an entity (e.g. to test a 404 between the list and the read).
    pub fn remove_entity(&self, entity: EntityId) {
        self.shared.lock().entities.remove(&entity.0);
    }

    /// Answers the next `n` requests with 500 `Internal Server Error`.
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }

    /// Makes the next `n` requests wait `duration` before they are handled.
    pub fn hang_next(&self, n: usize, duration: Duration) {
        let mut s = self.shared.lock();
        s.hang_next = n;
        s.hang_for = duration;
    }

    /// Makes the next `n` requests be handled at once (values stored, entities created) but
    /// answered only after `delay`: a backend that acted on a request whose reply the client
    /// gave up waiting for.
    pub fn answer_late_next(&self, n: usize, delay: Duration) {
        let mut s = self.shared.lock();
        s.late_next = n;
        s.late_by = delay;
    }

    /// Every value stored, in arrival order.
    pub fn values(&self) -> Vec<ReceivedValue> {
        self.shared.lock().values.clone()
    }

    /// Path rows of an account, including those of rejected batches (as the real backend
    /// leaves them behind).
    pub fn paths(&self, account: AccountId) -> Vec<String> {
        self.shared
            .lock()
            .paths
            .iter()
            .filter(|(a, _)| *a == account.0)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every entity created through the API, in arrival order.
    pub fn suggested_entities(&self) -> Vec<SuggestedEntity> {
        self.shared.lock().suggested.clone()
    }

    /// Every request handled, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let shared = Arc::clone(shared);
        let _ = thread::Builder::new()
            .name("grafolean-test-conn".to_owned())
            .spawn(move || {
                let _ = handle_connection(stream, &shared);
            });
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    body: String,
    json: bool,
}

impl Response {
    fn json(status: u16, v: &Value) -> Response {
        Response {
            status,
            body: v.to_string(),
            json: true,
        }
    }
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            body: body.into(),
            json: false,
        }
    }
    fn detail(status: u16, msg: &str) -> Response {
        Response::json(status, &json!({ "detail": msg }))
    }
    fn no_content() -> Response {
        Response::text(204, "")
    }
    fn internal() -> Response {
        Response::text(500, "Internal Server Error")
    }
    fn invalid_input(msg: &str) -> Response {
        Response::text(400, format!("Input validation failed: {msg}"))
    }
}

fn handle_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let (hang, hang_for) = {
        let mut s = shared.lock();
        let hang = s.hang_next > 0;
        s.hang_next = s.hang_next.saturating_sub(1);
        (hang, s.hang_for)
    };
    if hang {
        thread::sleep(hang_for);
    }
    let resp = {
        let mut s = shared.lock();
        let resp = if s.fail_next > 0 {
            s.fail_next -= 1;
            Response::internal()
        } else {
            route(&mut s, &req)
        };
        s.requests.push(RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            status: resp.status,
        });
        let late = s.late_next > 0;
        s.late_next = s.late_next.saturating_sub(1);
        (resp, late.then_some(s.late_by))
    };
    let (resp, late) = resp;
    if let Some(delay) = late {
        thread::sleep(delay);
    }
    write_response(stream, &resp)
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take(8 * 1024)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    if content_length > MAX_BODY {
        return Ok(None);
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(Request {
        method: method.to_owned(),
        path: percent_decode(path),
        query,
        body,
    }))
}

fn write_response(mut stream: TcpStream, resp: &Response) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", resp.status);
    if resp.json {
        out.push_str("Content-Type: application/json\r\n");
    } else if resp.status == 500 {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    if resp.status != 204 {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str("\r\n");
    out.push_str(&resp.body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True for a token of the backend's format: a UUID, any case.
fn is_uuid(t: &str) -> bool {
    let groups: Vec<&str> = t.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn route(s: &mut State, req: &Request) -> Response {
    let Some(rest) = req.path.strip_prefix("/api/") else {
        return Response::detail(404, "Not Found");
    };
    let resource = rest.trim_end_matches('/');
    let method = req.method.as_str();
    if resource == "status/info" {
        return match method {
            "GET" => Response::json(200, &s.status),
            _ => Response::text(405, "Method Not Allowed"),
        };
    }
    // Authentication: the last `b` wins.
    let Some(token) = req
        .query
        .iter()
        .rev()
        .find(|(k, _)| k == "b")
        .map(|(_, v)| v)
    else {
        return Response::text(401, "Access denied");
    };
    let token = token
        .strip_suffix('\n')
        .map_or(token.as_str(), |t| if is_uuid(t) { "\n" } else { t });
    if token == "\n" {
        return Response::text(500, "Could not validate access");
    }
    if !is_uuid(token) {
        return Response::text(401, "Access denied");
    }
    let Some(bot) = s.bots.iter().find(|b| b.token.eq_ignore_ascii_case(token)) else {
        return Response::text(401, "Access denied");
    };
    let (bot_id, kind, may_post_entities) = (bot.id, bot.kind, bot.may_post_entities);
    let segs: Vec<&str> = resource.split('/').collect();

    let always_allowed = method == "GET" && matches!(resource, "profile" | "accounts");
    if !always_allowed && !permitted(kind, may_post_entities, method, &segs) {
        return Response::text(403, "Access to resource denied, insufficient permissions");
    }

    match (method, segs.as_slice()) {
        ("GET", ["profile"]) => Response::json(
            200,
            &json!({"user_id": bot_id, "user_type": "bot", "record": {
                "id": bot_id, "name": "NetFlow bot", "protocol": "netflow",
                "tied_to_account": match kind { BotKind::Account(a) => Some(a.0), BotKind::Systemwide => None },
                "config": null, "insert_time": 1_795_760_609, "last_login": 1_795_760_626}}),
        ),
        ("GET", ["accounts"]) => {
            let mut list: Vec<(String, i64)> = s
                .accounts
                .iter()
                .filter(|(id, _)| match kind {
                    BotKind::Systemwide => true,
                    BotKind::Account(a) => a.0 == **id,
                })
                .map(|(id, name)| (name.clone(), *id))
                .collect();
            list.sort();
            let list: Vec<Value> = list
                .into_iter()
                .map(|(name, id)| json!({"id": id, "name": name}))
                .collect();
            Response::json(200, &json!({ "list": list }))
        }
        (_, ["accounts", aid, rest @ ..]) => {
            let Ok(aid) = aid.parse::<i64>() else {
                return unprocessable("account_id");
            };
            account_route(s, method, aid, rest, &req.body)
        }
        _ => Response::detail(404, "Not Found"),
    }
}

fn unprocessable(field: &str) -> Response {
    Response::json(
        422,
        &json!({"detail": [{"loc": ["path", field], "msg": "value is not a valid integer",
                            "type": "type_error.integer"}]}),
    )
}

/// The permission check of the real backend's middleware, for the two bot kinds.
fn permitted(kind: BotKind, may_post_entities: bool, method: &str, segs: &[&str]) -> bool {
    match kind {
        BotKind::Systemwide => segs.first() == Some(&"accounts"),
        BotKind::Account(own) => {
            let [_, aid, coll, ..] = segs else {
                return false;
            };
            if segs.first() != Some(&"accounts") || aid.parse::<i64>().ok() != Some(own.0) {
                return false;
            }
            match *coll {
                "values" => matches!(method, "POST" | "PUT"),
                "entities" => method == "GET" || (method == "POST" && may_post_entities),
                "credentials" | "sensors" => method == "GET",
                _ => false,
            }
        }
    }
}

fn account_route(s: &mut State, method: &str, aid: i64, rest: &[&str], body: &[u8]) -> Response {
    match (method, rest) {
        ("GET", ["entities"]) => {
            let list: Vec<Value> = s
                .entities
                .values()
                .filter(|(a, _)| *a == aid)
                .map(|(_, e)| e.clone())
                .collect();
            Response::json(200, &json!({ "list": list }))
        }
        ("GET", [coll @ ("entities" | "credentials" | "sensors"), id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return unprocessable("id");
            };
            let (table, what) = match *coll {
                "entities" => (&s.entities, "No such entity"),
                "credentials" => (&s.credentials, "No such credential"),
                _ => (&s.sensors, "No such sensor"),
            };
            match table.get(&id) {
                Some((a, v)) if *a == aid => Response::json(200, v),
                _ => Response::detail(404, what),
            }
        }
        ("POST", ["entities"]) => post_entity(s, aid, body),
        ("POST", ["values"]) => post_values(s, aid, body),
        _ => Response::detail(404, "Not Found"),
    }
}

fn post_entity(s: &mut State, aid: i64, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Response::internal();
    };
    let Some(obj) = v.as_object() else {
        return Response::invalid_input(&format!("{v} is not of type 'object'"));
    };
    const ALLOWED: [&str; 5] = ["name", "entity_type", "parent", "details", "protocols"];
    if let Some(k) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Response::invalid_input(&format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        ));
    }
    for k in ["name", "entity_type", "details"] {
        if !obj.contains_key(k) {
            return Response::invalid_input(&format!("'{k}' is a required property"));
        }
    }
    if !obj.get("details").is_some_and(Value::is_object) {
        return Response::invalid_input("details is not of type 'object'");
    }
    if !s.accounts.contains_key(&aid) {
        return Response::detail(400, "Invalid input format");
    }
    let id = s.new_id();
    let mut stored = obj.clone();
    stored.insert("id".to_owned(), json!(id));
    stored.entry("parent").or_insert(Value::Null);
    stored.entry("protocols").or_insert_with(|| json!({}));
    s.entities.insert(id, (aid, Value::Object(stored)));
    s.suggested.push(SuggestedEntity {
        account: AccountId(aid),
        id: EntityId(id),
        body: v,
    });
    Response::json(201, &json!({ "id": id }))
}

/// The backend's `PathInputValue` check (after its `$` quirk strips one trailing `\n`).
fn backend_path_error(path: &str) -> Option<String> {
    let p = path.strip_suffix('\n').unwrap_or(path);
    if p.starts_with("system.") {
        return Some("Invalid path - should not start with 'system.'!".to_owned());
    }
    let ok = p.split('.').all(|seg| {
        let b = seg.as_bytes();
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
                i += 1;
            } else if matches!(b.get(i..i + 3), Some(b"%2e") | Some(b"%3a")) {
                i += 3;
            } else {
                return false;
            }
        }
        !b.is_empty()
    });
    (!ok).then(|| format!("Invalid PathInputValue format: {path}"))
}

/// Python `float(v)` then PostgreSQL `NUMERIC`: `Ok(number)`, or the response to give.
fn backend_value(v: &Value) -> Result<f64, Response> {
    let invalid = || Response::invalid_input(&format!("Invalid MeasuredValue format: {v}"));
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(invalid),
        Value::String(s) if s.contains('_') => Err(Response::internal()),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| invalid()),
        Value::Bool(_) => Err(Response::internal()),
        _ => Err(invalid()),
    }
}

fn post_values(s: &mut State, aid: i64, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Response::internal();
    };
    let Some(items) = v.as_array() else {
        return Response::internal();
    };
    if items.is_empty() {
        return Response::detail(400, "Missing data");
    }
    if !s.accounts.contains_key(&aid) {
        return Response::detail(400, "Invalid input format");
    }
    // 1. Path rows are inserted one by one, then validated (junk rows stay behind).
    let mut parsed = Vec::with_capacity(items.len());
    for item in items {
        let Some(obj) = item.as_object() else {
            return Response::internal();
        };
        if obj.contains_key("t") {
            return Response::detail(400, "Parameter 't' shouldn't be specified with POST");
        }
        let (Some(p), Some(val)) = (obj.get("p"), obj.get("v")) else {
            return Response::internal();
        };
        let Some(p) = p.as_str() else {
            return Response::invalid_input(&format!("Invalid PathInputValue format: {p}"));
        };
        let stored = p.strip_suffix('\n').unwrap_or(p).to_owned();
        s.paths.insert((aid, stored.clone()));
        if let Some(msg) = backend_path_error(p) {
            return Response::invalid_input(&msg);
        }
        parsed.push((stored, val.clone()));
    }
    // 2. Values.
    let mut numbers = Vec::with_capacity(parsed.len());
    for (_, val) in &parsed {
        match backend_value(val) {
            Ok(n) => numbers.push(n),
            Err(resp) => return resp,
        }
    }
    // 3. One INSERT ... ON CONFLICT DO UPDATE: a repeated path fails it all.
    let distinct: BTreeSet<&str> = parsed.iter().map(|(p, _)| p.as_str()).collect();
    if distinct.len() != parsed.len() {
        return Response::internal();
    }
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for ((path, raw), value) in parsed.into_iter().zip(numbers) {
        s.values.push(ReceivedValue {
            account: AccountId(aid),
            path,
            time,
            value,
            raw,
        });
    }
    Response::no_content()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_backend_path_rules() {
        assert_eq!(backend_path_error("a.b%2ec.d%3a"), None);
        assert_eq!(backend_path_error("probe.newline\n"), None);
        assert!(backend_path_error("a.%2E").is_some());
        assert!(backend_path_error("a..b").is_some());
        assert!(backend_path_error("").is_some());
        assert!(backend_path_error("system.x").is_some());
    }

    #[test]
    fn test_uuid_check() {
        assert!(is_uuid("2950cb50-8be5-4079-881e-312732065f11"));
        assert!(is_uuid("2950CB50-8BE5-4079-881E-312732065F11"));
        assert!(!is_uuid("2950cb50-8be5-4079-881e-312732065f1"));
        assert!(!is_uuid("nope"));
    }

    #[test]
    fn test_generated_tokens_are_uuids() {
        let Ok(server) = TestServer::start() else {
            panic!("cannot start the test server");
        };
        for _ in 0..20 {
            let (_, token) = server.add_bot(BotKind::Systemwide);
            assert!(is_uuid(&token), "{token}");
        }
    }
}
