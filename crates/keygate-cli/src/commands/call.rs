//! `keygate login`, `keygate call`: the client side, through `keygate-client`.

use anyhow::{Context, bail};
use keygate_client::{ClientError, Credentials, TokenClient};

use super::Refused;
use crate::cli::CallArgs;

fn client(auth_url: &str, api_key: String, header: String) -> TokenClient {
    TokenClient::new(
        auth_url,
        Credentials::ApiKey {
            key: api_key,
            header,
        },
    )
}

/// Maps a refused credential to exit code 1; anything else stays a usage/operational error.
fn refused(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused { .. } => Refused(e.to_string()).into(),
        other => anyhow::Error::new(other),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn login(url: &str, api_key: String, key_header: String) -> anyhow::Result<()> {
    let client = client(url, api_key, key_header);
    let token = runtime()?.block_on(client.token()).map_err(refused)?;
    println!("{token}");
    Ok(())
}

pub(crate) fn call(args: &CallArgs) -> anyhow::Result<()> {
    let method = reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("`{}` is not an HTTP method", args.method))?;
    let client = client(
        &args.auth_url,
        args.api_key.clone(),
        args.key_header.clone(),
    );
    let http = reqwest::Client::new();
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
        let response = client.send(request).await.map_err(refused)?;
        let status = response.status();
        let body = response.text().await.context("reading the response")?;
        anyhow::Ok((status, body))
    })?;
    print!("{body}");
    if !body.ends_with('\n') && !body.is_empty() {
        println!();
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(Refused(format!("{} answered {status}", args.url)).into())
    }
}
