//! The server's modules stand in layers (docs/architecture.md, "Layers"): a module uses
//! only modules of its own layer or of the layers below it, and no module of any crate of
//! the workspace reaches itself again through the modules it uses.
//!
//! Read from the sources: every `crate::` path in code (a `use crate::…` import, or a path
//! written out in place), comments and string literals left out. The graph is the
//! production code's: a test module (`#[cfg(test)] mod …`, or a `tests.rs` file) may use
//! any module of its crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The server's layers, lowest first, and the top-level modules of each.
const LAYERS: &[(&str, &[&str])] = &[
    // The configuration model: values and their parsing, no runtime types.
    ("settings", &["config"]),
    // Algorithms and writers with no HTTP and no server state: they are handed what they
    // work on, and define the traits the stores implement for them.
    (
        "mechanisms",
        &[
            "metrics",
            "telemetry",
            "watch",
            "limits",
            "quota",
            "audit",
            "tls",
            "verified",
        ],
    ),
    // The store adapters: Redis, SQLite and PostgreSQL.
    ("stores", &["store", "directory"]),
    // What a request runs on (the runtime, the state) and its steps.
    (
        "request",
        &[
            "runtime",
            "state",
            "rejection",
            "extract",
            "form",
            "credentials",
            "authorize",
            "issue",
            "charge",
            "context",
        ],
    ),
    // The HTTP surface: the endpoints and the layer around them.
    ("http", &["routes", "frame", "hardening", "request_id"]),
    // Listeners, connections, reloads, and the crate's root.
    ("server", &["server", "reload", "lib"]),
];

/// Module → (module it uses → the files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The code of a Rust source without its comments and the contents of its string and
/// character literals (each replaced by a space), so that a path quoted or mentioned in
/// a comment is not taken for a use.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < b.len() {
                if src[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if src[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            i = src[body..]
                .find(&close)
                .map_or(b.len(), |e| body + e + close.len());
            out.push(' ');
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if b[i] == b'\'' && (b.get(i + 1) == Some(&b'\\') || b.get(i + 2) == Some(&b'\'')) {
            // A character literal ('x', '\n', '\''); a lifetime ('a) is left as code.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `code` without its inline test modules: each `#[cfg(test)]` followed by `mod name {…}`.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let is_inline_mod = after.trim_start().starts_with("mod ")
            && after.find('{').is_some_and(|b| !after[..b].contains(';'));
        if !is_inline_mod {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let open = after.find('{').expect("checked above");
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `r"`, `r#"`, `br"`…: the number of `#`.
fn raw_string_start(rest: &str) -> Option<usize> {
    let after_b = rest.strip_prefix('b').unwrap_or(rest);
    let after_r = after_b.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    after_r[hashes..].starts_with('"').then_some(hashes)
}

/// The top-level modules a piece of code uses through `crate::`: `crate::a::…`,
/// `use crate::a;`, and each item of `use crate::{a::…, b, c::{…}}`.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `crate` as a word, not the end of `my_crate::`.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            used.extend(first_ident(&item));
        } else {
            used.extend(first_ident(trimmed));
        }
    }
    used
}

fn first_ident(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_owned())
}

/// The module graph of the crate whose sources are `files` (path relative to `src/`,
/// text); a file belongs to the top-level module its path starts with. A name the crate's
/// root re-exports (`crate::AppState`) counts as a use of the module it comes from.
fn graph(files: &[(String, String)]) -> Graph {
    let reexports = root_reexports(files);
    let mut g = Graph::new();
    for (path, text) in files {
        if path == "tests.rs" || path.ends_with("/tests.rs") {
            continue;
        }
        let module = top_module(path);
        let entry = g.entry(module.clone()).or_default();
        for used in used_modules(&without_test_modules(&code_only(text))) {
            let used = reexports.get(&used).cloned().unwrap_or(used);
            if used != module && used != "self" && used != "super" {
                entry.entry(used).or_default().insert(path.clone());
            }
        }
    }
    g
}

/// Name → module for each `pub use module::name;` or `pub use module::{a, b};` of the
/// crate's root (`lib.rs` or `main.rs`).
fn root_reexports(files: &[(String, String)]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let roots = files
        .iter()
        .filter(|(p, _)| p == "lib.rs" || p == "main.rs");
    for (_, text) in roots {
        let code = code_only(text);
        for statement in code.split(';') {
            let Some(path) = statement.trim().strip_prefix("pub use ") else {
                continue;
            };
            let Some((module, names)) = path.split_once("::") else {
                continue;
            };
            let names = names.trim().trim_start_matches('{').trim_end_matches('}');
            for name in names.split(',') {
                // `a as b` is known as `b`.
                if let Some(name) = name.split_whitespace().last() {
                    map.insert(name.to_owned(), module.trim().to_owned());
                }
            }
        }
    }
    map
}

fn top_module(path: &str) -> String {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first).to_owned()
}

