//! Prints the job configuration a NetFlow bot would read from Grafolean.
//!
//! ```sh
//! BACKEND_URL=http://127.0.0.1:18000/api BOT_TOKEN=... \
//!     cargo run -p grafolean-client --example print_jobs
//! ```
//! `BOT_TOKEN_FROM_FILE=/shared-secrets/tokens/netflow-bot.token` works instead of `BOT_TOKEN`.

use std::process::ExitCode;
use std::time::Duration;

use grafolean_client::{Client, Token};

fn run() -> Result<(), grafolean_client::Error> {
    let url = std::env::var("BACKEND_URL").map_err(|_| {
        grafolean_client::Error::Config(
            "set BACKEND_URL, e.g. http://127.0.0.1:18000/api".to_owned(),
        )
    })?;
    // The library reads no environment: the program says where the token comes from.
    let token = match std::env::var("BOT_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Token::new(&t)?,
        _ => match std::env::var_os("BOT_TOKEN_FROM_FILE") {
            Some(p) if !p.is_empty() => Token::from_file(std::path::Path::new(&p))?,
            _ => {
                return Err(grafolean_client::Error::Config(
                    "set BOT_TOKEN or BOT_TOKEN_FROM_FILE to the bot's token".to_owned(),
                ));
            }
        },
    };
    let client = Client::new(&url, token)?;
    client.wait_until_ready(Some(Duration::from_secs(30)))?;
    let jobs = client.job_config()?;
    println!("bot user id: {}", jobs.bot_id);
    for account in &jobs.accounts {
        println!(
            "account {} {:?}: {} NetFlow entities, {} skipped, known devices {:?}",
            account.account.id,
            account.account.name,
            account.entities.len(),
            account.skipped.len(),
            account.device_addresses
        );
        for e in &account.entities {
            let sensors: Vec<String> = e.sensors.iter().map(|s| s.sensor_id.to_string()).collect();
            println!(
                "  entity {} {:?}: exporter {}, credential {}, sensors [{}]",
                e.entity_id,
                e.name,
                e.exporter,
                e.credential.id,
                sensors.join(", ")
            );
        }
        for s in &account.skipped {
            let id = s
                .entity_id
                .map_or_else(|| "?".to_owned(), |id| id.to_string());
            println!("  skipped entity {id} {:?}: {}", s.name, s.reason);
        }
    }
    for (account, why) in &jobs.unavailable {
        println!(
            "account {} {:?} unavailable: {why}",
            account.id, account.name
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("print_jobs: {e}");
            ExitCode::FAILURE
        }
    }
}
