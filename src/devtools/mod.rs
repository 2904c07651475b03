//! Development tools: the self-contained demo and token minting for tests
//! and local work. Never used on the request path.
//!
//! Depends on `jsonwebtoken`, `serde_json` and (the demo) the composition root.

pub mod demo;
pub mod explain;
pub mod token;
