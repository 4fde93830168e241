//! [`Credentials`]: how a client proves who it is.

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// An API key, sent to `POST /login` in a header.
    ApiKey {
        /// The key.
        key: String,
        /// The header keygate reads (`api_key.header`, default `X-API-Key`).
        header: String,
    },
    /// `grant_type=client_credentials` at `POST /token`, with HTTP Basic.
    ClientCredentials {
        /// The client id.
        client_id: String,
        /// Its API key.
        secret: String,
        /// Scopes to narrow the grant to (space-separated); all when `None`.
        scope: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::ApiKey { header, .. } => {
                write!(f, "ApiKey {{ header: {header:?}, key: [redacted] }}")
            }
            Credentials::ClientCredentials {
                client_id, scope, ..
            } => write!(
                f,
                "ClientCredentials {{ client_id: {client_id:?}, scope: {scope:?}, secret: [redacted] }}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::ApiKey {
            key: "kg_x_canary".into(),
            header: "X-API-Key".into(),
        };
        assert!(!format!("{c:?}").contains("canary"));
        let c = Credentials::ClientCredentials {
            client_id: "billing".into(),
            secret: "canary".into(),
            scope: None,
        };
        assert!(!format!("{c:?}").contains("canary"));
    }
}
