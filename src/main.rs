//! The `gatherd` binary: parse the command line, set up logging, hand over to
//! the library. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use gatherd::cli::{self, Cli};

/// How long the process waits at exit for blocking threads still busy (see
/// `main`); the README's "Signals and logs" says it.
const ABANDONED_THREADS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    cli::color::choose(cli.color);
    if let Err(code) = cli::logging::init(cli.log_settings()) {
        return code;
    }
    // Blocking-pool threads run `script` steps and `to_thread` closures (Rhai,
    // which recurses deeply): give them the stack a script thread gets.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(16 * 1024 * 1024).build();
    match runtime {
        Ok(runtime) => {
            let code = runtime.block_on(cli::dispatch(cli));
            // Everything that can end has ended (runs, the history's writer).
            // What is left is a blocking step abandoned on cancel that no
            // signal can interrupt (a read of a FIFO, a hung mount): dropping
            // the runtime would wait for its thread forever, so give such
            // threads a moment, then exit without them.
            runtime.shutdown_timeout(ABANDONED_THREADS_GRACE);
            code
        }
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            ExitCode::from(cli::exit::FAILED)
        }
    }
}

/// glibc gives each thread that allocates its own heap ("arena"), up to eight
/// per core. A run allocates on the runtime's workers, the report's task and
/// a script's thread, and frees across them, so memory freed in one arena is
/// not reused by another: a 100,000-step run peaked at 176 MB with the
/// default and 146 MB with one arena, at the same speed (the per-thread
/// caches serve small blocks without the lock). Two keep a little slack for
/// the daemon's many threads; `MALLOC_ARENA_MAX` in the environment still wins.
#[allow(unsafe_code)] // mallopt has no safe wrapper (the crate's other unsafe: two pre_exec closures, ARCHITECTURE.md)
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tuning parameter; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
