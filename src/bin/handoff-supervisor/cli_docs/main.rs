//! `cargo run --example cli-docs -- DIR` (`make cli-docs`): handoff-supervisor's
//! man pages into DIR/man and its bash, zsh and fish completions into
//! DIR/completions, from the definition the command parses with (cli.rs).
//! An example, not part of the command: the generators stay out of the
//! installed binary.

#[path = "../cli.rs"]
mod cli;
mod pages;

use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: cli-docs DIR");
        return ExitCode::from(2);
    };
    let dir = std::path::PathBuf::from(dir);
    match pages::write_all(cli::Cli::command(), &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cli-docs: cannot write into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
