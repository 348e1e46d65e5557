//! `covidct`: the command-line entry point. It parses arguments, sets up logging and
//! configuration, and hands each subcommand to the libraries.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod commands;
mod config;
mod exit;
mod logging;
mod progress;
mod training;

use clap::Parser;
use cli::{
    BenchCommand, Cli, Command, DataCommand, ModelsCommand, MonitorCommand, RunsCommand,
    WeightsCommand,
};
use exit::ExitStatus;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logging::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    match run(&cli) {
        Ok(status) => status.into(),
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitStatus::Failure.into()
        }
    }
}

/// Runs the parsed command.
fn run(cli: &Cli) -> anyhow::Result<ExitStatus> {
    let config = config::ConfigFile::load(cli.config.as_deref())?;
    let done = |result: anyhow::Result<()>| result.map(|()| ExitStatus::Success);
    match &cli.command {
        Command::Data(DataCommand::Inspect(args)) => commands::data::inspect(&config, args),
        Command::Data(DataCommand::Split(args)) => done(commands::data::split(&config, args)),
        Command::Data(DataCommand::Shortcut(args)) => commands::shortcut::shortcut(&config, args),
        Command::Data(DataCommand::Fetch(args)) => done(commands::data::fetch(args)),
        Command::Bench(BenchCommand::Data(args)) => done(commands::bench::data(&config, args)),
        Command::Bench(BenchCommand::Train(args)) => done(commands::bench::train(args)),
        Command::Train(args) => commands::train::train(&config, args),
        Command::CrossValidate(args) => commands::cross_validate::cross_validate(&config, args),
        Command::Evaluate(args) => commands::evaluate::evaluate(args),
        Command::Predict(args) if args.study => commands::study::predict_study(args),
        Command::Predict(args) => commands::predict::predict(args),
        Command::Serve(args) => done(commands::serve::serve(&config, args)),
        Command::Weights(WeightsCommand::Import(args)) => done(commands::weights::import(args)),
        Command::Models(ModelsCommand::Register(args)) => commands::models::register(args),
        Command::Models(ModelsCommand::List(args)) => commands::models::list(args),
        Command::Models(ModelsCommand::Promote(args)) => commands::models::promote(args),
        Command::Models(ModelsCommand::Pull(args)) => commands::models::pull(args),
        Command::Runs(RunsCommand::Sync(args)) => commands::runs::sync(args),
        Command::Monitor(MonitorCommand::ExportReference(args)) => {
            done(commands::monitor::export_reference(args))
        }
    }
}
