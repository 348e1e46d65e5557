//! Rules for a thin command-line crate (`--cli-rules`): each file of
//! `crates/cli/src/commands/` is one command that uses the libraries, not another command (no
//! path into `crate::commands::…` or `super::…` outside its own module), and the folder stays
//! small.

use std::path::Path;

use crate::modules::{CrateGraph, display};
use crate::workspace::CrateSources;

/// The crate the rules apply to (its folder under `crates/`).
pub const CLI_CRATE: &str = "cli";
/// The module that holds one submodule per command.
const COMMANDS_MODULE: &str = "commands";
/// The folder of the commands must total fewer lines than this.
pub const MAX_COMMAND_LINES: usize = 1200;

/// Each breach of the rules, as a line of the report.
pub fn breaches(cli: &CrateSources, graph: &CrateGraph) -> Vec<String> {
    let mut found = Vec::new();
    for (from, targets) in &graph.dependencies {
        let [commands, command, ..] = from.as_slice() else {
            continue;
        };
        if commands != COMMANDS_MODULE {
            continue;
        }
        for target in targets {
            let into_commands = target.first().is_some_and(|m| m == COMMANDS_MODULE);
            let own = target.get(1) == Some(command);
            if into_commands && !own {
                let file = graph.files.get(from).map(|f| f.display().to_string());
                found.push(format!(
                    "{}: the command `{}` uses `{}`, another command's module",
                    file.unwrap_or_else(|| display(from)),
                    display(from),
                    display(target)
                ));
            }
        }
    }
    let folder = cli.dir.join("src").join(COMMANDS_MODULE);
    let lines = command_lines(cli, &folder);
    if lines >= MAX_COMMAND_LINES {
        found.push(format!(
            "{}/: {lines} lines (the commands must stay under {MAX_COMMAND_LINES})",
            folder.display()
        ));
    }
    found
}

/// The lines of every source file under `folder`.
fn command_lines(cli: &CrateSources, folder: &Path) -> usize {
    cli.files
        .iter()
        .filter(|(path, _)| path.starts_with(folder))
        .map(|(_, text)| text.lines().count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::breaches;
    use crate::modules::crate_graph;
    use crate::workspace::CrateSources;
    use std::path::{Path, PathBuf};

    fn cli(files: &[(&str, String)]) -> CrateSources {
        CrateSources {
            name: "cli".into(),
            dir: PathBuf::from("crates/cli"),
            files: files
                .iter()
                .map(|(path, text)| (PathBuf::from(path), text.clone()))
                .collect(),
        }
    }

    fn check(files: &[(&str, String)]) -> Vec<String> {
        let sources = cli(files);
        let graph = crate_graph(&sources.files, Path::new("crates/cli/src/main.rs"));
        breaches(&sources, &graph)
    }

    #[test]
    fn a_command_using_another_command_or_the_commands_module_is_reported() {
        let found = check(&[
            ("crates/cli/src/main.rs", "mod commands; mod config;".into()),
            ("crates/cli/src/config.rs", "pub struct Config;".into()),
            ("crates/cli/src/commands/mod.rs", "pub mod a; pub mod b; pub fn shared() {}".into()),
            (
                "crates/cli/src/commands/a.rs",
                "use crate::config::Config; use super::b::run; fn f() { crate::commands::shared(); }"
                    .into(),
            ),
            ("crates/cli/src/commands/b.rs", "pub fn run() { self::inner(); } fn inner() {}".into()),
        ]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found
                .iter()
                .all(|f| f.starts_with("crates/cli/src/commands/a.rs"))
        );
        assert!(found.iter().any(|f| f.contains("`commands::b`")));
    }

    #[test]
    fn the_line_budget_counts_every_command_file() {
        let long = "// line\n".repeat(700);
        let found = check(&[
            ("crates/cli/src/main.rs", "mod commands;".into()),
            (
                "crates/cli/src/commands/mod.rs",
                "pub mod a; pub mod b;".into(),
            ),
            ("crates/cli/src/commands/a.rs", long.clone()),
            ("crates/cli/src/commands/b.rs", long),
        ]);
        assert_eq!(
            found,
            vec!["crates/cli/src/commands/: 1401 lines (the commands must stay under 1200)"]
        );
    }
}
