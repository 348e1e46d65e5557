//! `covidct`: the command-line entry point. It parses arguments, sets up logging and
//! configuration, and hands each subcommand to the libraries.

mod cli;
mod commands;
mod config;
mod logging;
mod progress;

use clap::Parser;
use cli::{
    BenchCommand, Cli, Command, DataCommand, ModelsCommand, MonitorCommand, RunsCommand,
    WeightsCommand,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logging::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    let config = config::ConfigFile::load(cli.config.as_deref())?;
    match &cli.command {
        Command::Data(DataCommand::Inspect(args)) => {
            Ok(commands::data::inspect(&config, args)? as u8)
        }
        Command::Data(DataCommand::Split(args)) => commands::data::split(&config, args).map(|_| 0),
        Command::Data(DataCommand::Shortcut(args)) => {
            commands::bias::shortcut_command(&config, args)
        }
        Command::Data(DataCommand::Fetch(args)) => commands::data::fetch(args).map(|_| 0),
        Command::Bench(BenchCommand::Data(args)) => commands::bench::data(&config, args).map(|_| 0),
        Command::Bench(BenchCommand::Train(args)) => commands::bench::train(args).map(|_| 0),
        Command::Train(args) => commands::train::train(&config, args),
        Command::CrossValidate(args) => commands::cross_validate::cross_validate(&config, args),
        Command::Evaluate(args) => commands::evaluate::evaluate(args).map(|_| 0),
        Command::Predict(args) => commands::evaluate::predict(args),
        Command::Serve(args) => commands::serve::serve(&config, args).map(|_| 0),
        Command::Weights(WeightsCommand::Import(args)) => {
            commands::weights::import(args).map(|_| 0)
        }
        Command::Models(ModelsCommand::Register(args)) => commands::models::register(args),
        Command::Models(ModelsCommand::List(args)) => commands::models::list(args),
        Command::Models(ModelsCommand::Promote(args)) => commands::models::promote(args),
        Command::Models(ModelsCommand::Pull(args)) => commands::models::pull_command(args),
        Command::Runs(RunsCommand::Sync(args)) => commands::tracking::sync(args),
        Command::Monitor(MonitorCommand::ExportReference(args)) => {
            commands::monitor::export_reference(args).map(|_| 0)
        }
    }
}
