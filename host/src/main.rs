//! The `tlskeeper` binary: parse the command line, run it, map failures to
//! exit statuses (sysexits(3) values, which supervisors understand).

use clap::Parser;

fn main() {
    let cli = tlskeeper::cli::Cli::parse();
    if let Err(failure) = tlskeeper::cli::run(cli) {
        eprintln!("tlskeeper: {failure}");
        std::process::exit(failure.status);
    }
}
