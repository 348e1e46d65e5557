//! What one source file says about modules: the modules it declares (`mod name;`,
//! `mod name { … }`), what it imports (`use …;`, brace trees expanded) and the other
//! `crate::`, `super::` and `self::` paths in its code. Modules under `#[cfg(test)]` are left
//! out whole, as is a `#[cfg(test)] use`.

use crate::lexer::{Token, tokenize};

/// The module-level facts of one module body (a file, or the braces of an inline module).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModuleBody {
    /// Child modules, in declaration order.
    pub children: Vec<ChildModule>,
    /// The paths `use` declarations import.
    pub imports: Vec<Import>,
    /// Every other path that starts with `crate`, `super`, `self` or a lower-case name, as
    /// segments (in code or in attributes such as `#[arg(value_parser = crate::parse)]`).
    pub paths: Vec<Vec<String>>,
    /// The names of the items it defines (`fn`, `struct`, `enum`, `trait`, `type`, `const`,
    /// `static`, `union`, `macro_rules!`), for following glob re-exports.
    pub defines: Vec<String>,
}

/// A `mod` declaration that is not test-only.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildModule {
    /// `mod name;`, with its `#[path = "…"]` if any: the body is in another file.
    File {
        /// The module's name.
        name: String,
        /// The file named by a `#[path]` attribute.
        path_attribute: Option<String>,
    },
    /// `mod name { … }`.
    Inline {
        /// The module's name.
        name: String,
        /// What its braces hold.
        body: ModuleBody,
    },
}

/// One leaf of a `use` tree.
#[derive(Debug, PartialEq, Eq)]
pub struct Import {
    /// The full path as written (`crate`, `super`, `self` kept), without a trailing `*`.
    pub path: Vec<String>,
    /// The name it binds (its last segment or its `as` name); `None` for a glob.
    pub binding: Option<String>,
}

/// Reads the module-level facts of a source file.
pub fn parse_file(source: &str) -> ModuleBody {
    let tokens = tokenize(source);
    let mut parser = Parser { tokens, at: 0 };
    parser.body()
}

/// Keywords whose next identifier is the name of an item they define.
const DEFINING_KEYWORDS: [&str; 9] = [
    "fn",
    "struct",
    "enum",
    "trait",
    "type",
    "const",
    "static",
    "union",
    "macro_rules",
];

/// Whether a path that may name a module of this crate begins at `tokens[at]`: `crate::`,
/// `super::`, `self::`, or `name::` with a lower-case `name` (a child module, or an outside
/// crate that resolution drops). Not the tail of a longer path, and not `$crate`, a macro's.
fn starts_path(tokens: &[Token], at: usize) -> bool {
    let first_is_module_like = matches!(
        &tokens[at],
        Token::Ident(n) if n.starts_with(|c: char| c.is_lowercase() || c == '_')
    );
    let previous = at.checked_sub(1).map(|i| &tokens[i]);
    first_is_module_like
        && tokens.get(at + 1) == Some(&Token::PathSep)
        && previous != Some(&Token::PathSep)
        && previous != Some(&Token::Punct('$'))
}

