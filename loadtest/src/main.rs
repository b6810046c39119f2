//! `kafscale-loadtest`: Kafka load generator for KafScale.
//!
//! Produces N records of size S (optionally at a target rate) with P
//! producers into a topic of T partitions, consumes them back and reports
//! throughput plus produce and end-to-end latency percentiles measured from
//! each record's scheduled send time. Two consumer-group modes measure
//! rebalance time (`--mode rebalance`) and OffsetCommit throughput and
//! latency (`--mode commit`). See `README.md` for usage.
//!
//! Exit status: 0 on success, 1 when the run completed but failed (delivery
//! errors, records not sent or not consumed), 2 when it could not run.

mod cli;
mod clock;
mod commit;
mod consume;
mod html;
mod monitor;
mod payload;
mod produce;
mod progress;
mod rebalance;
mod report;
mod run;
mod scenario;
mod stats;
mod timeline;
mod topic;
mod trickle;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Mode};
use crate::report::RunReport;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(msg) = cli.validate() {
        Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit();
    }
    match run_and_report(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kafscale-loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the test and emits the reports; returns whether the run passed.
fn run_and_report(cli: &Cli) -> anyhow::Result<bool> {
    if cli.print_scenario {
        return print_scenario(cli);
    }
    match cli.mode {
        Mode::Rebalance => emit(cli, &rebalance::run(cli)?),
        Mode::Commit => emit(cli, &commit::run(cli)?),
        Mode::Produce | Mode::Consume | Mode::Both => {
            let report = run::run(cli)?;
            let passed = emit(cli, &report)?;
            if let Some(path) = &cli.html {
                fs::write(path, html::render(&report))
                    .with_context(|| format!("writing HTML report to {}", path.display()))?;
            }
            Ok(passed)
        }
    }
}

/// `--print-scenario`: the resolved scenario as JSON on stdout.
fn print_scenario(cli: &Cli) -> anyhow::Result<bool> {
    let scenario = cli
        .load_scenario()?
        .context("--print-scenario needs --scenario")?;
    let schedule = scenario::Schedule::new(&scenario);
    let summary = scenario::ScenarioSummary::new(&scenario, &schedule);
    let json = serde_json::to_string_pretty(&summary)?;
    match writeln!(std::io::stdout().lock(), "{json}") {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(true),
    }
}

/// Prints the text report and writes the JSON one where asked; returns
/// whether the run passed.
fn emit(cli: &Cli, report: &impl RunReport) -> anyhow::Result<bool> {
    let text = report.text();
    match cli.json.as_deref() {
        Some(path) if path == Path::new("-") => {
            eprint!("{text}");
            println!("{}", report.json()?);
        }
        Some(path) => {
            print!("{text}");
            let json = report.json()? + "\n";
            fs::write(path, json)
                .with_context(|| format!("writing JSON report to {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    Ok(report.verdict().ok)
}
