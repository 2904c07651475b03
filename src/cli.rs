//! The command line (SPEC §1): parse, then dispatch to the library.
//!
//! Depends on clap, [`crate::app`], [`crate::config`] and [`crate::devtools`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// scopegate: verifies OAuth 2.0 bearer tokens and enforces per-route scope
/// and claim rules before forwarding requests to an unmodified upstream.
#[derive(Debug, Parser)]
#[command(name = "scopegate", version, about)]
pub struct Cli {
    /// Config file (default: $SCOPEGATE_CONFIG, else ./gateway.yaml).
    #[arg(
        short,
        long,
        global = true,
        env = "SCOPEGATE_CONFIG",
        default_value = "gateway.yaml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Run,
    /// Validate the config offline and print the route table (exit 0 valid, 1 invalid).
    Check,
    /// Print what the gateway would decide for a request, without sending it (exit 0 allow, 1 deny, 2 config error).
    Explain {
        /// GET, POST, ...
        method: String,
        /// The request target: path and query, as a client would send it.
        path: String,
        /// A bearer token to verify and use.
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the token (keeps it out of the shell history).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Print the JSON Schema of gateway.yaml (for editors and CI).
    Schema,
    /// Print the `routes:` block an OpenAPI 3.0/3.1 document's security requirements imply (exit 1 if it cannot be read).
    Routes {
        /// The OpenAPI document, YAML or JSON.
        #[arg(long, value_name = "FILE")]
        from_openapi: PathBuf,
        /// Only this security scheme's scopes (others count as no scope).
        #[arg(long, value_name = "NAME")]
        scheme: Option<String>,
    },
    /// Start a self-contained demo: echo upstream, development issuer and gateway, with curl commands to try.
    Demo {
        /// The gateway's port; the upstream and issuer take the next two.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Mint a signed token. FOR DEVELOPMENT AND TESTS ONLY: never use it to issue production tokens.
    Token(Box<TokenArgs>),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Private key PEM (PKCS#8; RSA, EC P-256/P-384 or Ed25519).
    #[arg(long)]
    pub key: PathBuf,
    /// Algorithm (default: RS256, ES256/ES384 or EdDSA from the key).
    #[arg(long)]
    pub alg: Option<String>,
    #[arg(long)]
    pub kid: Option<String>,
    #[arg(long)]
    pub iss: Option<String>,
    #[arg(long)]
    pub aud: Option<String>,
    #[arg(long)]
    pub sub: Option<String>,
    /// Space-separated scopes.
    #[arg(long)]
    pub scope: Option<String>,
    /// Extra claim, NAME=VALUE (VALUE parsed as JSON when it is JSON); repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
    /// Mint this many tokens, one per line, differing by their `jti` (load tests).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Lifetime, like 1h or 30m; prefix with '-' for an already expired token.
    #[arg(long, default_value = "1h", allow_hyphen_values = true)]
    pub ttl: String,
}

/// Runs the command line; the exit code follows SPEC §1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let _logs = crate::telemetry::init_logging();
            crate::app::run(&cli.config)
        }
        Command::Check => check(&cli.config),
        Command::Demo { port } => demo(port),
        Command::Schema => {
            match serde_json::to_string_pretty(&crate::config::schema()) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("cannot render the schema: {e}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Explain {
            method,
            path,
            token,
            token_file,
        } => explain(&cli.config, &method, &path, token, token_file),
        Command::Token(args) => token(*args),
        Command::Routes {
            from_openapi,
            scheme,
        } => routes_from_openapi(&from_openapi, scheme.as_deref()),
    }
}

/// `scopegate routes --from-openapi FILE`: the routes on stdout, nothing
/// else; an unreadable document is `FILE:LINE:COLUMN: message` and exit 1.
fn routes_from_openapi(file: &Path, scheme: Option<&str>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}:1:1: cannot read: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    match crate::openapi::convert(&text, scheme) {
        Ok(doc) => {
            print!(
                "{}",
                crate::openapi::render(&doc, &file.display().to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}:{e}", file.display());
            ExitCode::from(1)
        }
    }
}

fn explain(
    config: &Path,
    method: &str,
    path: &str,
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> ExitCode {
    let config = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let token = match token_file {
        Some(file) => match std::fs::read_to_string(&file) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                eprintln!("cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        },
        None => token,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let explained = runtime.block_on(crate::devtools::explain::explain(
        config,
        method,
        path,
        token.as_deref(),
    ));
    print!("{}", explained.text);
    if explained.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn demo(port: u16) -> ExitCode {
    let _logs = crate::telemetry::init_logging();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(crate::devtools::demo::run(port)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match crate::config::check(path) {
        Ok(config) => {
            println!("{}: valid", path.display());
            let names: Vec<&str> = config.upstreams.iter().map(|u| &*u.name).collect();
            print!("{}", crate::route::describe(&config.routes, &names));
            for warning in &config.warnings {
                println!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("scopegate token: {m}");
        ExitCode::from(2)
    };
    let pem = match std::fs::read(&args.key) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot read {}: {e}", args.key.display())),
    };
    let alg = match args
        .alg
        .as_deref()
        .map(|a| crate::jwks::parse_alg(a).ok_or(a))
    {
        None => None,
        Some(Ok(alg)) => Some(alg),
        Some(Err(a)) => return fail(format!("unknown algorithm {a:?}")),
    };
    let (negative, ttl) = match args.ttl.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, args.ttl.as_str()),
    };
    let ttl = match ttl.parse::<crate::config::raw::Dur>() {
        Ok(d) => i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX),
        Err(e) => return fail(e),
    };
    let mut claims = Vec::new();
    for c in &args.claims {
        match c.split_once('=') {
            Some((k, v)) if !k.is_empty() => claims.push((k.to_owned(), v.to_owned())),
            _ => return fail(format!("--claim {c:?} is not NAME=VALUE")),
        }
    }
    let mint = crate::devtools::token::Mint {
        alg,
        kid: args.kid,
        iss: args.iss,
        aud: args.aud,
        sub: args.sub,
        scope: args.scope,
        claims,
        ttl: if negative { -ttl } else { ttl },
    };
    let minted = if args.count > 1 {
        crate::devtools::token::mint_many(&pem, &mint, args.count)
    } else {
        crate::devtools::token::mint(&pem, &mint).map(|t| vec![t])
    };
    match minted {
        Ok(tokens) => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for token in tokens {
                let _ = writeln!(out, "{token}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}
