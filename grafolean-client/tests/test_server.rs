//! The stand-in backend answers raw requests the way `grafolean-api.md` says the real one does.

use grafolean_client::AccountId;
use grafolean_client::test_server::{BotKind, TestServer};

type R = Result<(), Box<dyn std::error::Error>>;

struct Raw {
    agent: ureq::Agent,
    base: String,
}

impl Raw {
    fn new(server: &TestServer) -> Raw {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Raw {
            agent: ureq::Agent::new_with_config(config),
            base: server.url(),
        }
    }

    fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut r = self.agent.get(&format!("{}/{path}", self.base)).call()?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }

    fn post(&self, path: &str, body: &str) -> Result<(u16, String), ureq::Error> {
        let mut r = self
            .agent
            .post(&format!("{}/{path}", self.base))
            .send(body.as_bytes())?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }
}

fn values_url(account: AccountId, token: &str) -> String {
    format!("accounts/{account}/values/?b={token}")
}

#[test]
fn test_authentication() -> R {
    let server = TestServer::start()?;
    let (_, token) = server.add_bot(BotKind::Systemwide);
    let raw = Raw::new(&server);
    assert_eq!(raw.get("status/info")?.0, 200);
    assert_eq!(raw.get("profile/")?, (401, "Access denied".to_owned()));
    assert_eq!(raw.get("profile?b=nope")?.0, 401);
    assert_eq!(
        raw.get("profile?b=00000000-0000-0000-0000-000000000000")?.0,
        401
    );
    assert_eq!(raw.get(&format!("profile?b={token}"))?.0, 200);
    assert_eq!(
        raw.get(&format!("profile/?b={}", token.to_uppercase()))?.0,
        200
    );
    assert_eq!(
        raw.get(&format!("profile?b={token}%0A"))?,
        (500, "Could not validate access".to_owned())
    );
    assert_eq!(raw.get(&format!("accounts/abc/entities?b={token}"))?.0, 422);
    Ok(())
}

#[test]
fn test_values_validation() -> R {
    let server = TestServer::start()?;
    let account = server.add_account("A");
    let (_, token) = server.add_bot(BotKind::Systemwide);
    let raw = Raw::new(&server);
    let url = values_url(account, &token);
    let cases: &[(&str, u16)] = &[
        (
            r#"[{"p":"a.b","v":"123"},{"p":"a.c","v":5.25},{"p":"a.d","v":" 12 "}]"#,
            204,
        ),
        (r#"[{"p":"a.b%2ec","v":1}]"#, 204),
        (r#"[{"p":"a.b%2Ec","v":1}]"#, 400),
        (r#"[{"p":"a.b:c","v":1}]"#, 400),
        (r#"[{"p":"a..c","v":1}]"#, 400),
        (r#"[{"p":"system.foo","v":1}]"#, 400),
        (r#"[{"p":"a.b","v":"abc"}]"#, 400),
        (r#"[{"p":"a.b","v":null}]"#, 400),
        (r#"[{"p":"a.b","v":true}]"#, 500),
        (r#"[{"p":"a.b","v":1,"t":1}]"#, 400),
        (r#"[{"p":"a.b"}]"#, 500),
        (r#"[]"#, 400),
        (r#"{"p":"a.b","v":1}"#, 500),
        (r#"not json"#, 500),
        (r#"[{"p":"x.y","v":1},{"p":"x.y","v":2}]"#, 500),
        (r#"[{"p":"z.ok","v":1},{"p":"z.bad/","v":2}]"#, 400),
    ];
    for (body, status) in cases {
        assert_eq!(raw.post(&url, body)?.0, *status, "{body}");
    }
    let stored: Vec<String> = server.values().into_iter().map(|v| v.path).collect();
    assert_eq!(stored, ["a.b", "a.c", "a.d", "a.b%2ec"]);
    assert_eq!(server.values()[2].value, 12.0);
    // Rejected batches still leave path rows behind, as on the real backend.
    let paths = server.paths(account);
    for junk in ["a..c", "x.y", "z.ok", "z.bad/"] {
        assert!(paths.iter().any(|p| p == junk), "{junk} not in {paths:?}");
    }
    // An account that does not exist.
    assert_eq!(
        raw.post(&values_url(AccountId(3), &token), r#"[{"p":"a","v":1}]"#)?
            .0,
        400
    );
    Ok(())
}

#[test]
fn test_permissions_per_bot_kind() -> R {
    let server = TestServer::start()?;
    let account = server.add_account("A");
    let other = server.add_account("B");
    let (_, sys) = server.add_bot(BotKind::Systemwide);
    let (_, acc) = server.add_bot(BotKind::Account(account));
    let raw = Raw::new(&server);
    let entity = r#"{"name":"127.0.0.2 (NetFlow exporter)","entity_type":"device","details":{"ipv4":"127.0.0.2"}}"#;
    let v = r#"[{"p":"a","v":1}]"#;
    assert_eq!(raw.post(&values_url(account, &acc), v)?.0, 204);
    assert_eq!(raw.post(&values_url(other, &acc), v)?.0, 403);
    assert_eq!(
        raw.get(&format!("accounts/{account}/entities?b={acc}"))?.0,
        200
    );
    assert_eq!(
        raw.get(&format!("accounts/{other}/entities?b={acc}"))?.0,
        403
    );
    assert_eq!(
        raw.post(&format!("accounts/{account}/entities/?b={acc}"), entity)?
            .0,
        403
    );
    assert_eq!(
        raw.post(&format!("accounts/{account}/entities/?b={sys}"), entity)?
            .0,
        201
    );
    assert_eq!(
        raw.post(
            &format!("accounts/{account}/entities/?b={sys}"),
            r#"{"name":"x","entity_type":"device","details":{},"foo":1}"#
        )?
        .0,
        400
    );
    assert_eq!(
        raw.post(
            &format!("accounts/{account}/entities/?b={sys}"),
            r#"{"name":"x","entity_type":"device"}"#
        )?
        .0,
        400
    );
    assert_eq!(server.suggested_entities().len(), 1);
    Ok(())
}
