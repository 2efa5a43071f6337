//! Every call against the stand-in backend: happy paths, error classes, retries, timeouts.

use std::time::{Duration, Instant};

use grafolean_client::test_server::{BotKind, TestServer};
use grafolean_client::{
    AccountId, Client, ClientConfig, Error, NewEntity, Segment, Token, ValueBatch, ValuePath,
};
use serde_json::json;

type R = Result<(), Box<dyn std::error::Error>>;

/// Short backoff so retry tests are quick; timeouts generous enough for a loaded CI box.
fn fast() -> ClientConfig {
    ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

struct Setup {
    server: TestServer,
    account: AccountId,
    token: String,
}

fn setup(kind: fn(AccountId) -> BotKind) -> Result<Setup, Box<dyn std::error::Error>> {
    let server = TestServer::start()?;
    let account = server.add_account("NetFlow test account");
    let (_, token) = server.add_bot(kind(account));
    Ok(Setup {
        server,
        account,
        token,
    })
}

fn systemwide(_: AccountId) -> BotKind {
    BotKind::Systemwide
}

fn client(s: &Setup) -> Result<Client, Error> {
    Client::with_config(&s.server.url(), Token::new(&s.token)?, fast())
}

fn path(p: &str) -> ValuePath {
    ValuePath::new(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn test_status_profile_accounts() -> R {
    let s = setup(systemwide)?;
    let other = s.server.add_account("Another account");
    let c = client(&s)?;
    assert!(c.status()?.is_ready());
    let profile = c.profile()?;
    assert_eq!(profile.user_type, "bot");
    assert_eq!(profile.tied_to_account(), None);
    let accounts = c.accounts()?;
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Another account", "NetFlow test account"]);
    assert_eq!(accounts[0].id, other);
    Ok(())
}

#[test]
fn test_account_bot_profile_and_accounts() -> R {
    let s = setup(BotKind::Account)?;
    s.server.add_account("Not mine");
    let c = client(&s)?;
    assert_eq!(c.profile()?.tied_to_account(), Some(s.account));
    let accounts = c.accounts()?;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].id, s.account);
    Ok(())
}

#[test]
fn test_entities_credentials_sensors() -> R {
    let s = setup(systemwide)?;
    let cred = s
        .server
        .add_credential(s.account, "Default NetFlow credential");
    let sensor = s
        .server
        .add_sensor(s.account, "Default NetFlow sensor", Some(60));
    let e = s
        .server
        .add_netflow_entity(s.account, "router", "127.0.0.1", cred, sensor, None);
    let c = client(&s)?;
    let list = c.entities(s.account)?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, e);
    assert_eq!(list[0].ipv4(), Some("127.0.0.1".parse()?));
    let one = c.entity(s.account, e)?;
    assert_eq!(one, list[0]);
    assert_eq!(c.credential(s.account, cred)?.protocol, "netflow");
    assert_eq!(c.sensor(s.account, sensor)?.default_interval, Some(60));
    // An unknown account lists nothing (200, not 404), as on the real backend.
    assert!(c.entities(AccountId(1))?.is_empty());
    Ok(())
}

