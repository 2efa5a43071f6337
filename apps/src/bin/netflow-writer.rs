//! `netflow-writer`: see `netflow-writer --help` and `netflow_apps::app::WriterCli`.
use std::process::ExitCode;

use netflow_apps::app::{self, WriterCli};
use netflow_apps::config::parse_args;

fn main() -> ExitCode {
    let cli: WriterCli = parse_args();
    cli.log.init();
    app::exit_code("netflow-writer", app::run_writer(&cli))
}
