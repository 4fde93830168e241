//! Black-box tests of keygate-server, one binary: the real server on 127.0.0.1:0 with a
//! real configuration file, spoken to over HTTP, with real outside tools where a module
//! says so (Python clients, schemathesis, Redis, nginx, Chromium).

mod audit;
mod browser;
mod connections;
mod directory;
mod forward_auth;
mod hardening;
mod interop;
mod limits;
mod login;
mod logout;
mod node;
mod openapi;
mod operations;
mod postgres_server;
mod prometheus;
mod quota;
mod redis_servers;
mod reload;
mod replicas;
mod schemathesis;
mod standards;
mod store_faults;
mod store_topologies;
mod tls;
mod token;
mod util;
mod verified_cache;
mod verify;