/// The segments `a::b::c` starting at `tokens[at]`, and the index after them.
fn path_at(tokens: &[Token], mut at: usize) -> (Vec<String>, usize) {
    let mut segments = Vec::new();
    while let Some(Token::Ident(segment)) = tokens.get(at) {
        segments.push(segment.clone());
        at += 1;
        if tokens.get(at) == Some(&Token::PathSep)
            && matches!(tokens.get(at + 1), Some(Token::Ident(_)))
        {
            at += 1;
        } else {
            break;
        }
    }
    (segments, at)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

/// The attributes that matter before an item.
#[derive(Default)]
struct Attributes {
    test_only: bool,
    path: Option<String>,
}

impl Parser {
    fn peek(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead)
    }

    fn is_ident(&self, ahead: usize, name: &str) -> bool {
        matches!(self.peek(ahead), Some(Token::Ident(n)) if n == name)
    }

    fn is_punct(&self, ahead: usize, c: char) -> bool {
        self.peek(ahead) == Some(&Token::Punct(c))
    }

    /// Reads items up to the end of input or the `}` closing the current body (consumed).
    fn body(&mut self) -> ModuleBody {
        let mut body = ModuleBody::default();
        let mut attributes = Attributes::default();
        let mut depth = 0usize;
        while let Some(token) = self.peek(0).cloned() {
            match token {
                Token::Punct('#') if self.is_punct(1, '[') || self.is_punct(2, '[') => {
                    self.attribute(&mut attributes, &mut body.paths);
                    continue;
                }
                Token::Ident(name) if name == "pub" => {
                    self.at += 1;
                    if self.is_punct(0, '(') {
                        self.skip_balanced('(', ')');
                    }
                    continue;
                }
                Token::Ident(name) if name == "mod" => {
                    if let Some(Token::Ident(child)) = self.peek(1).cloned() {
                        self.at += 2;
                        self.module(child, &attributes, &mut body);
                    } else {
                        self.at += 1;
                    }
                }
                Token::Ident(keyword)
                    if depth == 0 && DEFINING_KEYWORDS.contains(&keyword.as_str()) =>
                {
                    self.at += 1;
                    if self.is_punct(0, '!') {
                        self.at += 1;
                    }
                    if let Some(Token::Ident(name)) = self.peek(0).cloned()
                        && !DEFINING_KEYWORDS.contains(&name.as_str())
                    {
                        body.defines.push(name);
                    }
                }
                Token::Ident(name) if name == "use" => {
                    self.at += 1;
                    let imports = self.use_declaration();
                    if !attributes.test_only {
                        body.imports.extend(imports);
                    }
                }
                Token::Ident(_) if starts_path(&self.tokens, self.at) => {
                    let (path, end) = path_at(&self.tokens, self.at);
                    body.paths.push(path);
                    self.at = end;
                }
                Token::Punct('{') => {
                    depth += 1;
                    self.at += 1;
                }
                Token::Punct('}') => {
                    self.at += 1;
                    if depth == 0 {
                        return body;
                    }
                    depth -= 1;
                }
                _ => self.at += 1,
            }
            attributes = Attributes::default();
        }
        body
    }

    /// Reads `#[…]` or `#![…]` into `attributes`, and the paths it holds into `paths`.
    fn attribute(&mut self, attributes: &mut Attributes, paths: &mut Vec<Vec<String>>) {
        self.at += 1;
        if self.is_punct(0, '!') {
            self.at += 1;
        }
        let start = self.at + 1;
        self.skip_balanced('[', ']');
        let inner = &self.tokens[start..self.at.saturating_sub(1).max(start)];
        let mut i = 0;
        while i < inner.len() {
            if starts_path(inner, i) {
                let (path, end) = path_at(inner, i);
                paths.push(path);
                i = end;
            } else {
                i += 1;
            }
        }
        let ident =
            |i: usize, name: &str| matches!(inner.get(i), Some(Token::Ident(n)) if n == name);
        if ident(0, "cfg") {
            let mentions_test = inner.iter().any(|t| *t == Token::Ident("test".into()));
            let negated = inner.iter().any(|t| *t == Token::Ident("not".into()));
            attributes.test_only |= mentions_test && !negated;
        } else if ident(0, "path")
            && let Some(Token::Str(path)) = inner.get(2)
        {
            attributes.path = Some(path.clone());
        }
    }

    /// Skips from the opening delimiter at the cursor past its matching close.
    fn skip_balanced(&mut self, open: char, close: char) {
        let mut depth = 0usize;
        while let Some(token) = self.peek(0).cloned() {
            self.at += 1;
            if token == Token::Punct(open) {
                depth += 1;
            } else if token == Token::Punct(close) {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// After `mod name`: a file module, an inline one, or a test module to leave out.
    fn module(&mut self, name: String, attributes: &Attributes, body: &mut ModuleBody) {
        if self.is_punct(0, ';') {
            self.at += 1;
            if !attributes.test_only {
                body.children.push(ChildModule::File {
                    name,
                    path_attribute: attributes.path.clone(),
                });
            }
        } else if self.is_punct(0, '{') {
            if attributes.test_only {
                self.skip_balanced('{', '}');
            } else {
                self.at += 1;
                let inner = self.body();
                body.children
                    .push(ChildModule::Inline { name, body: inner });
            }
        }
    }

    /// After `use`: every leaf of the tree, up to and including the `;`.
    fn use_declaration(&mut self) -> Vec<Import> {
        if self.peek(0) == Some(&Token::PathSep) {
            self.at += 1;
        }
        let mut imports = Vec::new();
        self.use_tree(Vec::new(), &mut imports);
        while let Some(token) = self.peek(0).cloned() {
            self.at += 1;
            if token == Token::Punct(';') {
                break;
            }
        }
        imports
    }

    /// One use tree under `prefix`.
    fn use_tree(&mut self, mut prefix: Vec<String>, imports: &mut Vec<Import>) {
        loop {
            match self.peek(0).cloned() {
                Some(Token::Ident(segment)) => {
                    self.at += 1;
                    if self.peek(0) == Some(&Token::PathSep) {
                        self.at += 1;
                        prefix.push(segment);
                        continue;
                    }
                    let binding = if self.is_ident(0, "as") {
                        self.at += 1;
                        match self.peek(0).cloned() {
                            Some(Token::Ident(alias)) => {
                                self.at += 1;
                                alias
                            }
                            _ => segment.clone(),
                        }
                    } else if segment == "self" {
                        prefix.last().cloned().unwrap_or(segment.clone())
                    } else {
                        segment.clone()
                    };
                    if segment != "self" {
                        prefix.push(segment);
                    }
                    imports.push(Import {
                        path: prefix,
                        binding: Some(binding),
                    });
                }
                Some(Token::Punct('*')) => {
                    self.at += 1;
                    imports.push(Import {
                        path: prefix,
                        binding: None,
                    });
                }
                Some(Token::Punct('{')) => {
                    self.at += 1;
                    while !self.is_punct(0, '}') && self.peek(0).is_some() {
                        self.use_tree(prefix.clone(), imports);
                        if self.is_punct(0, ',') {
                            self.at += 1;
                        }
                    }
                    self.at += 1;
                }
                _ => {}
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ChildModule, Import, ModuleBody, parse_file};

    fn import(path: &str, binding: Option<&str>) -> Import {
        Import {
            path: path.split("::").map(str::to_owned).collect(),
            binding: binding.map(str::to_owned),
        }
    }

    fn segments(path: &str) -> Vec<String> {
        path.split("::").map(str::to_owned).collect()
    }

    #[test]
    fn use_trees_expand_to_one_import_per_leaf() {
        let body = parse_file(
            "pub(crate) use crate::a::{b::C, d::{self, E as F}, *};\nuse ::std::fmt;\nuse super::G;",
        );
        assert_eq!(
            body.imports,
            vec![
                import("crate::a::b::C", Some("C")),
                import("crate::a::d", Some("d")),
                import("crate::a::d::E", Some("F")),
                import("crate::a", None),
                import("std::fmt", Some("fmt")),
                import("super::G", Some("G")),
            ]
        );
    }

    #[test]
    fn code_paths_are_collected_but_not_macro_type_or_visibility_paths() {
        let body = parse_file(
            "pub(in crate::x) fn f() { crate::a::b(); super::super::c::D; self::e::F; $crate::g::H; Self::new(); child::g(); }",
        );
        assert_eq!(
            body.paths,
            vec![
                segments("crate::a::b"),
                segments("super::super::c::D"),
                segments("self::e::F"),
                segments("child::g"),
            ]
        );
    }

    #[test]
    fn attribute_paths_count_and_top_level_items_are_defined() {
        let body = parse_file(
            "#[arg(value_parser = crate::commands::parse)] pub struct Args;\n\
             pub(crate) const fn g() {} impl Args { fn method() {} } macro_rules! m { () => {} }",
        );
        assert_eq!(body.paths, vec![segments("crate::commands::parse")]);
        assert_eq!(body.defines, vec!["Args", "g", "m"]);
    }

    #[test]
    fn test_modules_and_test_imports_are_left_out() {
        let body = parse_file(
            "#[cfg(test)]\nmod tests { use crate::x::Y; fn t() { crate::z::W; } }\n\
             #[cfg(test)] mod more;\n#[cfg(test)] use crate::q::R;\n\
             #[cfg(not(test))] mod real;\nfn after() { crate::kept::K; }",
        );
        assert_eq!(
            body,
            ModuleBody {
                children: vec![ChildModule::File {
                    name: "real".into(),
                    path_attribute: None
                }],
                imports: vec![],
                paths: vec![segments("crate::kept::K")],
                defines: vec!["after".into()],
            }
        );
    }

    #[test]
    fn inline_modules_nest_and_file_modules_keep_their_path_attribute() {
        let body = parse_file(
            "#[path = \"other.rs\"] pub mod a;\nmod b { use super::a::X; mod c; }\nfn f() { crate::d::E; }",
        );
        assert_eq!(
            body.children,
            vec![
                ChildModule::File {
                    name: "a".into(),
                    path_attribute: Some("other.rs".into())
                },
                ChildModule::Inline {
                    name: "b".into(),
                    body: ModuleBody {
                        children: vec![ChildModule::File {
                            name: "c".into(),
                            path_attribute: None
                        }],
                        imports: vec![import("super::a::X", Some("X"))],
                        paths: vec![],
                        defines: vec![],
                    }
                },
            ]
        );
        assert_eq!(
            body.paths,
            vec![segments("crate::d::E")],
            "the inline module's `}}` ends only it"
        );
    }
}
