//! The command line: clap definitions and thin handlers that call the library and print.

use clap::Parser;
use std::process::ExitCode;

/// Mount a Tahoe-LAFS grid, found through its grid service directory.
#[derive(Parser, Debug)]
#[command(name = "tahoe-mount", version, about)]
pub struct Cli {}

/// Parses the command line and runs the chosen command.
pub fn run() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
