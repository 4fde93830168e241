//! The environment around the file: `${VAR}` interpolation, `KEYGATE_<SECTION>_<KEY>`
//! overrides, humane durations (`30m`, `90d`), and parse errors that never quote a secret.

use std::collections::BTreeMap;

use super::blocks;
use super::model::{ClientConfig, SECTIONS, UserConfig};
use super::{Config, ConfigError};

/// One `[[clients]]` or `[[users]]` entry, as read, with its index in the file.
#[derive(Debug)]
pub(crate) enum Entry {
    Client(usize, ClientConfig),
    User(usize, UserConfig),
}

/// Blocks parsed at once: enough to spread the parser's set-up, few enough that its
/// tokens of them stay small.
const BATCH: usize = 256;

impl Config {
    /// Parses TOML text with `env` as the environment. Does not validate values.
    pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let (mut clients, mut users) = (Vec::new(), Vec::new());
        let mut config = Config::parse_with(text, env, &mut |entry| match entry {
            Entry::Client(_, c) => clients.push(c),
            Entry::User(_, u) => users.push(u),
        })?;
        config.clients = clients;
        config.users = users;
        Ok(config)
    }

    /// [`Config::parse`], handing each client and user to `entry`, in order, as soon as it
    /// is read; the `Config` returned has none. A file in the plain layout (see
    /// `blocks.rs`) is parsed a batch of entries at a time, so that its size never costs
    /// the parser's whole-document memory; the result, errors included, is the same.
    pub(crate) fn parse_with(
        text: &str,
        env: &BTreeMap<String, String>,
        entry: &mut dyn FnMut(Entry),
    ) -> Result<Config, ConfigError> {
        let Some(blocks) = blocks::split(text) else {
            return Self::parse_whole(text, env, entry);
        };
        // A message about the text, with its line and column, must be the whole parse's.
        let whole_error = |fallback: ConfigError| {
            Self::parse_whole(text, env, &mut drop)
                .err()
                .unwrap_or(fallback)
        };
        let config = match Self::parse_whole(&blocks.rest, env, &mut drop) {
            Ok(c) if c.clients.is_empty() && c.users.is_empty() => c,
            Ok(_) => return Self::parse_whole(text, env, entry),
            Err(e) => return Err(whole_error(e)),
        };
        let mut next = [0usize, 0usize];
        let mut batch = String::new();
        for group in blocks.blocks.chunk_by(|a, b| a.0 == b.0) {
            for part in group.chunks(BATCH) {
                let kind = part[0].0;
                batch.clear();
                for (_, block) in part {
                    batch.push_str(block);
                    if !block.ends_with('\n') {
                        batch.push('\n');
                    }
                }
                let read = parse_batch(&batch, kind, part.len(), env, &mut next, entry);
                match read {
                    Ok(()) => {}
                    Err(Batch::Text(e)) => return Err(whole_error(e)),
                    Err(Batch::Value(e)) => return Err(e),
                }
            }
        }
        Ok(config)
    }

    /// The whole text through the parser at once.
    fn parse_whole(
        text: &str,
        env: &BTreeMap<String, String>,
        entry: &mut dyn FnMut(Entry),
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("file", toml_error(&e)))?;
        interpolate_table(&mut table, "", env)?;
        apply_env_overrides(&mut table, env)?;
        let value = toml::Value::Table(table);
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(
                if path == "." { "file".into() } else { path },
                one_line(&e.into_inner().to_string()),
            )
        })?;
        let clients = std::mem::take(&mut config.clients).into_iter();
        clients
            .enumerate()
            .for_each(|(i, c)| entry(Entry::Client(i, c)));
        let users = std::mem::take(&mut config.users).into_iter();
        users
            .enumerate()
            .for_each(|(i, u)| entry(Entry::User(i, u)));
        Ok(config)
    }
}

/// A batch of blocks read straight into entries.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Direct {
    #[serde(default)]
    clients: Vec<ClientConfig>,
    #[serde(default)]
    users: Vec<UserConfig>,
}

/// Why a batch was not read.
enum Batch {
    /// The text: the whole parse says where.
    Text(ConfigError),
    /// An entry's value, named by its setting as the whole parse names it.
    Value(ConfigError),
}

