//! The one integration-test binary (each `tests/*.rs` would link on its own).

mod browser;
mod bypass;
mod cli;
mod config_corpus;
mod config_errors;
mod credentials;
mod demo;
mod deploy;
mod forward_auth;
mod grpc;
mod introspection;
mod lifecycle;
mod operations;
mod peers;
mod properties;
mod proxy;
mod quotas;
mod reload;
mod shadow;
mod slow_clients;
mod smuggling;
mod support;
mod tls;
mod tokens;
mod websocket;
mod wycheproof;
