//! Just enough of Rust's lexical grammar to find module paths: identifiers, string literals
//! (kept, for `#[path = "…"]`) and punctuation. Comments (doc comments included), character,
//! byte and number literals and lifetimes are dropped, so that a path in a comment or a
//! string never counts as a dependency.

/// One token of a Rust source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An identifier or keyword (`r#name` is read as `name`).
    Ident(String),
    /// The contents of a string literal, escapes left as written.
    Str(String),
    /// The path separator `::`.
    PathSep,
    /// Any other punctuation character.
    Punct(char),
}

/// Splits `source` into tokens.
pub fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i);
        } else if c == '"' {
            let (text, end) = read_string(&chars, i + 1);
            tokens.push(Token::Str(text));
            i = end;
        } else if let Some(start) = raw_string_start(&chars, i) {
            let (text, end) = read_raw_string(&chars, start);
            tokens.push(Token::Str(text));
            i = end;
        } else if (c == 'b' || c == 'c') && next == Some('"') {
            let (text, end) = read_string(&chars, i + 2);
            tokens.push(Token::Str(text));
            i = end;
        } else if c == 'b' && next == Some('\'') {
            i = skip_char_literal(&chars, i + 1);
        } else if c == '\'' {
            i = skip_char_literal(&chars, i);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == 'r'
            && next == Some('#')
            && chars.get(i + 2).is_some_and(|&c| is_ident_start(c))
        {
            let (ident, end) = read_ident(&chars, i + 2);
            tokens.push(Token::Ident(ident));
            i = end;
        } else if is_ident_start(c) {
            let (ident, end) = read_ident(&chars, i);
            tokens.push(Token::Ident(ident));
            i = end;
        } else if c == ':' && next == Some(':') {
            tokens.push(Token::PathSep);
            i += 2;
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn read_ident(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

/// The index after the block comment opening at `start` (block comments nest in Rust).
fn skip_block_comment(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// The contents of a string whose first character is at `start`, and the index after it.
fn read_string(chars: &[char], start: usize) -> (String, usize) {
    let mut i = start;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    let end = i.min(chars.len());
    (chars[start..end].iter().collect(), end + 1)
}

/// Where the `#`s of a raw string (`r"`, `r#"`, `br"`, `cr#"`, …) begin, if one starts at `i`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let after_prefix = match (chars[i], chars.get(i + 1).copied()) {
        ('r', _) => i + 1,
        ('b' | 'c', Some('r')) => i + 2,
        _ => return None,
    };
    let mut j = after_prefix;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(after_prefix)
}

/// The contents of the raw string whose `#`s begin at `start`, and the index after it.
fn read_raw_string(chars: &[char], start: usize) -> (String, usize) {
    let hashes = chars[start..].iter().take_while(|&&c| c == '#').count();
    let body = start + hashes + 1;
    let mut i = body;
    while i < chars.len() {
        if chars[i] == '"'
            && chars[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return (chars[body..i].iter().collect(), i + 1 + hashes);
        }
        i += 1;
    }
    (chars[body..].iter().collect(), chars.len())
}

/// The index after the character literal or lifetime whose quote is at `quote`.
fn skip_char_literal(chars: &[char], quote: usize) -> usize {
    match (chars.get(quote + 1), chars.get(quote + 2)) {
        // '\n', '\'', '\u{1F600}'
        (Some('\\'), _) => {
            let mut i = quote + 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i + 1
        }
        // 'a'
        (Some(_), Some('\'')) => quote + 3,
        // A lifetime or label: 'a, 'static.
        _ => {
            let mut i = quote + 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Token, tokenize};

    fn idents(source: &str) -> Vec<String> {
        tokenize(source)
            .into_iter()
            .filter_map(|t| match t {
                Token::Ident(name) => Some(name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn comments_strings_and_chars_hide_their_contents() {
        let source = r####"
            /// see crate::doc
            // crate::line
            /* crate::block /* nested */ still */
            let s1 = "crate::string \" quoted";
            let s2 = r#"crate::raw "# ;
            let c1 = '"'; let c2 = '\''; let c3 = b'x';
            fn f<'a>(x: &'a str) {}
            real
        "####;
        let names = idents(source);
        assert!(!names.iter().any(|n| n == "crate"), "{names:?}");
        assert_eq!(names.last().map(String::as_str), Some("real"));
        assert!(names.contains(&"f".to_owned()));
        assert!(
            !names.contains(&"a".to_owned()),
            "lifetime taken for an identifier"
        );
    }

    #[test]
    fn path_separators_and_strings_are_tokens() {
        assert_eq!(
            tokenize(r#"#[path = "x.rs"] crate::a"#),
            vec![
                Token::Punct('#'),
                Token::Punct('['),
                Token::Ident("path".into()),
                Token::Punct('='),
                Token::Str("x.rs".into()),
                Token::Punct(']'),
                Token::Ident("crate".into()),
                Token::PathSep,
                Token::Ident("a".into()),
            ]
        );
    }

    #[test]
    fn raw_identifiers_lose_their_prefix() {
        assert_eq!(idents("r#type::x"), vec!["type", "x"]);
    }
}
