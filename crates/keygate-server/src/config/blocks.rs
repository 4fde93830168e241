//! The `[[clients]]` and `[[users]]` blocks of a file, found by its tokens without parsing
//! it whole. The TOML parser holds every token and event of a text at once (hundreds of
//! bytes per client), so a file with a million clients is parsed a batch of blocks at a
//! time instead (see `Config::parse_with`), and its other settings on their own.
//!
//! Only the plain layout is split: blocks headed exactly `[[clients]]` or `[[users]]`. Any
//! other header naming `clients` or `users` (`[clients.x]`, `["users"]`…) leaves the file
//! to be parsed whole, as does any error: the whole parse then gives the error's message.

use toml_parser::Source;
use toml_parser::lexer::TokenKind;

/// Clients or users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Clients,
    Users,
}

impl Kind {
    /// The key of the array of tables.
    pub(super) fn key(self) -> &'static str {
        match self {
            Kind::Clients => "clients",
            Kind::Users => "users",
        }
    }
}

/// A file cut into its blocks and the rest.
#[derive(Debug, Default)]
pub(super) struct Blocks<'a> {
    /// Everything outside the blocks, in order.
    pub(super) rest: String,
    /// Each block's text, header included, in order.
    pub(super) blocks: Vec<(Kind, &'a str)>,
}

/// Where a header starts a section.
enum Section {
    Block(Kind),
    Other,
}

/// The blocks of `text`; `None` when it has none, or not in the plain layout.
pub(super) fn split(text: &str) -> Option<Blocks<'_>> {
    // Byte offsets where each top-level header starts, with what it heads.
    let mut sections: Vec<(usize, Section)> = Vec::new();
    let mut tokens = Source::new(text).lex().peekable();
    let mut line_start = true;
    // Nesting of arrays and inline tables in values: a `[` inside one opens no header.
    let mut depth = 0usize;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Newline => line_start = true,
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Eof => break,
            TokenKind::LeftSquareBracket if line_start && depth == 0 => {
                let start = token.span().start();
                let mut end = token.span().end();
                while let Some(next) = tokens.peek() {
                    if matches!(next.kind(), TokenKind::Newline | TokenKind::Eof) {
                        break;
                    }
                    if next.kind() != TokenKind::Comment {
                        end = next.span().end();
                    }
                    tokens.next();
                }
                let header = &text[start..end];
                let is = |name: &str| {
                    let squeezed = header.bytes().filter(|b| !b.is_ascii_whitespace());
                    squeezed.eq(name.bytes())
                };
                let section = if is("[[clients]]") {
                    Section::Block(Kind::Clients)
                } else if is("[[users]]") {
                    Section::Block(Kind::Users)
                } else if header.contains("clients") || header.contains("users") {
                    return None;
                } else {
                    Section::Other
                };
                sections.push((start, section));
            }
            kind => {
                line_start = false;
                match kind {
                    TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
                    TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                        depth = depth.saturating_sub(1);
                    }
                    _ => {}
                }
            }
        }
    }
    if !sections.iter().any(|(_, s)| matches!(s, Section::Block(_))) {
        return None;
    }
    let mut out = Blocks {
        rest: String::new(),
        blocks: Vec::new(),
    };
    let first = sections.first().map_or(text.len(), |(at, _)| *at);
    out.rest.push_str(&text[..first]);
    for (i, (start, section)) in sections.iter().enumerate() {
        let end = sections.get(i + 1).map_or(text.len(), |(at, _)| *at);
        match section {
            Section::Block(kind) => out.blocks.push((*kind, &text[*start..end])),
            Section::Other => out.rest.push_str(&text[*start..end]),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_cut_at_top_level_headers_only() {
        let text = "a = 1\n[server]\nlisten = \"x\"\n[[clients]]\nid = \"a\"\nscopes = [\n  [1],\n]\n  [[users]] # indented\nname = \"[[clients]]\"\nnote = '''\n[token]\n'''\n[token]\nsecret = \"s\"\n[[clients]]\nid = \"b\"";
        let b = split(text).unwrap();
        assert_eq!(
            b.rest,
            "a = 1\n[server]\nlisten = \"x\"\n[token]\nsecret = \"s\"\n"
        );
        let kinds: Vec<Kind> = b.blocks.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [Kind::Clients, Kind::Users, Kind::Clients]);
        assert_eq!(
            b.blocks[0].1,
            "[[clients]]\nid = \"a\"\nscopes = [\n  [1],\n]\n  "
        );
        assert_eq!(
            b.blocks[1].1,
            "[[users]] # indented\nname = \"[[clients]]\"\nnote = '''\n[token]\n'''\n"
        );
        assert_eq!(b.blocks[2].1, "[[clients]]\nid = \"b\"");
    }

    #[test]
    fn other_layouts_are_left_whole() {
        assert!(split("[token]\nsecret = \"s\"\n").is_none(), "no blocks");
        assert!(split("[[clients]]\nid = \"a\"\n[clients.x]\n").is_none());
        assert!(split("[[ \"clients\" ]]\nid = \"a\"\n").is_none());
        assert!(split("[[clients]]\nid = \"a\"\n[[users.x]]\n").is_none());
    }
}