#[test]
fn test_not_found() -> R {
    let s = setup(systemwide)?;
    let c = client(&s)?;
    let e = c.entity(s.account, grafolean_client::EntityId(12345));
    assert!(
        matches!(&e, Err(Error::NotFound { message, .. }) if message.contains("No such entity")),
        "{e:?}"
    );
    assert!(matches!(
        c.sensor(s.account, grafolean_client::SensorId(5)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        c.credential(s.account, grafolean_client::CredentialId(5))
            .err()
            .and_then(|e| e.status()),
        Some(404)
    );
    Ok(())
}

#[test]
fn test_unauthorized_never_retried_and_token_never_shown() -> R {
    let s = setup(systemwide)?;
    let bad = "2950cb50-8be5-4079-881e-312732065f11";
    let c = Client::with_config(&s.server.url(), Token::new(bad)?, fast())?;
    let e = c
        .profile()
        .err()
        .ok_or("profile with a bad token succeeded")?;
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert_eq!(s.server.requests().len(), 1, "401 must not be retried");
    for text in [e.to_string(), format!("{e:?}"), format!("{c:?}")] {
        assert!(!text.contains(bad), "token leaked: {text}");
    }
    Ok(())
}

#[test]
fn test_token_from_file_is_trimmed() -> R {
    let s = setup(systemwide)?;
    let file = std::env::temp_dir().join(format!("grafolean-token-{}", std::process::id()));
    std::fs::write(&file, format!("{}\n", s.token))?;
    let token = Token::from_file(&file);
    std::fs::remove_file(&file)?;
    let c = Client::with_config(&s.server.url(), token?, fast())?;
    assert!(c.profile().is_ok());
    Ok(())
}

#[test]
fn test_post_values_and_read_back() -> R {
    let s = setup(systemwide)?;
    let c = client(&s)?;
    let mut batch = ValueBatch::new();
    let entity = path("netflow.1min.ingress.entity.1374713224");
    batch.insert(
        entity
            .child(&Segment::new("if")?)?
            .child(&Segment::from(3u32))?,
        123u64,
    );
    batch.insert(
        entity
            .child(&Segment::new("topip")?)?
            .child(&Segment::ip("10.0.0.1".parse()?))?,
        100u64,
    );
    batch.insert(
        path("netflow.1min.egress.entity.1374713224.topconn")
            .child(&Segment::ip("10.0.0.1".parse()?))?
            .child(&Segment::ip("2001:db8::1".parse()?))?,
        55u64,
    );
    batch.try_insert("netflow.1min.ingress", 0.0)?;
    batch.insert(path("netflow.1min.ingress.entity.1374713224"), u64::MAX);
    let report = c.post_values(s.account, &batch)?;
    assert_eq!((report.values, report.requests, report.retries), (5, 1, 0));
    let got = s.server.values();
    let mut paths: Vec<&str> = got.iter().map(|v| v.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "netflow.1min.egress.entity.1374713224.topconn.10%2e0%2e0%2e1.2001%3adb8%3a%3a1",
            "netflow.1min.ingress",
            "netflow.1min.ingress.entity.1374713224",
            "netflow.1min.ingress.entity.1374713224.if.3",
            "netflow.1min.ingress.entity.1374713224.topip.10%2e0%2e0%2e1",
        ]
    );
    // One POST: one server timestamp.
    assert!(got.iter().all(|v| v.time == got[0].time));
    let big = got
        .iter()
        .find(|v| v.path == "netflow.1min.ingress.entity.1374713224");
    assert_eq!(big.map(|v| v.raw.clone()), Some(json!(u64::MAX)));
    // An empty batch sends nothing (the backend would answer 400 Missing data).
    assert_eq!(c.post_values(s.account, &ValueBatch::new())?.requests, 0);
    assert_eq!(s.server.requests().len(), 1);
    Ok(())
}

#[test]
fn test_batch_is_split_and_deduplicated() -> R {
    let s = setup(systemwide)?;
    let c = Client::with_config(
        &s.server.url(),
        Token::new(&s.token)?,
        fast().with_max_values_per_request(10),
    )?;
    let mut batch = ValueBatch::new();
    for i in 0..25u32 {
        batch.insert(path(&format!("netflow.1min.ingress.entity.1.if.{i}")), i);
    }
    // The same path again replaces the value instead of making the backend fail (500).
    batch.insert(path("netflow.1min.ingress.entity.1.if.0"), 1000u32);
    let report = c.post_values(s.account, &batch)?;
    assert_eq!((report.values, report.requests), (25, 3));
    let got = s.server.values();
    assert_eq!(got.len(), 25);
    assert!(
        got.iter()
            .any(|v| v.path == "netflow.1min.ingress.entity.1.if.0" && v.value == 1000.0)
    );
    Ok(())
}

#[test]
fn test_invalid_path_is_never_sent() -> R {
    let s = setup(systemwide)?;
    let mut batch = ValueBatch::new();
    batch.try_insert("netflow.1min.ingress", 1.0)?;
    for bad in [
        "netflow.1min.ingress.entity.1.topprotocol.TP++",
        "netflow.1min.ingress.entity.1.topip.2001:db8::1",
        "netflow.1min.ingress.entity.1.topip.10%2E0%2E0%2E1",
        "system.stats.inserted",
        "netflow..1min",
    ] {
        assert!(matches!(
            batch.try_insert(bad, 1.0),
            Err(Error::InvalidPath(_))
        ));
    }
    assert!(matches!(
        batch.try_insert("netflow.1min.egress", f64::NAN),
        Err(Error::NonFiniteValue(_))
    ));
    assert_eq!(batch.len(), 1);
    client(&s)?.post_values(s.account, &batch)?;
    // Only the valid value reached the server, and no junk path row was created.
    assert_eq!(s.server.paths(s.account), ["netflow.1min.ingress"]);
    Ok(())
}

#[test]
fn test_account_bot_permissions() -> R {
    let s = setup(BotKind::Account)?;
    let other = s.server.add_account("Other");
    let c = client(&s)?;
    let mut batch = ValueBatch::new();
    batch.try_insert("netflow.1min.ingress", 1.0)?;
    assert_eq!(c.post_values(s.account, &batch)?.values, 1);
    let e = c.post_values(other, &batch).err();
    assert!(matches!(e, Some(Error::Forbidden { .. })), "{e:?}");
    let addr = "127.0.0.2".parse()?;
    let e = c
        .suggest_entity(s.account, &NewEntity::netflow_exporter(addr))
        .err();
    assert!(matches!(e, Some(Error::Forbidden { .. })), "{e:?}");
    assert_eq!(
        s.server
            .requests()
            .iter()
            .filter(|r| r.status == 403)
            .count(),
        2,
        "403 must not be retried"
    );
    Ok(())
}

#[test]
fn test_suggest_entity() -> R {
    let s = setup(systemwide)?;
    let c = client(&s)?;
    let id = c.suggest_entity(
        s.account,
        &NewEntity::netflow_exporter("127.0.0.2".parse()?),
    )?;
    let got = s.server.suggested_entities();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(
        got[0].body,
        json!({"name": "127.0.0.2 (NetFlow exporter)", "entity_type": "device",
               "details": {"ipv4": "127.0.0.2"}})
    );
    let e = c.entity(s.account, id)?;
    assert!(e.protocols.is_empty());
    // An account bot with the extra permission may suggest too.
    let (bot, token) = s.server.add_bot(BotKind::Account(s.account));
    s.server.allow_entity_post(bot);
    let c2 = Client::with_config(&s.server.url(), Token::new(&token)?, fast())?;
    c2.suggest_entity(
        s.account,
        &NewEntity::netflow_exporter("127.0.0.3".parse()?),
    )?;
    assert_eq!(s.server.suggested_entities().len(), 2);
    Ok(())
}

#[test]
fn test_rejected_input_carries_the_message() -> R {
    let s = setup(systemwide)?;
    let c = client(&s)?;
    let e = NewEntity {
        name: "x".to_owned(),
        entity_type: "device".to_owned(),
        details: json!("not an object"),
    };
    let err = c.suggest_entity(s.account, &e).err();
    assert!(
        matches!(&err, Some(Error::Rejected { status: 400, message, .. }) if message.contains("details")),
        "{err:?}"
    );
    // Values for an account that does not exist: 400 from the backend.
    let mut batch = ValueBatch::new();
    batch.try_insert("a.b", 1.0)?;
    let err = c.post_values(AccountId(7), &batch).err();
    assert!(
        matches!(err, Some(Error::Rejected { status: 400, .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn test_read_retried_after_two_failures() -> R {
    let s = setup(systemwide)?;
    let c = client(&s)?;
    s.server.fail_next(2);
    assert!(c.accounts().is_ok());
    let statuses: Vec<u16> = s.server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    // More failures than retries: the 5xx reaches the caller.
    s.server.fail_next(10);
    let e = c.profile().err();
    assert!(
        matches!(e, Some(Error::Server { status: 500, .. })),
        "{e:?}"
    );
    assert_eq!(s.server.requests().len(), 3 + 4, "1 attempt + 3 retries");
    Ok(())
}

#[test]
fn test_values_post_retried_after_5xx_but_stored_once() -> R {
    let s = setup(systemwide)?;
    let c = client(&s)?;
    let mut batch = ValueBatch::new();
    batch.try_insert("netflow.1min.ingress", 5.0)?;
    s.server.fail_next(2);
    let report = c.post_values(s.account, &batch)?;
    assert_eq!(report.retries, 2);
    assert_eq!(s.server.values().len(), 1);
    s.server.fail_next(3);
    assert!(matches!(
        c.post_values(s.account, &batch),
        Err(Error::Server { .. })
    ));
    assert_eq!(s.server.values().len(), 1);
    Ok(())
}

#[test]
fn test_timeout_on_hanging_server() -> R {
    let s = setup(systemwide)?;
    let cfg = fast()
        .with_timeout(Duration::from_secs(1))
        .with_retries(1, 1);
    let c = Client::with_config(&s.server.url(), Token::new(&s.token)?, cfg)?;
    // A read: the first attempt hangs 3 s and times out after 1 s, the retry succeeds.
    s.server.hang_next(1, Duration::from_secs(3));
    let start = Instant::now();
    assert!(c.accounts().is_ok());
    assert!(
        start.elapsed() < Duration::from_millis(2900),
        "{:?}",
        start.elapsed()
    );
    // A values POST that times out is not retried: the server may have stored it.
    s.server.hang_next(1, Duration::from_secs(3));
    let mut batch = ValueBatch::new();
    batch.try_insert("netflow.1min.ingress", 5.0)?;
    let e = c.post_values(s.account, &batch).err();
    assert!(matches!(e, Some(Error::Timeout { .. })), "{e:?}");
    let e = e.ok_or("no error")?;
    assert!(e.is_transient());
    assert!(!e.to_string().contains(&s.token));
    // The hung POST is still handled by the server later: exactly one copy is stored.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s.server.values().len(), 1);
    Ok(())
}

#[test]
fn test_transport_error_when_nothing_listens() -> R {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let token = "2950cb50-8be5-4079-881e-312732065f11";
    let c = Client::with_config(
        &format!("http://{addr}/api"),
        Token::new(token)?,
        fast().with_retries(1, 1),
    )?;
    let e = c.profile().err().ok_or("connected to nothing")?;
    assert!(
        matches!(
            e,
            Error::Transport {
                before_send: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!format!("{e} {e:?}").contains(token));
    Ok(())
}

#[test]
fn test_https_is_supported() -> R {
    // A plain-HTTP answer to an https:// URL: the TLS handshake fails, which shows TLS is
    // compiled in and reported as a transport error (not an unsupported scheme).
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let plain = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            use std::io::Write;
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        }
    });
    let token = "2950cb50-8be5-4079-881e-312732065f11";
    let c = Client::with_config(
        &format!("https://{addr}/api"),
        Token::new(token)?,
        fast().with_retries(0, 0),
    )?;
    let e = c.profile().err().ok_or("TLS to a plain server succeeded")?;
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(token));
    let _ = plain.join();
    Ok(())
}

#[test]
fn test_wait_until_ready() -> R {
    let s = setup(systemwide)?;
    s.server.set_status(true, None);
    let c = client(&s)?;
    let e = c.wait_until_ready(Some(Duration::from_millis(200))).err();
    assert!(
        matches!(&e, Some(Error::NotReady { last, .. }) if last.contains("migration")),
        "{e:?}"
    );
    s.server.set_status(false, Some(false));
    let polls_before = s.server.requests().len();
    let server = &s.server;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            server.set_status(false, Some(true));
        });
        let status = c.wait_until_ready(Some(Duration::from_secs(20)));
        assert!(status.is_ok_and(|s| s.is_ready()));
    });
    assert!(s.server.requests().len() > polls_before + 1);
    Ok(())
}

#[test]
fn test_wait_until_ready_returns_soon_after_stop() -> R {
    // A backend that never becomes ready and a long backoff: without the stop flag the wait
    // would sleep for tens of seconds between polls.
    let s = setup(systemwide)?;
    s.server.set_status(true, None);
    let config = fast().with_backoff(Duration::from_secs(30), Duration::from_secs(60));
    let c = Client::with_config(&s.server.url(), Token::new(&s.token)?, config)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let got = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        c.wait_until_ready_or_stop(None, &stop)
    });
    assert!(matches!(got, Ok(None)), "{got:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // A backend that is ready is reported as such, the flag unset.
    s.server.set_status(false, Some(true));
    let stop = std::sync::atomic::AtomicBool::new(false);
    assert!(c.wait_until_ready_or_stop(None, &stop)?.is_some());
    Ok(())
}
