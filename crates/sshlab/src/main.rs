//! `sshlab`: parse, run, print the whole error chain and exit non-zero on failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match sshlab::run(sshlab::Opts::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sshlab: {:#}", anyhow::Error::new(err));
            ExitCode::FAILURE
        }
    }
}
