//! `netflow-query`: nfdump-style forensic queries over the stored flows; see `--help`.
use std::io::{BufWriter, ErrorKind, Write};
use std::process::ExitCode;

use netflow_apps::query::{self, QueryCli};

fn main() -> ExitCode {
    let cli: QueryCli = netflow_apps::config::parse_args();
    let plans = match query::plan(&cli, query::now_micros()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("netflow-query: {e}");
            return ExitCode::from(2);
        }
    };
    let mut store = match query::open_store(&cli.store) {
        Ok(s) => s,
        Err(e) => return netflow_apps::app::exit_code("netflow-query", Err(e)),
    };
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let r = query::run(&mut *store, &plans, cli.output, &mut out)
        .and_then(|t| out.flush().map(|_| t).map_err(Into::into));
    match r {
        Ok(t) => {
            eprintln!("netflow-query: {}", query::summary(&t, &plans[0].query));
            ExitCode::SUCCESS
        }
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netflow-query: {e:#}");
            ExitCode::FAILURE
        }
    }
}