/// Each use against the order of [`LAYERS`], and each module no layer lists.
fn layer_violations(g: &Graph, layers: &[(&str, &[&str])]) -> Vec<String> {
    let layer_of = |m: &str| layers.iter().position(|(_, modules)| modules.contains(&m));
    let mut found = Vec::new();
    for (module, uses) in g {
        let Some(own) = layer_of(module) else {
            found.push(format!(
                "`{module}` is in no layer: add it to LAYERS and docs/architecture.md"
            ));
            continue;
        };
        for (used, files) in uses {
            match layer_of(used) {
                Some(theirs) if theirs > own => found.push(format!(
                    "`{module}` ({}) uses `{used}` ({}), a layer above it, in {files:?}",
                    layers[own].0, layers[theirs].0
                )),
                Some(_) => {}
                None => found.push(format!("`{used}`, used by `{module}`, is in no layer")),
            }
        }
    }
    found
}

/// The cycles of `g`: each strongly connected set of more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.g.get(v).into_iter().flat_map(|uses| uses.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self
                    .stack
                    .iter()
                    .position(|&m| m == v)
                    .expect("on the stack");
                let set: Vec<String> = self.stack.drain(at..).map(str::to_owned).collect();
                if set.len() > 1 {
                    self.found.push(set);
                }
            }
        }
    }
    let mut walk = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in g.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// Every `.rs` file under `src`, as (path relative to `src`, text).
fn sources(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).expect("under src");
                let text = std::fs::read_to_string(&path).expect("a readable source");
                out.push((rel.to_string_lossy().into_owned(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    assert!(!out.is_empty(), "no sources under {}", src.display());
    out
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crates folder")
        .to_path_buf()
}

#[test]
fn the_server_modules_use_only_their_own_layer_and_those_below() {
    let g = graph(&sources(&crates_dir().join("keygate-server/src")));
    let found = layer_violations(&g, LAYERS);
    assert!(
        found.is_empty(),
        "against the layers:\n{}",
        found.join("\n")
    );
    // Every layer's modules exist: a module renamed is renamed here too.
    for (layer, modules) in LAYERS {
        for m in *modules {
            assert!(
                g.contains_key(*m),
                "`{m}` ({layer}) is not a module of the server"
            );
        }
    }
}

#[test]
fn no_crate_of_the_workspace_has_a_module_cycle() {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(crates_dir())
        .expect("the crates folder")
        .map(|e| e.expect("an entry").path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    crates.sort();
    assert!(crates.len() >= 4, "the workspace's crates: {crates:?}");
    for src in crates {
        let found = cycles(&graph(&sources(&src)));
        assert!(
            found.is_empty(),
            "{}: modules in a cycle: {found:?}",
            src.display()
        );
    }
}

#[test]
fn the_checks_find_a_use_against_the_layers_and_a_cycle() {
    let files = [
        // Paths in a comment, a doc comment and strings are not uses.
        (
            "low.rs",
            "// crate::high\n/// [`crate::high`]\nconst A: &str = \"crate::high\";\nconst B: &str = r#\"crate::high\"#;\nconst C: char = '\"';\nuse crate::mid::Thing;\nfn f<'a>(_: &'a str) {}\n",
        ),
        ("mid/mod.rs", "use crate::{low, high::{X, Y}};\n"),
        (
            "high.rs",
            "fn f() { crate::mid::g() }\n#[cfg(test)]\nmod tests {\n    use crate::other::x;\n    fn t() { if true { crate::other::y() } }\n}\n",
        ),
        ("high/tests.rs", "use crate::other::z;\n"),
        ("other.rs", "use my_crate::low;\n"),
        (
            "lib.rs",
            "pub use high::{Top, Other as Renamed};\nfn f() { crate::Renamed::new(); }\n",
        ),
    ];
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    let g = graph(&files);
    assert_eq!(
        g["low"].keys().collect::<Vec<_>>(),
        ["mid"],
        "comments and strings are not uses"
    );
    assert_eq!(g["mid"].keys().collect::<Vec<_>>(), ["high", "low"]);
    assert_eq!(
        g["high"].keys().collect::<Vec<_>>(),
        ["mid"],
        "test modules, inline or in tests.rs, are not counted"
    );
    assert!(g["other"].is_empty(), "another crate's path is not a use");
    assert_eq!(
        g["lib"].keys().collect::<Vec<_>>(),
        ["high"],
        "a name the root re-exports is a use of its module"
    );
    let layers: &[(&str, &[&str])] = &[
        ("low", &["low"]),
        ("mid", &["mid", "other"]),
        ("high", &["high", "lib"]),
    ];
    let found = layer_violations(&g, layers);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("`low` (low) uses `mid` (mid)"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("`mid` (mid) uses `high` (high)"),
        "{found:?}"
    );
    let mut cycle = cycles(&g);
    assert_eq!(cycle.len(), 1);
    cycle[0].sort();
    assert_eq!(cycle[0], ["high", "low", "mid"]);
    let missing: &[(&str, &[&str])] = &[("one", &["low", "mid", "high", "lib"])];
    assert_eq!(
        layer_violations(&g, missing),
        ["`other` is in no layer: add it to LAYERS and docs/architecture.md"]
    );
}
