//! `gatherd run FILE`: run one job once in the foreground (`asyncio.run(main())`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::exit;
use super::progress::Progress;
use super::render;
use crate::config::Config;
use crate::exec::{self, BlockingPool, RecordedStatus, RunContext, RunEvent, RunReport, Status};
use crate::load;

/// Arguments of `gatherd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (TOML or Rhai).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON document with the run's result and every step on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print every line the steps print as it comes (`STEP STREAM TEXT`),
    /// above the progress bar on a terminal, else (stdout a file or a pipe)
    /// on stdout before the report.
    #[arg(short = 'f', long, conflicts_with = "json")]
    pub follow: bool,
    /// Threads of the blocking pool (`blocking = true` steps); default
    /// min(32, CPUs + 4), asyncio's default for `to_thread`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub blocking_threads: Option<u16>,
    /// A configuration file (see examples/config.toml); flags win over it.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs the job; returns the exit code (0 succeeded, 1 failed or timed out,
/// 2 invalid file, 130 cancelled).
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let job = match load::load_file_to_run(&args.file) {
        Ok(job) => Arc::new(job),
        Err(e) => {
            // Diagnostics are this command's output (rustc-style), not an error line.
            let color = super::logging::color_on_stderr();
            for d in e.diagnostics() {
                eprintln!("{}", d.render(color));
            }
            return Ok(exit::INVALID);
        }
    };
    let config = Config::load_or_default(args.config.as_deref()).map_err(super::invalid)?;
    let pool_size = args.blocking_threads.map_or_else(|| config.blocking_threads(), usize::from);
    let mut ctx = RunContext::new(BlockingPool::new(pool_size));
    ctx.script_limits = config.script_limits();
    ctx.limits = config.limits();
    // The same environment rules as the daemon's, so a job behaves the same
    // under both: the minimal set, the config's `pass_env` and `[secrets]`.
    let secrets = config.read_secrets(args.config.as_deref()).map_err(super::invalid)?;
    ctx.environment = Arc::new(exec::Environment::of_this_process(&config.pass_env, secrets));
    let cancel = ctx.cancel.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let progress = Progress::new(job.root.step_count(), show_progress);
    // Above the bar only when the bar and stdout share a terminal; else
    // stdout is a file or a pipe, and the lines belong there as they come.
    let follow = match (args.follow, show_progress && super::out::is_terminal()) {
        (false, _) => Follow::Off,
        (true, true) => Follow::AboveTheBar,
        (true, false) => Follow::Stdout,
    };
    // On a task of its own, so the report is folded on another worker while
    // the run goes on (and events do not pile up in the channel meanwhile).
    let sink = tokio::spawn(fold_events(
        rx,
        RunReport::new(job.name.clone(), job.file.clone()),
        progress,
        follow,
        cancel.clone(),
    ));

    let run = exec::run(job, ctx, tx);
    tokio::pin!(run);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut run => break,
            signal = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                if signal.is_ok() {
                    eprintln!("cancelling: stopping every step (processes get SIGTERM, then SIGKILL)…");
                }
                cancel.cancel();
            }
        }
    }
    // The run is over and its sender dropped: the sink ends.
    let (report, reader_gone) = sink.await.context("the run's report was lost")?;
    if reader_gone {
        // As every command whose reader goes: quietly, 0 (the run was
        // cancelled for it, not by the user).
        return Ok(exit::OK);
    }

    if args.json {
        // Streamed, not built as one string: a 100,000-step report is tens of MB.
        super::out::json(&report).context("cannot write the JSON report")?;
    } else {
        // Script lines were printed live above the progress bar on a
        // terminal, and every line with `--follow`.
        super::out::out!(
            "{}",
            render::report(&report, !show_progress && follow == Follow::Off, super::color::on_stdout())
        )?;
    }
    Ok(match report.status {
        RecordedStatus::Finished(Status::Succeeded) => exit::OK,
        RecordedStatus::Finished(Status::Cancelled) => exit::CANCELLED,
        _ => exit::FAILED,
    })
}

/// Where `--follow` prints the run's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Not asked for.
    Off,
    /// Above the progress bar (stdout and stderr on a terminal).
    AboveTheBar,
    /// On stdout, before the report (stdout not a terminal; a bar, if
    /// stderr is one, is drawn there without the lines).
    Stdout,
}

/// The CLI's sink: folds every event into the report and the progress bar,
/// and prints followed lines. Also says whether stdout's reader went while
/// following: then the run was cancelled (`cancel`), so that every step's
/// process group is killed the normal way before gatherd ends.
async fn fold_events(
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    mut report: RunReport,
    mut progress: Progress,
    follow: Follow,
    cancel: CancellationToken,
) -> (RunReport, bool) {
    let mut reader_gone = false;
    let stdout_terminal = super::out::is_terminal();
    while let Some(event) = rx.recv().await {
        match (&event, follow) {
            (RunEvent::Log { path, stream, text, .. }, Follow::AboveTheBar) => {
                progress.println(&render::followed_line(path, *stream, text, true));
            }
            (RunEvent::Log { .. }, Follow::Stdout) if reader_gone => {}
            (RunEvent::Log { path, stream, text, .. }, Follow::Stdout) => {
                let line = format_args!("{}\n", render::followed_line(path, *stream, text, stdout_terminal));
                match super::out::write_fmt_unless_gone(line) {
                    Ok(true) => {}
                    Ok(false) => {
                        reader_gone = true;
                        cancel.cancel();
                    }
                    Err(e) => tracing::error!("{e:#}"),
                }
            }
            _ => progress.apply(&event),
        }
        report.apply(&event);
    }
    progress.finish();
    (report, reader_gone)
}
