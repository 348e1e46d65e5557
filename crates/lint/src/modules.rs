//! A crate's module tree, read from its sources, and the dependencies between its files'
//! modules.
//!
//! A node is a module with a file of its own (`src/lib.rs` is `crate`, `src/a/b.rs` is
//! `a::b`); an inline module counts as part of the file that holds it. A module depends on
//! another when one of its `use` declarations, or a `crate::…`, `super::…` or `self::…` path in
//! its code, names an item of that module. A path that reaches an item through a re-export
//! (`crate::Item` where `lib.rs` has `pub use crate::a::Item`) is followed to the module that
//! defines it. `mod` declarations alone make no dependency: a parent holding its children is
//! not a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::parse::{ChildModule, Import, ModuleBody, parse_file};

/// A module path from the crate root; empty for the root.
pub type ModulePath = Vec<String>;

/// How many re-exports a path is followed through before giving up (a guard against
/// re-export loops).
const MAX_REEXPORT_HOPS: usize = 16;

/// One module of the tree, inline or with a file of its own.
#[derive(Debug)]
struct Module {
    /// Its own path.
    path: ModulePath,
    /// The file module it belongs to (itself, for a file module).
    file_module: ModulePath,
    /// The names its `use` declarations bind, with the paths they bind them to.
    bindings: BTreeMap<String, Vec<String>>,
    /// The paths of its glob imports (`use a::*`), without the `*`.
    globs: Vec<Vec<String>>,
    /// The names of the items it defines.
    defines: Vec<String>,
    /// Its imports and code paths as written, resolved once the tree is complete.
    written: Vec<Vec<String>>,
}

/// A crate's modules and the dependencies between its file modules.
#[derive(Debug, Default)]
pub struct CrateGraph {
    /// The file of each file module.
    pub files: BTreeMap<ModulePath, PathBuf>,
    /// For each file module, the other file modules it depends on.
    pub dependencies: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

/// Builds the module graph of the crate whose root file is `root` (e.g. `src/lib.rs`), reading
/// files from `sources` (path → contents); a declared module whose file is missing is skipped.
pub fn crate_graph(sources: &BTreeMap<PathBuf, String>, root: &Path) -> CrateGraph {
    let mut modules = BTreeMap::new();
    let mut graph = CrateGraph::default();
    if let Some(source) = sources.get(root) {
        let child_dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut tree = TreeBuilder {
            sources,
            modules: &mut modules,
            files: &mut graph.files,
        };
        tree.file_module(Vec::new(), root, child_dir, source);
    }
    for module in modules.values() {
        let node = module.file_module.clone();
        let entry = graph.dependencies.entry(node.clone()).or_default();
        for target in module
            .written
            .iter()
            .filter_map(|path| resolve_written(&modules, module, path))
            .map(|absolute| owner_of(&modules, &absolute, MAX_REEXPORT_HOPS))
        {
            if target != node {
                entry.insert(target);
            }
        }
    }
    graph
}

/// Walks `mod` declarations from the root file.
struct TreeBuilder<'a> {
    sources: &'a BTreeMap<PathBuf, String>,
    modules: &'a mut BTreeMap<ModulePath, Module>,
    files: &'a mut BTreeMap<ModulePath, PathBuf>,
}

impl TreeBuilder<'_> {
    fn file_module(&mut self, path: ModulePath, file: &Path, child_dir: PathBuf, source: &str) {
        self.files.insert(path.clone(), file.to_path_buf());
        let body = parse_file(source);
        self.module(path.clone(), path, file, child_dir, body);
    }

    /// Records `body` as module `path` (of file module `file_module`, in `file`), then its
    /// children, whose files are looked up in `child_dir`.
    fn module(
        &mut self,
        path: ModulePath,
        file_module: ModulePath,
        file: &Path,
        child_dir: PathBuf,
        body: ModuleBody,
    ) {
        let bindings = body
            .imports
            .iter()
            .filter_map(|Import { path, binding }| Some((binding.clone()?, path.clone())))
            .collect();
        let globs = body
            .imports
            .iter()
            .filter(|import| import.binding.is_none())
            .map(|import| import.path.clone())
            .collect();
        let written = body
            .imports
            .into_iter()
            .map(|import| import.path)
            .chain(body.paths)
            .collect();
        self.modules.insert(
            path.clone(),
            Module {
                path: path.clone(),
                file_module: file_module.clone(),
                bindings,
                globs,
                defines: body.defines,
                written,
            },
        );
        for child in body.children {
            match child {
                ChildModule::Inline { name, body } => {
                    let mut child_path = path.clone();
                    child_path.push(name.clone());
                    self.module(
                        child_path,
                        file_module.clone(),
                        file,
                        child_dir.join(&name),
                        body,
                    );
                }
                ChildModule::File {
                    name,
                    path_attribute,
                } => {
                    let candidates = match path_attribute {
                        Some(relative) => {
                            let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                            vec![dir.join(relative)]
                        }
                        None => vec![
                            child_dir.join(format!("{name}.rs")),
                            child_dir.join(&name).join("mod.rs"),
                        ],
                    };
                    let Some((child_file, source)) = candidates
                        .into_iter()
                        .find_map(|c| self.sources.get(&c).map(|s| (c, s)))
                    else {
                        continue;
                    };
                    let grandchild_dir = if child_file.file_name().is_some_and(|f| f == "mod.rs") {
                        child_file
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_default()
                    } else {
                        child_dir.join(&name)
                    };
                    let mut child_path = path.clone();
                    child_path.push(name);
                    self.file_module(child_path, &child_file, grandchild_dir, source);
                }
            }
        }
    }
}

