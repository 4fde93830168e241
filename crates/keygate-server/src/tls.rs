//! HTTPS: the certificate chain and key named by `server.tls_cert` and `server.tls_key`,
//! served by rustls (the aws-lc-rs provider) with HTTP/2 and HTTP/1.1 offered by ALPN.
//!
//! Certificates from an ACME client or cert-manager are replaced every few weeks, so the
//! files are watched ([`Certificates::watch`]): a new pair is read, checked (the key must
//! match the leaf certificate) and swapped in whole; every handshake after that gets it,
//! while connections already open keep theirs. A pair that does not load is refused with a
//! logged error and the one in service stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::ConfigError;

/// `server.tls_cert` and `server.tls_key`, resolved against the configuration's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
}

/// The pair in service, swapped whole when the files change.
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of debug output.
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads and checks the pair; an error names the setting whose file is at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pair = read_pair(&files, &provider)?;
        Ok(Arc::new(Self {
            files,
            provider,
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Re-reads the files: a good pair replaces the one in service; a bad one is refused
    /// (logged, and returned) and the one in service stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        match read_pair(&self.files, &self.provider) {
            Ok(pair) => {
                self.current.store(Arc::new(pair));
                metrics::counter!("keygate_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("keygate_tls_reloads_total", "result" => "refused").increment(1);
                tracing::error!(error = %e, "TLS certificate refused; the previous one keeps serving");
                Err(e)
            }
        }
    }

    /// Reloads when either file changes (modification time or size, checked every
    /// `interval`; zero: on SIGHUP only) and on SIGHUP.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let files = self.files.clone();
        let this = Arc::clone(self);
        crate::watch::watch_files(
            interval,
            move || vec![files.cert.clone(), files.key.clone()],
            move |_| {
                let _ = this.reload();
            },
        )
    }

    /// The rustls configuration: TLS 1.2 and 1.3, `h2` then `http/1.1` by ALPN, the
    /// certificate chosen per handshake from the pair in service.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, ConfigError> {
    let cert_pem = read(&files.cert, "server.tls_cert")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(&files.cert, "server.tls_cert", &e))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            "server.tls_cert",
            format!("{}: no PEM certificate in it", files.cert.display()),
        ));
    }
    let key_pem = read(&files.key, "server.tls_key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad_pem(&files.key, "server.tls_key", &e))?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        ConfigError::new(
            "server.tls_key",
            format!("{}: unusable key: {e}", files.key.display()),
        )
    })?;
    let pair = CertifiedKey::new(chain, signing_key);
    pair.keys_match().map_err(|e| {
        ConfigError::new(
            "server.tls_key",
            format!(
                "{} does not belong to the certificate in {}: {e}",
                files.key.display(),
                files.cert.display()
            ),
        )
    })?;
    Ok(pair)
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))
}

fn bad_pem(path: &Path, setting: &str, e: &rustls::pki_types::pem::Error) -> ConfigError {
    let what = match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the right kind in it".to_owned()
        }
        other => format!("not valid PEM ({other})"),
    };
    ConfigError::new(setting, format!("{}: {what}", path.display()))
}
