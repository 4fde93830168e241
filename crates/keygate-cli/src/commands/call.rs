//! `keygate login`, `keygate call`: the client side, through `keygate-client`.
//!
//! Exit codes beyond 0: 1 when keygate refuses the key, the API refuses the token (4xx),
//! or a server's TLS certificate is not trusted; 2 for usage and configuration errors
//! (an unreadable `--cacert`, a malformed header); 3 when keygate or the API failed or
//! could not be reached (5xx, 429, a timeout, a refused connection, a redirect), which
//! says nothing about the key and may be worth retrying.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use keygate_client::{ClientError, Credentials, TokenClient};

use super::{Refused, Unavailable};
use crate::cli::CallArgs;

/// Time for a whole call to the API, as the client crate's default for keygate.
const API_TIMEOUT: Duration = keygate_client::DEFAULT_TIMEOUT;

fn read_cacert(cacert: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    cacert
        .map(|p| std::fs::read(p).with_context(|| format!("--cacert {}", p.display())))
        .transpose()
}

fn client(
    auth_url: &str,
    api_key: String,
    header: String,
    cacert: Option<&[u8]>,
) -> anyhow::Result<TokenClient> {
    let mut builder = TokenClient::builder(
        auth_url,
        Credentials::ApiKey {
            key: api_key,
            header,
        },
    );
    if let Some(pem) = cacert {
        builder = builder.add_root_certificate(pem);
    }
    builder.build().context("--cacert")
}

/// Sorts a client failure into its exit code: 1 for a refusal or an untrusted
/// certificate, 3 for a server that failed or was not reached, 2 for the rest.
fn classify(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused { .. } | ClientError::UntrustedCertificate { .. } => {
            Refused(e.to_string()).into()
        }
        // With its causes, on one line (anyhow's alternate form): "cannot reach the server"
        // alone does not say that the connection was refused.
        ClientError::ServerError { .. }
        | ClientError::Redirected { .. }
        | ClientError::TimedOut { .. }
        | ClientError::Transport(_)
        | ClientError::InvalidResponse(_) => {
            Unavailable(format!("{:#}", anyhow::Error::new(e))).into()
        }
        other => anyhow::Error::new(other),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn login(
    url: &str,
    api_key: String,
    key_header: String,
    cacert: Option<&Path>,
) -> anyhow::Result<()> {
    let pem = read_cacert(cacert)?;
    let token = runtime()?.block_on(async {
        let client = client(url, api_key, key_header, pem.as_deref())?;
        client.token().await.map_err(classify)
    })?;
    println!("{token}");
    Ok(())
}

pub(crate) fn call(args: &CallArgs) -> anyhow::Result<()> {
    let method = reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("`{}` is not an HTTP method", args.method))?;
    let pem = read_cacert(args.cacert.as_deref())?;
    let mut http = reqwest::Client::builder()
        .connect_timeout(keygate_client::DEFAULT_CONNECT_TIMEOUT)
        .timeout(API_TIMEOUT);
    if let Some(pem) = &pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("--cacert")? {
            http = http.tls_certs_merge([cert]);
        }
    }
    let http = http.build().context("--cacert")?;
    let mut request = http.request(method, &args.url);
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("`{h}` is not a header (expected `Name: value`)");
        };
        request = request.header(name.trim(), value.trim());
    }
    if let Some(body) = &args.data {
        request = request.body(body.clone());
    }
    let (status, body) = runtime()?.block_on(async {
        let client = client(
            &args.auth_url,
            args.api_key.clone(),
            args.key_header.clone(),
            pem.as_deref(),
        )?;
        let response = client.send(request).await.map_err(classify)?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Unavailable(format!("reading the response: {e}")))?;
        anyhow::Ok((status, body))
    })?;
    print!("{body}");
    if !body.ends_with('\n') && !body.is_empty() {
        println!();
    }
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() {
        Err(Unavailable(format!("{} answered {status}", args.url)).into())
    } else {
        Err(Refused(format!("{} answered {status}", args.url)).into())
    }
}
