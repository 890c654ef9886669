//! `tapflow-collector`: parse flags, set up logging and signals, run, map the outcome to an exit
//! code (see `--help`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tapflow_collector::{run, Args, Config, Finished, RunOutcome};
use tracing::{error, info};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = &args.command {
        return tapflow_runtime::curve::run_command("tapflow-collector", command);
    }
    tapflow_runtime::init_logging(args.options.log_json);
    if args.options.check_config {
        return tapflow_runtime::config::check_config("tapflow-collector", Config::check(args));
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => return tapflow_runtime::config::config_failed("tapflow-collector", &e),
    };
    let shutdown = match tapflow_runtime::shutdown_flag() {
        Ok(flag) => flag,
        Err(e) => {
            eprintln!("tapflow-collector: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&config, shutdown) {
        Ok(finished) => {
            report(&finished);
            match finished.outcome {
                RunOutcome::Done { .. } if !finished.undelivered.is_empty() => {
                    ExitCode::from(UNDELIVERED)
                }
                RunOutcome::Done { .. } => ExitCode::SUCCESS,
                RunOutcome::OpenFailed(e) => {
                    error!("{e}");
                    ExitCode::from(3)
                }
                RunOutcome::Damaged(e) => {
                    error!("{e}");
                    ExitCode::from(4)
                }
                RunOutcome::Failed(e) => {
                    error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The exit code of a run that otherwise succeeded when an end-of-stream was not delivered to
/// some processor (each is named in an ERROR line and in the final line's `undelivered`).
const UNDELIVERED: u8 = 5;

/// The final line: the counters, whether they reconcile, and (only when some) the links whose
/// end-of-stream was not delivered.
fn report(finished: &Finished) {
    let (counters, undelivered) = (&finished.counters, &finished.undelivered);
    let r = counters.reconcile();
    macro_rules! finished {
        ($($extra:tt)*) => {
            info!(
                packets_read = counters.packets_read,
                summarised = counters.packets_summarised,
                fragments_merged = counters.fragments_merged,
                summaries = counters.summaries,
                sent = ?counters.summaries_sent,
                drops = ?counters.drops,
                pcap_received = counters.capture.received,
                kernel_dropped = counters.capture.kernel_dropped,
                if_dropped = counters.capture.if_dropped,
                reconciled = r.holds(),
                $($extra)*
                "collector finished"
            )
        };
    }
    if undelivered.is_empty() {
        finished!();
    } else {
        finished!(undelivered = ?undelivered,);
    }
}
