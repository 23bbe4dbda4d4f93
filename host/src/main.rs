//! The `tlskeeper` binary: parse the command line, run it, map failures to
//! exit statuses (sysexits(3) values, which supervisors understand).
//!
//! master(8) runs its services with Postfix's own single-letter options
//! (`-l -n tlsmgr -t unix -u -c`) and no subcommand; such a command line
//! is recognised first and handed to the Postfix mode.

use clap::Parser;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(launch) = tlskeeper::postfix::master_launch(&args) {
        let status = match launch {
            Ok(launch) => tlskeeper::postfix::run(&launch),
            Err(e) => tlskeeper::postfix::run_invalid(&e),
        };
        std::process::exit(status);
    }
    let cli = tlskeeper::cli::Cli::parse();
    if let Err(failure) = tlskeeper::cli::run(cli) {
        eprintln!("tlskeeper: {failure}");
        std::process::exit(failure.status);
    }
}
