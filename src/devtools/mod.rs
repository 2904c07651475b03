//! Development tools: minting tokens for tests and local work. Never used
//! on the request path.
//!
//! Depends on `jsonwebtoken` and `serde_json`.

pub mod token;
