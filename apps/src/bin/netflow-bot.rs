//! `netflow-bot`: see `netflow-bot --help` and `netflow_apps::app::BotCli`.
use std::process::ExitCode;

use netflow_apps::app::{self, BotCli};
use netflow_apps::config::parse_args;

fn main() -> ExitCode {
    let cli: BotCli = parse_args();
    cli.log.init();
    app::exit_code("netflow-bot", app::run_bot(&cli))
}
