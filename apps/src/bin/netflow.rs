//! `netflow`: collector, writer and bot in one process; see `netflow --help`.
use std::process::ExitCode;

use netflow_apps::app::{self, AllInOneCli};
use netflow_apps::config::parse_args;

fn main() -> ExitCode {
    let cli: AllInOneCli = parse_args();
    cli.log.init();
    app::exit_code("netflow", app::run_all_in_one(&cli))
}