/// `count` blocks of `kind` in `text`: each entry interpolated and read as the whole parse
/// would, and handed to `entry`. `next` holds the index of the next client and user.
fn parse_batch(
    text: &str,
    kind: blocks::Kind,
    count: usize,
    env: &BTreeMap<String, String>,
    next: &mut [usize; 2],
    entry: &mut dyn FnMut(Entry),
) -> Result<(), Batch> {
    // Without `${`, nothing to interpolate: the entries are read straight from the text,
    // with no table in between. Any error is left to the general path below, whose
    // messages are the whole parse's.
    if !text.contains("${") {
        let direct =
            toml::Deserializer::parse(text).and_then(<Direct as serde::Deserialize>::deserialize);
        if let Ok(direct) = direct
            && direct.clients.len() + direct.users.len() == count
        {
            for c in direct.clients {
                entry(Entry::Client(next[0], c));
                next[0] += 1;
            }
            for u in direct.users {
                entry(Entry::User(next[1], u));
                next[1] += 1;
            }
            return Ok(());
        }
    }
    let text_error = |m: String| Batch::Text(ConfigError::new("file", m));
    let mut table: toml::Table = toml::from_str(text).map_err(|e| text_error(toml_error(&e)))?;
    let items = match table.remove(kind.key()) {
        Some(toml::Value::Array(items)) if items.len() == count && table.is_empty() => items,
        _ => return Err(text_error(format!("[[{}]] blocks misread", kind.key()))),
    };
    for item in items {
        let toml::Value::Table(mut fields) = item else {
            return Err(text_error(format!("[[{}]] blocks misread", kind.key())));
        };
        let index = &mut next[usize::from(kind == blocks::Kind::Users)];
        let at = format!("{}[{index}]", kind.key());
        interpolate_table(&mut fields, &at, env).map_err(Batch::Value)?;
        // Read as the one element of its array, as in the whole file: the messages name
        // the array (`… in \`clients\``), and the path is that element's.
        let mut alone = toml::Table::new();
        let array = toml::Value::Array(vec![toml::Value::Table(fields)]);
        alone.insert(kind.key().to_owned(), array);
        let read: Direct =
            serde_path_to_error::deserialize(toml::Value::Table(alone)).map_err(|e| {
                let path = e.path().to_string();
                let first = format!("{}[0]", kind.key());
                let setting = match path.strip_prefix(&first) {
                    Some(rest) => format!("{at}{rest}"),
                    None => path,
                };
                Batch::Value(ConfigError::new(
                    setting,
                    one_line(&e.into_inner().to_string()),
                ))
            })?;
        let read = match (
            read.clients.into_iter().next(),
            read.users.into_iter().next(),
        ) {
            (Some(c), _) => Entry::Client(*index, c),
            (None, Some(u)) => Entry::User(*index, u),
            (None, None) => return Err(text_error(format!("[[{}]] blocks misread", kind.key()))),
        };
        entry(read);
        *index += 1;
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `18 | secret = "…"`: a line of the file quoted in a parse error.
fn is_source_line(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && line[digits..].trim_start().starts_with('|')
}

/// A TOML parse error in one line, **without** the quoted source line the parser's message
/// carries: that line may hold the secret (`secret = "…"`), and errors are logged.
pub(crate) fn toml_error(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !is_source_line(l))
        .collect();
    one_line(&lines.join(": "))
}

/// Replaces `${VAR}` in every string value; an unset variable is an error naming the
/// setting. `$${` writes a literal `${`.
fn interpolate_table(
    table: &mut toml::Table,
    prefix: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        interpolate_value(value, &path, env)?;
    }
    Ok(())
}

fn interpolate_value(
    value: &mut toml::Value,
    path: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => *s = interpolate(s, path, env)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => interpolate_table(t, path, env)?,
        _ => {}
    }
    Ok(())
}

