//! The job-configuration walk on a mix of valid, foreign-bot, disabled and malformed entities.

use std::time::Duration;

use grafolean_client::test_server::{BotKind, TestServer};
use grafolean_client::{Client, ClientConfig, Error, SkipReason, Token};
use serde_json::json;

type R = Result<(), Box<dyn std::error::Error>>;

fn fast() -> ClientConfig {
    ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

#[test]
fn test_walk_keeps_valid_and_skips_the_rest() -> R {
    let server = TestServer::start()?;
    let account = server.add_account("NetFlow test account");
    let (bot, token) = server.add_bot(BotKind::Systemwide);
    let (other_bot, _) = server.add_bot(BotKind::Account(account));
    let cred = server.add_credential(account, "Default NetFlow credential");
    let sensor = server.add_sensor(account, "Default NetFlow sensor", Some(300));
    let netflow = |ipv4: serde_json::Value, bot: Option<i64>| {
        json!({"name": "e", "entity_type": "device", "details": {"ipv4": ipv4},
               "protocols": {"netflow": {"credential": cred.0,
                   "sensors": [{"sensor": sensor.0, "interval": null}], "bot": bot}}})
    };

    // Kept: this bot's entity, and one for any bot (bot: null).
    let mine = server.add_netflow_entity(account, "mine", "10.0.0.1", cred, sensor, Some(bot));
    let any = server.add_netflow_entity(account, "any bot", " 10.0.0.2 ", cred, sensor, None);
    // Quietly not ours: another bot's, NetFlow disabled, not a device.
    server.add_netflow_entity(
        account,
        "foreign",
        "10.0.0.3",
        cred,
        sensor,
        Some(other_bot),
    );
    server.add_entity(
        account,
        json!({"name": "suggested", "entity_type": "device", "details": {"ipv4": "10.0.0.4"}}),
    );
    server.add_entity(
        account,
        json!({"name": "interface", "entity_type": "interface", "details": {}}),
    );
    // Malformed, skipped with a reason.
    let no_addr = server.add_entity(account, {
        let mut e = netflow(json!(null), Some(bot.0));
        e["details"] = json!({});
        e
    });
    let bad_addr = server.add_entity(account, netflow(json!("not-an-ip"), Some(bot.0)));
    let no_sensors = server.add_entity(account, {
        let mut e = netflow(json!("10.0.0.7"), None);
        e["protocols"]["netflow"]["sensors"] = json!([]);
        e
    });
    let missing_sensors = server.add_entity(account, {
        let mut e = netflow(json!("10.0.0.8"), None);
        if let Some(n) = e["protocols"]["netflow"].as_object_mut() {
            n.remove("sensors");
        }
        e
    });
    let gone_sensor = server.add_entity(account, {
        let mut e = netflow(json!("10.0.0.9"), None);
        e["protocols"]["netflow"]["sensors"] = json!([{"sensor": 999, "interval": null}]);
        e
    });
    let weird = server.add_entity(account, {
        let mut e = netflow(json!("10.0.0.10"), None);
        e["protocols"]["netflow"]["credential"] = json!("not a number");
        e
    });
    // A second account with no entities, and one the bot's token cannot see into is not
    // possible for a systemwide bot; that case is covered below.
    let empty = server.add_account("Empty account");

    let client = Client::with_config(&server.url(), Token::new(&token)?, fast())?;
    let jobs = client.job_config()?;
    assert_eq!(jobs.bot_id, bot);
    assert!(jobs.unavailable.is_empty());
    let ids: Vec<_> = jobs.accounts.iter().map(|a| a.account.id).collect();
    assert_eq!(ids, [empty, account], "sorted by name");
    let acc = &jobs.accounts[1];

    let mut kept: Vec<_> = acc.entities.iter().map(|e| e.entity_id).collect();
    kept.sort();
    let mut want = vec![mine, any];
    want.sort();
    assert_eq!(kept, want);
    let m = acc
        .entities
        .iter()
        .find(|e| e.entity_id == mine)
        .ok_or("mine missing")?;
    assert_eq!(m.exporter, "10.0.0.1".parse::<std::net::IpAddr>()?);
    assert_eq!(m.account_id, account);
    assert_eq!(m.credential.id, cred);
    assert_eq!(m.sensors.len(), 1);
    assert_eq!(m.sensors[0].sensor_id, sensor);
    assert_eq!(m.sensors[0].interval, Some(300), "sensor default applies");

    let reason = |id| {
        acc.skipped
            .iter()
            .find(|s| s.entity_id == Some(id))
            .map(|s| s.reason.clone())
    };
    assert_eq!(reason(no_addr), Some(SkipReason::NoAddress));
    assert_eq!(
        reason(bad_addr),
        Some(SkipReason::BadAddress("not-an-ip".to_owned()))
    );
    assert_eq!(reason(no_sensors), Some(SkipReason::NoSensors));
    assert_eq!(reason(missing_sensors), Some(SkipReason::NoSensors));
    assert!(matches!(
        reason(gone_sensor),
        Some(SkipReason::Sensor(_, Error::NotFound { .. }))
    ));
    assert!(matches!(
        reason(weird),
        Some(SkipReason::MalformedSettings(_))
    ));
    assert_eq!(acc.skipped.len(), 6);

    // Every device address is known to the suggestion job, whoever collects it.
    let known: Vec<String> = acc.device_addresses.iter().map(|a| a.to_string()).collect();
    for a in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.7"] {
        assert!(known.iter().any(|k| k == a), "{a} missing from {known:?}");
    }

    // The shared credential and sensor were fetched once per walk.
    let reads = server
        .requests()
        .iter()
        .filter(|r| {
            r.path.contains("/credentials/") || r.path.contains(&format!("/sensors/{}", sensor.0))
        })
        .count();
    assert_eq!(reads, 2);
    Ok(())
}

