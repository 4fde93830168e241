//! Validation: every value checked, and what the server runs on built from them, as a
//! [`Runtime`]. A bad value becomes one [`ConfigError`] naming its setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keygate::api_key::{self, KeyHash};
use keygate::principal::{Credential, Directory, Principal, PrincipalKind};
use keygate::token::{
    Grant, HmacSecret, Issuer, KeySet, SigningAlgorithm, SigningKey, TokenPolicy, Verifier,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::model::{ClientConfig, SameSite, UserConfig};
use super::{Config, ConfigError, keyring};

impl Config {
    /// Checks every value and builds what the server runs on.
    pub fn validate(&self) -> Result<Runtime, ConfigError> {
        let listen = self.check_server()?;
        let (issuer, verifier, keys, keyring_dir) = self.token_keys()?;
        self.check_api_key()?;
        self.check_cookie()?;
        self.check_limits()?;
        self.check_store()?;
        let directory = self.directory()?;
        check_tokens_verify(&issuer, &verifier, &directory)?;
        Ok(Runtime {
            config: self.clone(),
            listen,
            api_key_sources: keygate::axum::ApiKeySources {
                header: self.api_key.header.clone(),
                query: self.api_key.query.clone(),
                cookie: self.api_key.cookie.clone(),
            },
            client_key_header: keygate::axum::ApiKeySources {
                header: self.api_key.header.clone(),
                query: String::new(),
                cookie: String::new(),
            },
            directory,
            keys,
            keyring_dir,
            issuer,
            verifier,
        })
    }

    fn check_server(&self) -> Result<SocketAddr, ConfigError> {
        let listen: SocketAddr = self.server.listen.parse().map_err(|_| {
            ConfigError::new("server.listen", "expected an address like 127.0.0.1:8080")
        })?;
        if !(self.server.public_url.starts_with("http://")
            || self.server.public_url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "server.public_url",
                "expected an http:// or https:// URL",
            ));
        }
        Ok(listen)
    }

    /// The token policy, the signing keys, and the issuer and verifier sharing them.
    fn token_keys(&self) -> Result<(Issuer, Verifier, Arc<KeySet>, Option<PathBuf>), ConfigError> {
        let issuer = self
            .token
            .issuer
            .clone()
            .unwrap_or_else(|| self.server.public_url.clone());
        if issuer.is_empty() {
            return Err(ConfigError::new("token.issuer", "must not be empty"));
        }
        if self.token.ttl.as_secs() == 0 {
            return Err(ConfigError::new("token.ttl", "must be at least 1s"));
        }
        if self.token.ttl > keygate::token::MAX_LIFETIME {
            return Err(ConfigError::new(
                "token.ttl",
                "must be at most 24h: access tokens are meant to be short-lived",
            ));
        }
        if self.token.leeway > Duration::from_secs(300) {
            return Err(ConfigError::new("token.leeway", "must be at most 5m"));
        }
        let policy = TokenPolicy {
            issuer,
            audience: self.token.audience.clone(),
            ttl: self.token.ttl,
            leeway: self.token.leeway,
        };
        let algorithm = self.token.algorithm;
        let (keys, keyring_dir) = self.signing_keys(algorithm)?;
        let issuer = Issuer::new(keys.clone(), policy.clone());
        let verifier = Verifier::new(algorithm, keys.clone(), policy);
        Ok((issuer, verifier, keys, keyring_dir))
    }

    fn check_api_key(&self) -> Result<(), ConfigError> {
        if self.api_key.header.is_empty()
            && self.api_key.query.is_empty()
            && self.api_key.cookie.is_empty()
        {
            return Err(ConfigError::new(
                "api_key",
                "header, query and cookie are all empty: no way to present a key",
            ));
        }
        if !self.api_key.header.is_empty()
            && axum::http::HeaderName::from_bytes(self.api_key.header.as_bytes()).is_err()
        {
            return Err(ConfigError::new(
                "api_key.header",
                "is not a valid header name",
            ));
        }
        Ok(())
    }

    fn check_cookie(&self) -> Result<(), ConfigError> {
        if self.cookie.same_site == SameSite::None && !self.cookie.secure {
            return Err(ConfigError::new(
                "cookie.same_site",
                "None requires cookie.secure = true (browsers refuse it otherwise)",
            ));
        }
        if self.cookie.enabled && !is_cookie_name(&self.cookie.name) {
            return Err(ConfigError::new(
                "cookie.name",
                "is not a valid cookie name",
            ));
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.limits.failed_attempts == 0 {
            return Err(ConfigError::new(
                "limits.failed_attempts",
                "must be at least 1",
            ));
        }
        if self.limits.window.as_secs() == 0 {
            return Err(ConfigError::new("limits.window", "must be at least 1s"));
        }
        if self.limits.hashing_concurrency == 0 {
            return Err(ConfigError::new(
                "limits.hashing_concurrency",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn check_store(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.store.url {
            if !url.starts_with("redis://") && !url.starts_with("unix://") {
                return Err(ConfigError::new(
                    "store.url",
                    format!("`{}` is not a redis:// URL", redact_url(url)),
                ));
            }
            crate::store::RedisStore::open(url).map_err(|e| {
                ConfigError::new("store.url", format!("`{}`: {e}", redact_url(url)))
            })?;
        }
        Ok(())
    }

    /// Clients and users, looked up by id; ids are unique across both.
    fn directory(&self) -> Result<Directory, ConfigError> {
        let mut principals = Vec::with_capacity(self.clients.len() + self.users.len());
        for (i, c) in self.clients.iter().enumerate() {
            principals.push(client_principal(i, c)?);
        }
        for (i, u) in self.users.iter().enumerate() {
            principals.push(user_principal(i, u)?);
        }
        Directory::new(principals).map_err(|e| {
            ConfigError::new(
                "clients/users",
                format!("{e}; ids must be unique across clients and users"),
            )
        })
    }

    /// The key set for `algorithm`: the secret for HS*, the key folder otherwise.
    fn signing_keys(
        &self,
        algorithm: SigningAlgorithm,
    ) -> Result<(Arc<KeySet>, Option<PathBuf>), ConfigError> {
        if algorithm.is_hmac() {
            let secret_text = self.token.secret.as_deref().ok_or_else(|| {
                ConfigError::new(
                    "token.secret",
                    "is required for HS* algorithms (generate one with `keygate secret`)",
                )
            })?;
            let secret: HmacSecret = secret_text
                .parse()
                .map_err(|e| ConfigError::new("token.secret", e))?;
            let key = SigningKey::hmac(algorithm, &secret)
                .map_err(|e| ConfigError::new("token.secret", e))?;
            return Ok((Arc::new(KeySet::single(key)), None));
        }
        let dir = self.token.signing_keys.as_deref().ok_or_else(|| {
            ConfigError::new(
                "token.signing_keys",
                format!("{algorithm} needs a key folder; create a key with `keygate keygen --alg {algorithm}`"),
            )
        })?;
        let dir = keyring::resolve(&self.base_dir, dir);
        let keys = keyring::load(&dir, algorithm, self.token.key_publish_delay)?;
        Ok((keys, Some(dir)))
    }
}

/// What the server runs on: the validated configuration and what was built from it.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration as read.
    pub config: Config,
    /// `server.listen`, parsed.
    pub listen: SocketAddr,
    /// Where `/login` reads API keys (`[api_key]`).
    pub api_key_sources: keygate::axum::ApiKeySources,
    /// Where client authentication reads an API key: the header only (query and cookie
    /// keys are for `/login`).
    pub client_key_header: keygate::axum::ApiKeySources,
    /// Clients and users.
    pub directory: Directory,
    /// Signing and verifying keys, shared by the issuer and the verifier.
    pub keys: Arc<KeySet>,
    /// The signing-key folder, for public-key algorithms (watched for changes).
    pub keyring_dir: Option<PathBuf>,
    /// Signs tokens.
    pub issuer: Issuer,
    /// Verifies tokens.
    pub verifier: Verifier,
}

fn client_principal(i: usize, c: &ClientConfig) -> Result<Principal, ConfigError> {
    let at = |field: &str| format!("clients[{i}].{field}");
    check_id(&c.id, &at("id"))?;
    let hash: KeyHash = c
        .key_hash
        .parse()
        .map_err(|e| ConfigError::new(at("key_hash"), e))?;
    let expires_at = parse_time(c.expires_at.as_deref(), &at("expires_at"))?;
    let mut credentials = vec![Credential {
        hash,
        valid_until: expires_at,
    }];
    match (&c.previous_key_hash, &c.previous_key_expires_at) {
        (Some(prev), Some(until)) => {
            let hash: KeyHash = prev
                .parse()
                .map_err(|e| ConfigError::new(at("previous_key_hash"), e))?;
            let until = parse_time(Some(until), &at("previous_key_expires_at"))?;
            let valid_until = match (until, expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            credentials.push(Credential { hash, valid_until });
        }
        (None, None) => {}
        _ => {
            return Err(ConfigError::new(
                at("previous_key_hash"),
                "previous_key_hash and previous_key_expires_at go together",
            ));
        }
    }
    Ok(Principal {
        id: c.id.clone(),
        kind: PrincipalKind::Client,
        role: c.role.clone(),
        scopes: check_scopes(&c.scopes, &at("scopes"))?,
        credentials,
        revoked_at: parse_time(c.revoked_at.as_deref(), &at("revoked_at"))?,
    })
}

fn user_principal(i: usize, u: &UserConfig) -> Result<Principal, ConfigError> {
    let at = |field: &str| format!("users[{i}].{field}");
    check_id(&u.username, &at("username"))?;
    let hash: KeyHash = u
        .password_hash
        .parse()
        .map_err(|e| ConfigError::new(at("password_hash"), e))?;
    if matches!(hash, KeyHash::Sha256(_)) {
        return Err(ConfigError::new(
            at("password_hash"),
            "passwords need a slow hash ($argon2id$… or $2b$…); create one with `keygate hash`",
        ));
    }
    Ok(Principal {
        id: u.username.clone(),
        kind: PrincipalKind::User,
        role: u.role.clone(),
        scopes: check_scopes(&u.scopes, &at("scopes"))?,
        credentials: vec![Credential {
            hash,
            valid_until: None,
        }],
        revoked_at: None,
    })
}

/// A client id or username: it names the principal in tokens and in API keys.
/// The longest token this configuration can issue must pass its own verifier: the issuer,
/// the audience and a principal's id, role and scopes go into every token, and verifiers
/// refuse tokens over [`keygate::token::MAX_TOKEN_LEN`]. (Found by fuzz/, target `config`:
/// with a 6 KB `server.public_url`, every token issued was refused.)
fn check_tokens_verify(
    issuer: &Issuer,
    verifier: &Verifier,
    directory: &Directory,
) -> Result<(), ConfigError> {
    let json_len = |s: &str| serde_json::to_string(s).map_or(usize::MAX, |j| j.len());
    let heaviest = directory.iter().max_by_key(|p| {
        (2 * json_len(&p.id))
            .saturating_add(json_len(&p.role))
            .saturating_add(json_len(&p.scopes.join(" ")))
    });
    let (id, role, scopes) = heaviest.map_or(("probe", "", &[][..]), |p| {
        (p.id.as_str(), p.role.as_str(), p.scopes.as_slice())
    });
    let grant = Grant {
        subject: id,
        client_id: id,
        role,
        scopes,
    };
    let issued = issuer
        .issue(&grant)
        .map_err(|e| ConfigError::new("token", format!("cannot issue a token: {e}")))?;
    verifier.verify(&issued.token).map(drop).map_err(|e| {
        ConfigError::new(
            "token",
            format!(
                "a token for `{id}` ({} bytes) would be refused by keygate's own verifier ({e}): shorten token.issuer (or server.public_url), token.audience, or that principal's role or scopes",
                issued.token.len()
            ),
        )
    })
}

fn check_id(id: &str, setting: &str) -> Result<(), ConfigError> {
    if api_key::is_valid_id(id) {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            format!("`{id}` is not 1-64 of A-Z a-z 0-9 . _ - @"),
        ))
    }
}

/// RFC 6749 §3.3 scope tokens: printable ASCII without space, `"` or `\`.
fn check_scopes(scopes: &[String], setting: &str) -> Result<Vec<String>, ConfigError> {
    for s in scopes {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(ConfigError::new(
                setting,
                format!("`{s}` is not a valid scope"),
            ));
        }
    }
    Ok(scopes.to_vec())
}

fn parse_time(value: Option<&str>, setting: &str) -> Result<Option<OffsetDateTime>, ConfigError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                ConfigError::new(
                    setting,
                    format!("`{v}` is not an RFC 3339 time like 2027-06-30T00:00:00Z"),
                )
            })
        })
        .transpose()
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{OnUnavailable, initial_config};

    const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

    fn minimal() -> String {
        format!("[token]\nsecret = \"{SECRET}\"\n")
    }

    fn check(text: &str) -> Result<Runtime, ConfigError> {
        Config::parse(text, &BTreeMap::new())?.validate()
    }

    #[test]
    fn a_configuration_whose_tokens_its_verifier_refuses_is_refused() {
        // Found by fuzz/ (target `config`): a 6 KB public_url (the default issuer) was
        // accepted, and every token issued was then over keygate::token::MAX_TOKEN_LEN.
        let long_url = format!(
            "{}[server]\npublic_url = \"https://{}\"\n",
            minimal(),
            "a".repeat(7000)
        );
        let err = check(&long_url).unwrap_err();
        assert_eq!(err.setting, "token", "{err}");
        assert!(err.message.contains("would be refused"), "{err}");
        let long_role = format!(
            "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{}\"\nrole = \"{}\"\n",
            minimal(),
            "0".repeat(64),
            "r".repeat(7000)
        );
        assert_eq!(check(&long_role).unwrap_err().setting, "token");
        let fits = format!(
            "{}[server]\npublic_url = \"https://{}\"\n",
            minimal(),
            "a".repeat(3000)
        );
        check(&fits).unwrap();
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let rt = check(&minimal()).unwrap();
        let c = &rt.config;
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.token.ttl, Duration::from_secs(1800));
        assert_eq!(c.token.leeway, Duration::from_secs(30));
        assert_eq!(c.api_key.header, "X-API-Key");
        assert!(c.api_key.query.is_empty());
        assert!(!c.cookie.enabled);
        assert_eq!(c.limits.failed_attempts, 10);
        assert_eq!(c.store.on_unavailable, OnUnavailable::Deny);
        assert_eq!(rt.verifier.policy().issuer, "http://127.0.0.1:8080");
    }

    #[test]
    fn the_initial_config_is_valid() {
        let (text, key) = initial_config().unwrap();
        let rt = check(&text).unwrap();
        assert_eq!(rt.directory.len(), 1);
        assert!(key.starts_with("kg_"));
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases: &[(&str, &str)] = &[
            ("[token]\nsecret = \"short\"\n", "token.secret"),
            (
                "[token]\nsecret = \"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
                "token.secret",
            ),
            (
                "[token]\nsecret = \"hex:09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
                "token.secret",
            ),
            ("[token]\n", "token.secret"),
            (
                "[token]\nalgorithm = \"none\"\nsecret = \"x\"\n",
                "token.algorithm",
            ),
            (
                "[token]\nalgorithm = \"hs256\"\nsecret = \"x\"\n",
                "token.algorithm",
            ),
            (&format!("{}ttl = \"forever\"\n", minimal()), "token.ttl"),
            (&format!("{}ttl = \"0s\"\n", minimal()), "token.ttl"),
            (&format!("{}colour = \"blue\"\n", minimal()), "token"),
            (
                &format!("{}[server]\nlisten = \"nowhere\"\n", minimal()),
                "server.listen",
            ),
            (
                &format!("{}[cookie]\nsame_site = \"lax\"\n", minimal()),
                "cookie.same_site",
            ),
            (
                &format!("{}[store]\non_unavailable = \"maybe\"\n", minimal()),
                "store.on_unavailable",
            ),
            (
                &format!("{}[limits]\nfailed_attempts = 0\n", minimal()),
                "limits.failed_attempts",
            ),
            (
                &format!(
                    "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:00\"\n",
                    minimal()
                ),
                "clients[0].key_hash",
            ),
            (
                &format!(
                    "{}[[clients]]\nid = \"a b\"\nkey_hash = \"sha256:{}\"\n",
                    minimal(),
                    "0".repeat(64)
                ),
                "clients[0].id",
            ),
            (
                &format!(
                    "{}[[users]]\nusername = \"bob\"\npassword_hash = \"$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaA\"\n",
                    minimal()
                ),
                "users[0].password_hash",
            ),
            (
                &format!(
                    "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n[[users]]\nusername = \"a\"\npassword_hash = \"$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW\"\n",
                    minimal(),
                    z = "0".repeat(64)
                ),
                "clients/users",
            ),
            ("not toml at all [", "file"),
        ];
        for (text, setting) in cases {
            let err = check(text).unwrap_err();
            assert!(
                err.to_string().starts_with(setting),
                "expected {setting}, got: {err}"
            );
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn parse_errors_never_quote_the_secret() {
        let text = format!("[token]\nsecret = \"{SECRET}\u{0}\"\n");
        let err = check(&text).unwrap_err().to_string();
        assert!(err.starts_with("file: TOML parse error at line 2"), "{err}");
        assert!(!err.contains(&SECRET[..16]), "{err}");
    }

    #[test]
    fn duplicate_client_ids_are_refused() {
        let z = "0".repeat(64);
        let text = format!(
            "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n",
            minimal()
        );
        let err = check(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "clients/users: two principals have the id `a`; ids must be unique across clients and users"
        );
    }

    #[test]
    fn store_url_is_checked_without_echoing_its_password() {
        let ok = format!(
            "{}[store]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n",
            minimal()
        );
        check(&ok).unwrap();
        let bad = format!(
            "{}[store]\nurl = \"http://:hunter2@127.0.0.1:6379\"\n",
            minimal()
        );
        let err = check(&bad).unwrap_err().to_string();
        assert!(err.starts_with("store.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