fn interpolate(s: &str, path: &str, env: &BTreeMap<String, String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(lit) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = lit;
        } else if let Some(var) = after.strip_prefix("${") {
            let end = var
                .find('}')
                .ok_or_else(|| ConfigError::new(path, "`${` without a closing `}`"))?;
            let name = &var[..end];
            let value = env.get(name).ok_or_else(|| {
                ConfigError::new(path, format!("environment variable {name} is not set"))
            })?;
            out.push_str(value);
            rest = &var[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `${VAR}` names the file's string values use that `env` does not set. The CLI may
/// run without the server's environment (`secret = "${KEYGATE_SECRET}"`): it cannot check
/// the settings these feed, and says so.
pub(super) fn unset_variables(
    table: &toml::Table,
    env: &BTreeMap<String, String>,
) -> std::collections::BTreeSet<String> {
    fn walk(
        value: &toml::Value,
        env: &BTreeMap<String, String>,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        match value {
            toml::Value::String(s) => {
                // The grammar of `interpolate`: `$${` is a literal, `${NAME}` a variable.
                let mut rest = s.as_str();
                while let Some(pos) = rest.find('$') {
                    let after = &rest[pos..];
                    if let Some(lit) = after.strip_prefix("$${") {
                        rest = lit;
                    } else if let Some(var) = after.strip_prefix("${") {
                        let Some(end) = var.find('}') else { return };
                        if !env.contains_key(&var[..end]) {
                            out.insert(var[..end].to_owned());
                        }
                        rest = &var[end + 1..];
                    } else {
                        rest = &after[1..];
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, env, out)),
            toml::Value::Table(t) => t.values().for_each(|v| walk(v, env, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    table.values().for_each(|v| walk(v, env, &mut out));
    out
}

/// `KEYGATE_TOKEN_TTL=15m` sets `[token] ttl`. Values of string settings are taken as
/// they are; others (numbers, booleans, lists) are read as TOML literals.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let defaults =
        toml::Table::try_from(Config::default()).map_err(|e| ConfigError::new("defaults", e))?;
    // Longest section names first, so `KEYGATE_API_KEY_HEADER` is not read as `[api]`.
    let mut sections: Vec<&str> = SECTIONS.to_vec();
    sections.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("KEYGATE_") else {
            continue;
        };
        let Some((section, key)) = sections.iter().find_map(|s| {
            rest.strip_prefix(&s.to_ascii_uppercase())
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k.to_ascii_lowercase()))
        }) else {
            continue;
        };
        let setting = format!("{section}.{key} (from {name})");
        let default = defaults.get(section).and_then(|s| s.get(&key));
        let value = match default {
            Some(toml::Value::String(_)) | None => toml::Value::String(raw.clone()),
            Some(_) => toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| {
                    ConfigError::new(&setting, format!("`{raw}` is not a valid value"))
                })?,
        };
        let section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => return Err(ConfigError::new(section, "must be a table")),
        }
    }
    Ok(())
}

/// Durations as humane strings: `30m`, `90d`, `1h 30m`.
pub(super) mod humane {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::config) fn serialize<S: Serializer>(
        d: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like 30s, 15m, 1h or 90d"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn minimal() -> String {
        format!("[token]\nsecret = \"{SECRET}\"\n")
    }

    #[test]
    fn unset_variables_are_the_ones_interpolation_would_miss() {
        let text = "[token]\nsecret = \"${A}x${B}\"\nissuer = \"$${C}\"\naudience = [\"${D}\"]\n";
        let table: toml::Table = toml::from_str(text).unwrap();
        let names: Vec<_> = unset_variables(&table, &env(&[("B", "b")]))
            .into_iter()
            .collect();
        assert_eq!(names, ["A", "D"]);
        let all = env(&[("A", "a"), ("B", "b"), ("D", "d")]);
        assert!(unset_variables(&table, &all).is_empty());
    }

    #[test]
    fn variables_are_interpolated() {
        let text = "[token]\nsecret = \"${MY_SECRET}\"\nissuer = \"https://${HOST}/x$${y}\"\n";
        let c = Config::parse(text, &env(&[("MY_SECRET", SECRET), ("HOST", "a.test")])).unwrap();
        assert_eq!(c.token.secret.as_deref(), Some(SECRET));
        assert_eq!(c.token.issuer.as_deref(), Some("https://a.test/x${y}"));
        let err = Config::parse(text, &env(&[("HOST", "a.test")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token.secret: environment variable MY_SECRET is not set"
        );
    }

    #[test]
    fn environment_overrides_every_section() {
        let c = Config::parse(
            &minimal(),
            &env(&[
                ("KEYGATE_TOKEN_TTL", "15m"),
                ("KEYGATE_API_KEY_HEADER", "access_token"),
                ("KEYGATE_LIMITS_FAILED_ATTEMPTS", "3"),
                ("KEYGATE_COOKIE_ENABLED", "true"),
                ("KEYGATE_TOKEN_AUDIENCE", "[\"orders-api\"]"),
                ("KEYGATE_SERVER_LISTEN", "127.0.0.1:0"),
                ("KEYGATE_CONFIG", "ignored.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(c.token.ttl, Duration::from_secs(900));
        assert_eq!(c.api_key.header, "access_token");
        assert_eq!(c.limits.failed_attempts, 3);
        assert!(c.cookie.enabled);
        assert_eq!(c.token.audience, vec!["orders-api".to_owned()]);
        assert_eq!(c.server.listen, "127.0.0.1:0");
        let err =
            Config::parse(&minimal(), &env(&[("KEYGATE_LIMITS_WINDOW", "soon")])).unwrap_err();
        assert!(err.to_string().starts_with("limits.window"), "{err}");
        let err = Config::parse(&minimal(), &env(&[("KEYGATE_TOKEN_NOPE", "1")])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// A file of many entries is read a batch at a time; what comes out (the entries, or
    /// the error, word for word) is what parsing it whole gives: for values of every TOML
    /// type, text errors, nested tables, and errors in the settings around the entries.
    #[test]
    fn batched_reading_matches_the_whole_parse() {
        let client = |i: usize, extra: &str| {
            format!(
                "[[clients]]\nid = \"c{i}\"\nkey_hash = \"sha256:{i:064x}\"\nrole = \"r\"\n{extra}\n"
            )
        };
        let file = |odd: &dyn Fn(usize) -> String| {
            let mut text = minimal();
            for i in 0..3 * BATCH {
                text.push_str(&odd(i));
                if i == BATCH {
                    text.push_str("[limits]\nfailed_attempts = 3\n[[users]]\nusername = \"u\"\npassword_hash = \"${HASH}\"\n");
                }
            }
            text
        };
        let at = |n: usize, extra: &'static str| {
            move |i: usize| client(i, if i == n { extra } else { "" })
        };
        let texts = [
            file(&|i| client(i, "")),
            file(&at(600, "scopes = [\"${SCOPE}\"]")),
            file(&at(600, "scopes = [\"${UNSET}\"]")),
            file(&at(700, "colour = \"blue\"")),
            file(&at(300, "scopes = \"not a list\"")),
            file(&at(5, "role = \"twice\"")),
            file(&at(400, "key_hash = ")),
            file(&at(400, "[clients.nested]\nx = 1")),
            file(&at(450, "expires_at = 2027-01-01T00:00:00Z")),
            file(&at(450, "not_before = 1979-05-27")),
            file(&at(450, "rate_limit = 5")),
            file(&at(450, "scopes = []\nprevious_key_hash = \"x\"")),
            file(&at(10, "")).replace(
                "[limits]\nfailed_attempts = 3",
                "[limits]\nfailed_attempts = \"3\"",
            ),
        ];
        let env = env(&[
            ("HASH", "$argon2id$x"),
            ("SCOPE", "s:1"),
            ("KEYGATE_LIMITS_WINDOW", "2m"),
        ]);
        for text in &texts {
            let (mut clients, mut users) = (Vec::new(), Vec::new());
            let whole = Config::parse_whole(text, &env, &mut |entry| match entry {
                Entry::Client(_, c) => clients.push(c),
                Entry::User(_, u) => users.push(u),
            });
            let whole = whole.map(|c| Config {
                clients,
                users,
                ..c
            });
            let batched = Config::parse(text, &env);
            assert_eq!(format!("{batched:?}"), format!("{whole:?}"));
        }
        let c = Config::parse(&texts[1], &env).unwrap();
        assert_eq!((c.clients.len(), c.users.len()), (3 * BATCH, 1));
        assert_eq!(c.clients[600].scopes, ["s:1"]);
        assert_eq!(c.clients[3 * BATCH - 1].id, format!("c{}", 3 * BATCH - 1));
        assert_eq!(c.users[0].password_hash, "$argon2id$x");
        assert_eq!(
            (c.limits.failed_attempts, c.limits.window),
            (3, Duration::from_secs(120))
        );
        let e = Config::parse(&texts[2], &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "clients[600].scopes[0]: environment variable UNSET is not set"
        );
        let e = Config::parse(&texts[3], &env).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("clients[700].colour: unknown field"),
            "{e}"
        );
    }
}