#[test]
fn test_walk_for_an_account_bot() -> R {
    let server = TestServer::start()?;
    let account = server.add_account("A");
    let other = server.add_account("B");
    let (sys, _) = server.add_bot(BotKind::Systemwide);
    let (bot, token) = server.add_bot(BotKind::Account(account));
    let cred = server.add_credential(account, "c");
    let sensor = server.add_sensor(account, "s", None);
    let ours = server.add_netflow_entity(account, "ours", "127.0.0.1", cred, sensor, Some(bot));
    server.add_netflow_entity(
        account,
        "systemwide's",
        "127.0.0.1",
        cred,
        sensor,
        Some(sys),
    );
    let cred_b = server.add_credential(other, "c");
    let sensor_b = server.add_sensor(other, "s", None);
    server.add_netflow_entity(other, "other account", "127.0.0.5", cred_b, sensor_b, None);

    let client = Client::with_config(&server.url(), Token::new(&token)?, fast())?;
    let jobs = client.job_config()?;
    assert_eq!(jobs.accounts.len(), 1);
    let ids: Vec<_> = jobs.entities().map(|e| e.entity_id).collect();
    assert_eq!(ids, [ours]);
    Ok(())
}

#[test]
fn test_walk_fails_on_a_bad_token_and_on_server_errors() -> R {
    let server = TestServer::start()?;
    server.add_account("A");
    let (_, token) = server.add_bot(BotKind::Systemwide);
    let bad = Client::with_config(
        &server.url(),
        Token::new("00000000-0000-0000-0000-000000000000")?,
        fast(),
    )?;
    assert!(matches!(bad.job_config(), Err(Error::Unauthorized { .. })));
    let client = Client::with_config(
        &server.url(),
        Token::new(&token)?,
        fast().with_retries(0, 0),
    )?;
    server.fail_next(1);
    assert!(matches!(client.job_config(), Err(Error::Server { .. })));
    assert!(client.job_config().is_ok());
    Ok(())
}