/// The absolute path (from the crate root) that `written` names in `module`, or `None` for a
/// path outside the crate (`std::…`, another crate).
fn resolve_written(
    modules: &BTreeMap<ModulePath, Module>,
    module: &Module,
    written: &[String],
) -> Option<Vec<String>> {
    let here = module.path.clone();
    let (first, rest) = written.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some([here, rest.to_vec()].concat()),
        "super" => {
            let mut base = here;
            let mut rest = rest;
            base.pop();
            while let Some(("super", tail)) = rest.split_first().map(|(s, t)| (s.as_str(), t)) {
                base.pop();
                rest = tail;
            }
            Some([base, rest.to_vec()].concat())
        }
        // A path may start at a child module of this one (`use child::Item`, `child::f()`);
        // any other first segment is another crate (`std::…`) or a local name.
        child => {
            let mut candidate = here;
            candidate.push(child.to_owned());
            modules
                .contains_key(&candidate)
                .then(|| [candidate, rest.to_vec()].concat())
        }
    }
}

/// The file module that defines the item at `absolute`: the deepest module on the path, or,
/// where the next segment is a name that module imports (by name or through a glob whose
/// module has it), the owner of what it imports.
fn owner_of(
    modules: &BTreeMap<ModulePath, Module>,
    absolute: &[String],
    hops_left: usize,
) -> ModulePath {
    let depth = (0..=absolute.len())
        .rev()
        .find(|&n| modules.contains_key(&absolute[..n]))
        .unwrap_or(0);
    let Some(module) = modules.get(&absolute[..depth]) else {
        return Vec::new();
    };
    let Some(name) = absolute.get(depth) else {
        return module.file_module.clone();
    };
    if hops_left == 0 || module.defines.contains(name) {
        return module.file_module.clone();
    }
    let rest = &absolute[depth + 1..];
    if let Some(target) = module
        .bindings
        .get(name)
        .and_then(|imported| resolve_written(modules, module, imported))
    {
        return owner_of(modules, &[target, rest.to_vec()].concat(), hops_left - 1);
    }
    let from_glob = module.globs.iter().find_map(|glob| {
        let target = resolve_written(modules, module, glob)?;
        let source = modules.get(&target)?;
        (source.defines.contains(name) || source.bindings.contains_key(name)).then_some(target)
    });
    match from_glob {
        Some(target) => owner_of(
            modules,
            &[target, absolute[depth..].to_vec()].concat(),
            hops_left - 1,
        ),
        None => module.file_module.clone(),
    }
}

/// A module path as the report shows it: `a::b`, or `crate` for the root.
pub fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

#[cfg(test)]
mod tests {
    use super::{crate_graph, display};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn sources(files: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
        files
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect()
    }

    fn edges(files: &[(&str, &str)]) -> Vec<String> {
        let graph = crate_graph(&sources(files), Path::new("src/lib.rs"));
        graph
            .dependencies
            .iter()
            .flat_map(|(from, to)| {
                to.iter()
                    .map(move |t| format!("{} -> {}", display(from), display(t)))
            })
            .collect()
    }

    #[test]
    fn mod_declarations_make_no_edge_but_use_and_paths_do() {
        let found = edges(&[
            ("src/lib.rs", "mod a; mod b;"),
            (
                "src/a.rs",
                "mod inner; fn f() { super::b::g(); inner::h(); std::mem::drop(1); }",
            ),
            ("src/a/inner.rs", "pub fn h() { crate::b::Thing; }"),
            ("src/b.rs", "pub struct Thing; pub fn g() {}"),
        ]);
        assert_eq!(found, vec!["a -> a::inner", "a -> b", "a::inner -> b"]);
    }

    #[test]
    fn reexports_are_followed_to_the_defining_module() {
        let found = edges(&[
            ("src/lib.rs", "mod a; mod b; pub use crate::b::Thing;"),
            ("src/a.rs", "fn f() -> crate::Thing { todo!() }"),
            ("src/b.rs", "pub struct Thing;"),
        ]);
        assert_eq!(found, vec!["crate -> b", "a -> b"]);
    }

    #[test]
    fn glob_reexports_are_followed_to_the_module_that_has_the_name() {
        let found = edges(&[
            (
                "src/lib.rs",
                "mod a; mod b; mod c; pub use b::*; pub use c::*;",
            ),
            ("src/a.rs", "fn f() -> crate::Thing { todo!() }"),
            ("src/b.rs", "pub fn other() {}"),
            ("src/c.rs", "pub struct Thing;"),
        ]);
        assert_eq!(found, vec!["crate -> b", "crate -> c", "a -> c"]);
    }

    #[test]
    fn nested_files_super_chains_and_inline_modules_resolve() {
        let found = edges(&[
            ("src/lib.rs", "mod routes; mod state;"),
            ("src/routes/mod.rs", "mod predict;"),
            (
                "src/routes/predict.rs",
                "use super::super::state::State; mod inner { use crate::routes::X; }",
            ),
            ("src/state.rs", "pub struct State;"),
        ]);
        assert_eq!(
            found,
            vec!["routes::predict -> routes", "routes::predict -> state"]
        );
    }

    #[test]
    fn test_modules_and_missing_files_are_skipped() {
        let found = edges(&[
            ("src/lib.rs", "mod a; mod gone; #[cfg(test)] mod tests;"),
            ("src/a.rs", "#[cfg(test)] mod tests { use crate::b::X; }"),
            ("src/tests.rs", "use crate::a::Y;"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }
}
