//! `covidct-lint`: workspace checks that the compiler and clippy do not make.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -q -p covidct-lint              # module cycles inside each crate
//! cargo run -q -p covidct-lint -- --cli-rules   # … and the rules for thin CLI commands
//! ```
//!
//! It reads every crate's `src/**/*.rs`, builds the dependency graph between each crate's file
//! modules (see [`modules`]) and lists every cycle as `crate: a -> b -> a`. With `--cli-rules`
//! it also checks that no command of `crates/cli/src/commands/` uses another command and that
//! the folder stays under 1,200 lines (see [`cli_rules`]). Exit status: 0 when all is well, 1
//! when something is reported, 2 when the sources cannot be read or the arguments are wrong.

mod cli_rules;
mod cycles;
mod lexer;
mod modules;
mod parse;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::modules::{crate_graph, display};

const USAGE: &str = "usage: covidct-lint [--cli-rules] [--skip=CRATE]... [WORKSPACE_ROOT]\n\
    Lists module cycles inside each crate under WORKSPACE_ROOT/crates (default: the current \
    folder); --cli-rules also checks crates/cli/src/commands/; --skip=CRATE leaves a crate out.";

fn main() -> ExitCode {
    let mut cli_rules = false;
    let mut root = PathBuf::from(".");
    let mut skipped: Vec<String> = Vec::new();
    for argument in std::env::args().skip(1) {
        match argument.as_str() {
            "--cli-rules" => cli_rules = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with("--skip=") => {
                skipped.push(flag.trim_start_matches("--skip=").to_owned());
            }
            flag if flag.starts_with('-') => {
                eprintln!("covidct-lint: unknown flag {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
            path => root = PathBuf::from(path),
        }
    }
    let crates = match workspace::read_crates(&root) {
        Ok(crates) => crates
            .into_iter()
            .filter(|sources| !skipped.contains(&sources.name))
            .collect::<Vec<_>>(),
        Err(err) => {
            eprintln!(
                "covidct-lint: cannot read {}/crates ({err}); run it from the repository root",
                root.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut problems = Vec::new();
    for sources in &crates {
        for crate_root in sources.roots() {
            let graph = crate_graph(&sources.files, &crate_root);
            let label = if crate_root.ends_with("main.rs") && sources.roots().len() > 1 {
                format!("{} (bin)", sources.name)
            } else {
                sources.name.clone()
            };
            for cycle in cycles::cycles(&graph.dependencies) {
                let names: Vec<String> = cycle.iter().map(|m| display(m)).collect();
                problems.push(format!("{label}: {}", names.join(" -> ")));
            }
            if cli_rules && sources.name == cli_rules::CLI_CRATE && crate_root.ends_with("main.rs")
            {
                problems.extend(cli_rules::breaches(sources, &graph));
            }
        }
    }
    if problems.is_empty() {
        let checked = if cli_rules {
            "module cycles, CLI rules"
        } else {
            "module cycles"
        };
        println!("covidct-lint: {} crates clean ({checked})", crates.len());
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("{problem}");
        }
        eprintln!(
            "covidct-lint: {} problem(s); a line `crate: a -> b -> a` is a module cycle",
            problems.len()
        );
        ExitCode::FAILURE
    }
}
