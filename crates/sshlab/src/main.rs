//! `sshlab`: parse, run, print the whole error chain and exit non-zero on failure, with the
//! error's own code ([`sshlab::Error::exit_code`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match sshlab::run(sshlab::Opts::parse()) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            eprintln!("sshlab: {:#}", anyhow::Error::new(err));
            ExitCode::from(code)
        }
    }
}
