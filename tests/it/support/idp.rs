//! A real OpenID provider — oidc-provider from the npm registry, run by
//! Node.js on loopback (`tests/idp/server.mjs`) — for the gateway's own
//! credentials toward upstreams. Started on a free port, stopped by PID;
//! its signing keys survive a restart (to rotate a client secret).
//! Tokens it issues are checked here independently of the gateway: RS256
//! with aws-lc-rs against the provider's own JWKS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{free_port, get, skip_unless_ci};

/// One provider process.
pub struct Idp {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    ttl: u64,
}

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Whether Node.js and `tests/idp/node_modules` are there (or why not).
pub fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node {
        skip_unless_ci("Node.js is not installed (apt-get install nodejs)");
        return false;
    }
    if !idp_dir().join("node_modules/oidc-provider").is_dir() {
        skip_unless_ci("oidc-provider is not installed (cd tests/idp && npm ci)");
        return false;
    }
    true
}

impl Idp {
    /// Starts a provider whose clients are `clients` (oidc-provider client
    /// metadata) and whose access tokens live `ttl` seconds.
    pub async fn start(clients: &Value, ttl: u64) -> Idp {
        let mut idp = Idp {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            ttl,
        };
        idp.spawn(clients).await;
        idp
    }

    /// A provider that will listen on this port later ([`Idp::spawn`]).
    pub fn later(ttl: u64) -> Idp {
        Idp {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            ttl,
        }
    }

    pub async fn spawn(&mut self, clients: &Value) {
        let log = std::fs::File::create(self.dir.path().join("idp.log")).expect("log");
        let child = Command::new("node")
            .arg(idp_dir().join("server.mjs"))
            .current_dir(idp_dir())
            .env("IDP_PORT", self.port.to_string())
            .env("IDP_KEYS", self.dir.path().join("keys.json"))
            .env("IDP_CLIENTS", clients.to_string())
            .env("IDP_TTL", self.ttl.to_string())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "oidc-provider did not start: {}",
            std::fs::read_to_string(self.dir.path().join("idp.log")).unwrap_or_default()
        );
    }

    /// Stops the process (by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The issuer (for discovery).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// Token requests the provider received since it started.
    pub async fn token_requests(&self) -> u64 {
        get(self.addr(), "/_stats", &[]).await.json()["token_requests"]
            .as_u64()
            .expect("a count")
    }

    /// Introspection requests the provider received since it started.
    pub async fn introspection_requests(&self) -> u64 {
        get(self.addr(), "/_stats", &[]).await.json()["introspection_requests"]
            .as_u64()
            .expect("a count")
    }

    /// A client-credentials token for `client` (opaque without `resource`).
    pub async fn token(&self, client: &str, secret: &str, scope: &str) -> String {
        let body = format!("grant_type=client_credentials&scope={scope}");
        self.post_form("/token", client, secret, &body).await["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// Revokes a token (RFC 7009) as `client`.
    pub async fn revoke(&self, client: &str, secret: &str, token: &str) {
        let _ = self
            .post_form(
                "/token/revocation",
                client,
                secret,
                &format!("token={token}"),
            )
            .await;
    }

    async fn post_form(&self, path: &str, client: &str, secret: &str, body: &str) -> Value {
        self.post_form_with(path, client, secret, body, "").await
    }

    /// A client-credentials token request with a DPoP proof for the token
    /// endpoint: the provider's whole answer (`token_type` `DPoP`).
    pub async fn dpop_token(&self, client: &str, secret: &str, body: &str, proof: &str) -> Value {
        self.post_form_with(
            "/token",
            client,
            secret,
            body,
            &format!("DPoP: {proof}\r\n"),
        )
        .await
    }

    async fn post_form_with(
        &self,
        path: &str,
        client: &str,
        secret: &str,
        body: &str,
        extra: &str,
    ) -> Value {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{secret}"));
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Basic {basic}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let resp = super::raw(self.addr(), request.as_bytes()).await;
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null)
    }

    /// The provider's JWKS (public keys).
    pub async fn jwks(&self) -> Value {
        get(self.addr(), "/jwks", &[]).await.json()
    }

    /// Verifies an RS256 access token with the provider's keys, without
    /// the gateway's code, and returns its claims.
    pub async fn verify(&self, token: &str) -> Value {
        let jwks = self.jwks().await;
        verify_rs256(token, &jwks)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client of the provider: client-credentials only.
pub fn client(id: &str, secret: &str, auth_method: &str) -> Value {
    json!({"client_id": id, "client_secret": secret, "token_endpoint_auth_method": auth_method})
}

/// Verifies a compact RS256 JWS against a JWKS with aws-lc-rs.
pub fn verify_rs256(token: &str, jwks: &Value) -> Value {
    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
    let header: Value = serde_json::from_slice(&decode(header)).expect("header JSON");
    assert_eq!(header["alg"], "RS256", "{header}");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the provider's JWKS");
    let n = decode(key["n"].as_str().expect("n"));
    let e = decode(key["e"].as_str().expect("e"));
    let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
    public
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            &token.as_bytes()[..token.rfind('.').expect("signing input")],
            &decode(signature),
        )
        .expect("the injected token verifies against the provider's JWKS");
    serde_json::from_slice(&decode(payload)).expect("claims JSON")
}
