//! `netflow-collector`: see `netflow-collector --help` and `netflow_apps::app::CollectorCli`.
use std::process::ExitCode;

use netflow_apps::app::{self, CollectorCli};
use netflow_apps::config::parse_args;

fn main() -> ExitCode {
    let cli: CollectorCli = parse_args();
    cli.log.init();
    app::exit_code("netflow-collector", app::run_collector(&cli))
}
