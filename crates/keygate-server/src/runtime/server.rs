//! `[server]` checked: the addresses, the TLS pair's paths (read when the server starts,
//! by [`crate::tls`]), `public_url` and its default, and the connection limits.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::tls::TlsFiles;

/// `[server]` checked: what `Runtime` takes from it.
pub(super) struct ServerChecked {
    pub(super) listen: SocketAddr,
    pub(super) public_url: String,
    pub(super) metrics_listen: Option<SocketAddr>,
    pub(super) admin_listen: Option<SocketAddr>,
    pub(super) tls: Option<TlsFiles>,
}

impl Config {
    pub(super) fn check_server(&self) -> Result<ServerChecked, ConfigError> {
        let s = &self.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            ConfigError::new("server.listen", "expected an address like 127.0.0.1:8080")
        })?;
        let metrics_listen = s
            .metrics_listen
            .as_deref()
            .map(|m| {
                m.parse::<SocketAddr>().map_err(|_| {
                    ConfigError::new(
                        "server.metrics_listen",
                        "expected an address like 127.0.0.1:9464",
                    )
                })
            })
            .transpose()?;
        let admin_listen = s
            .admin_listen
            .as_deref()
            .map(|m| {
                m.parse::<SocketAddr>().map_err(|_| {
                    ConfigError::new(
                        "server.admin_listen",
                        "expected an address like 127.0.0.1:8081",
                    )
                })
            })
            .transpose()?;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: self.base_dir.join(cert),
                key: self.base_dir.join(key),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "server.tls_key",
                    "is required with server.tls_cert (both or neither)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "server.tls_cert",
                    "is required with server.tls_key (both or neither)",
                ));
            }
        };
        let public_url = match &s.public_url {
            Some(url) => url.clone(),
            None if tls.is_some() => format!("https://{listen}"),
            None => "http://127.0.0.1:8080".to_owned(),
        };
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::new(
                "server.public_url",
                "expected an http:// or https:// URL",
            ));
        }
        if s.header_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "server.header_timeout",
                "must be at least 1s",
            ));
        }
        if s.request_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "server.request_timeout",
                "must be at least 1s",
            ));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        Ok(ServerChecked {
            listen,
            public_url,
            metrics_listen,
            admin_listen,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::{Config, ConfigError};
    use crate::runtime::Runtime;

    const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

    fn minimal() -> String {
        format!("[token]\nsecret = \"{SECRET}\"\n")
    }

    fn check(text: &str) -> Result<Runtime, ConfigError> {
        Config::parse(text, &BTreeMap::new())?.validate()
    }

    #[test]
    fn bad_server_values_name_their_setting() {
        let cases: &[(&str, &str)] = &[
            (
                &format!("{}[server]\ntls_cert = \"c.pem\"\n", minimal()),
                "server.tls_key",
            ),
            (
                &format!("{}[server]\ntls_key = \"k.pem\"\n", minimal()),
                "server.tls_cert",
            ),
            (
                &format!("{}[server]\nmetrics_listen = \"9464\"\n", minimal()),
                "server.metrics_listen",
            ),
            (
                &format!("{}[server]\nheader_timeout = \"0s\"\n", minimal()),
                "server.header_timeout",
            ),
            (
                &format!("{}[server]\nrequest_timeout = \"500ms\"\n", minimal()),
                "server.request_timeout",
            ),
            (
                &format!("{}[server]\nmax_connections = 0\n", minimal()),
                "server.max_connections",
            ),
        ];
        for (text, setting) in cases {
            let err = check(text).unwrap_err().to_string();
            assert!(err.starts_with(setting), "expected {setting}, got: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn server_settings_take_their_defaults_and_tls_makes_public_url_https() {
        let rt = check(&minimal()).unwrap();
        let server = &rt.config.server;
        assert_eq!(server.header_timeout, Duration::from_secs(10));
        assert_eq!(server.request_timeout, Duration::from_secs(10));
        assert_eq!(server.max_connections, 10_000);
        assert_eq!((rt.tls.as_ref(), rt.metrics_listen), (None, None));
        assert_eq!(rt.public_url, "http://127.0.0.1:8080");

        let tls = format!(
            "{}[server]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"tls/c.pem\"\ntls_key = \"/etc/k.pem\"\n",
            minimal()
        );
        let mut config = Config::parse(&tls, &BTreeMap::new()).unwrap();
        config.base_dir = PathBuf::from("/srv/keygate");
        let rt = config.validate().unwrap();
        assert_eq!(rt.public_url, "https://0.0.0.0:8443");
        assert_eq!(rt.verifier.policy().issuer, "https://0.0.0.0:8443");
        let files = rt.tls.unwrap();
        assert_eq!(files.cert, PathBuf::from("/srv/keygate/tls/c.pem"));
        assert_eq!(files.key, PathBuf::from("/etc/k.pem"));

        let explicit = format!("{tls}public_url = \"https://auth.example.com\"\n");
        assert_eq!(
            check(&explicit).unwrap().public_url,
            "https://auth.example.com"
        );
    }

    #[test]
    fn request_timeout_takes_its_environment_override() {
        let env = BTreeMap::from([("KEYGATE_SERVER_REQUEST_TIMEOUT".to_owned(), "3s".to_owned())]);
        let rt = Config::parse(&minimal(), &env).unwrap().validate().unwrap();
        assert_eq!(rt.config.server.request_timeout, Duration::from_secs(3));
        let env = BTreeMap::from([("KEYGATE_SERVER_REQUEST_TIMEOUT".to_owned(), "0s".to_owned())]);
        let err = Config::parse(&minimal(), &env)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("server.request_timeout"), "{err}");
    }
}
