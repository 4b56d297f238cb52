//! The `gatherd` binary: parse the command line, set up logging, hand over to
//! the library. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use gatherd::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logging::init(cli.log_settings());
    // Blocking-pool threads run `script` steps and `to_thread` closures (Rhai,
    // which recurses deeply): give them the stack a script thread gets.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(16 * 1024 * 1024).build();
    match runtime {
        Ok(runtime) => runtime.block_on(cli::dispatch(cli)),
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            ExitCode::from(cli::exit::FAILED)
        }
    }
}
