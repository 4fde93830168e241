//! Black-box tests of keygate-client, one binary: against a real keygate server, against
//! keygates that misbehave, and over TLS.

mod misbehaving;
mod server;
mod tls;
