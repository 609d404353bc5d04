//! `chatspace`: the supervisor. It reads a chat dataset, starts a pool of `chatspace-encoder`
//! processes (the only ones that load ONNX Runtime), streams rows to them over local sockets and
//! writes the embeddings into Parquet shards with a manifest.
//!
//! Errors are handled once, here: one line on stderr and an exit code from
//! [`chatspace_proto::exit`].

mod args;
mod datafiles;
mod dataset;
mod devices;
mod error;
mod extract;
mod hub;
mod manifest;
mod merge;
mod partition;
mod plan;
mod pool;
mod remote;
mod resume;
mod run;
mod shard;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::args::{Cli, Command};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHATSPACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Merge(args) => {
            merge::merge(&args)?;
            Ok(())
        }
        Command::EmbedHf(args) => {
            let plan = plan::RunPlan::resolve(args)?;
            if plan.complete {
                eprintln!(
                    "chatspace: nothing to resume: the run in {} is complete",
                    plan.manifest_path.display()
                );
                return Ok(());
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(run::execute(plan))?;
            let s = &outcome.summary;
            eprintln!(
                "chatspace: embedded {} rows ({} skipped, {} failed, {} truncated) into {} shards in {:.1} s ({:.0} rows/s, padding {:.0}%); manifest: {}",
                s.rows_total,
                s.rows_skipped,
                s.rows_failed,
                s.rows_truncated,
                s.num_shards,
                s.duration_seconds,
                s.rows_per_second,
                s.padding_ratio * 100.0,
                outcome.manifest_path.display()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    error::install_panic_hook();
    ignore_file_size_signal();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line without its `error: ` prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("chatspace: {}", first.trim_start_matches("error: "));
            return ExitCode::from(chatspace_proto::exit::USAGE as u8);
        }
    };
    let mut cli = cli;
    if let Command::EmbedHf(args) = &mut cli.command {
        let task = args.check().and_then(|()| {
            partition::resolve_task(args.num_shards, args.shard_index, |k| std::env::var(k).ok())
        });
        match task {
            Ok(task) => {
                // The task is recorded as flags from here on (in run_config and for --resume).
                args.num_shards = task.map(|t| t.count);
                args.shard_index = task.map(|t| t.index);
                args.task_engine = task.map(|t| t.engine);
            }
            Err(msg) => {
                eprintln!("chatspace: {msg}");
                return ExitCode::from(chatspace_proto::exit::USAGE as u8);
            }
        }
    }
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("chatspace: {}", one_line(&err));
            ExitCode::from(error::exit_code(&err) as u8)
        }
    }
}

/// A write past the file size limit (`ulimit -f`) must fail with `EFBIG`, to be reported and
/// cleaned up like a full disk, instead of killing the process with SIGXFSZ mid-shard.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The error chain on one line: the message, then each cause not already part of it.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}
