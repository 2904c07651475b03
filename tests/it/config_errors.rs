//! Config errors: one line naming file, line, column and field; never a
//! panic, whatever the input.

use std::path::Path;

fn error_of(yaml: &str) -> String {
    match scopegate::config::parse(Path::new("conf/gateway.yaml"), yaml.as_bytes()) {
        Ok(_) => panic!("config must be refused:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str =
    "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n    auth: none\n";

#[test]
fn errors_name_file_line_column_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n    auth: none\n    methodz: [GET]\n",
            "conf/gateway.yaml:6:5: routes[0].methodz: unknown field `methodz`",
        ),
        (
            "workers: 100000\nupstream:\n  url: http://127.0.0.1:3000\n",
            "conf/gateway.yaml:1:10: workers: must be at most 1024 (0: one per core)",
        ),
        (
            "events_per_busy_turn: 0\nupstream:\n  url: http://127.0.0.1:3000\n",
            "conf/gateway.yaml:1:23: events_per_busy_turn: must be from 1 to 1024",
        ),
        (
            "listen: nope\nupstream:\n  url: http://127.0.0.1:3000\n",
            "conf/gateway.yaml:1:9: listen: invalid socket address syntax",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\n  request_timeout: 30\n",
            "conf/gateway.yaml:3:20: upstream.request_timeout: \"30\" is not a duration",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a/{x\n",
            "conf/gateway.yaml:4:11: routes[0].path: '{' or '}' must enclose a whole segment",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n    auth: none\n  - path: /a\n    auth: none\n",
            "conf/gateway.yaml:6:5: routes[1].path: overlaps the route /a for the same methods (*)",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n    methods: [get]\n    auth: none\n",
            "conf/gateway.yaml:5:15: routes[0].methods[0]: methods are upper case: write GET instead of get",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nissuers:\n  - issuer: https://a/\n    audiences: [x]\n    jwks_file: k.json\n    algorithms: [none]\n",
            "conf/gateway.yaml:7:18: issuers[0].algorithms[0]: alg none is never accepted",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nissuers:\n  - issuer: https://a/\n    audiences: [x]\nroutes:\n  - path: /a\n",
            "conf/gateway.yaml:4:5: issuers[0]: needs exactly one key source",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nissuers:\n  - issuer: https://a/\n    audiences: [x]\n    jwks_file: a.json\n    jwks_uri: https://a/jwks\nroutes:\n  - path: /a\n",
            "conf/gateway.yaml:6:16: issuers[0].jwks_file: only one key source per issuer",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nissuers:\n  - issuer: https://a/\n    audiences: [x]\n    jwks_file: missing.json\nroutes:\n  - path: /a\n",
            "conf/gateway.yaml:6:16: issuers[0].jwks_file: cannot read conf/missing.json",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nissuers:\n  - issuer: https://a/\n    audiences: [x]\n    hs256_secret_env: SCOPEGATE_SURELY_UNSET_VAR\n    algorithms: [HS256]\nroutes:\n  - path: /a\n",
            "conf/gateway.yaml:6:23: issuers[0].hs256_secret_env: environment variable SCOPEGATE_SURELY_UNSET_VAR is not set",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\ntrusted_proxies: [10.0.0.0/33]\n",
            "conf/gateway.yaml:3:19: trusted_proxies[0]: \"10.0.0.0/33\" is not an address or CIDR range",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n",
            "conf/gateway.yaml:1:1: issuers: routes require a token but no issuer is configured",
        ),
        (
            "upstream:\n  url: ftp://x\n",
            "conf/gateway.yaml:2:8: upstream.url: must be http:// or https://",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\n  url: http://127.0.0.1:3001\n",
            "conf/gateway.yaml:3:3: upstream: duplicate mapping key: url",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes: 5\n",
            "conf/gateway.yaml:3:9: routes:",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nlimits:\n  max_request_header_bytes: 100\n",
            "conf/gateway.yaml:4:29: limits.max_request_header_bytes: must be at least 1024",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\ntokens:\n  from: [header, \"cookie\"]\n",
            "conf/gateway.yaml:4:18: tokens.from[1]: unknown token source \"cookie\"",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n    auth: none\n    scopes: [read]\n",
            "conf/gateway.yaml:4:11: routes[0].auth: auth: none cannot have scopes",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nroutes:\n  - path: /a\n    scopes: [\"read write\"]\n",
            "conf/gateway.yaml:5:14: routes[0].scopes: \"read write\" is not a valid scope",
        ),
        (
            "upstream:\n  url: http://127.0.0.1:3000\nidentity:\n  headers:\n    Host: sub\n",
            "conf/gateway.yaml:5:11: identity.headers.Host: this header cannot carry identity",
        ),
        ("\n\n", "conf/gateway.yaml:1:1: (file): the file is empty"),
        ("routes: []\n", "conf/gateway.yaml:1:1: upstream: missing"),
    ];
    for (yaml, want) in cases {
        let got = error_of(yaml);
        assert!(
            got.starts_with(want),
            "\nyaml:\n{yaml}\nwant prefix: {want}\ngot:         {got}"
        );
        assert!(!got.contains('\n'), "one line: {got}");
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\x00\x01\x02\xff\xfe garbage \x7f".to_vec(),
        (0..=255u8).cycle().take(4096).collect(),
        b"- just\n- a\n- list\n".to_vec(),
        b"upstream: [1, 2]\nroutes: {a: b}\n".to_vec(),
        b"upstream:\n  url: 12\n".to_vec(),
        b"{{{{{{{{{{".to_vec(),
        b"routes:\n  - path: \"\\uD800\"\n".to_vec(),
        b"workers: -1\n".to_vec(),
        b"limits:\n  max_connections: 99999999999999999999999\n".to_vec(),
        "a: ".repeat(10_000).into_bytes(),
        "[".repeat(100_000).into_bytes(),
        // Found by the config_load fuzzer: a key holding a newline made a
        // two-line error (fuzz/artifacts, crash-547c6882).
        b"\t?\t>+\t\n\n\t".to_vec(),
        b"? \"a\\nb\"\n: 1\n".to_vec(),
    ];
    // A billion-laughs alias bomb.
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for (i, c) in ('b'..='m').enumerate() {
        let prev = (b'a' + i as u8) as char;
        bomb.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    inputs.push(bomb.into_bytes());
    // A 10 MB file.
    inputs.push(format!("{BASE}# {}\n", "x".repeat(10 * 1024 * 1024)).into_bytes());
    for input in &inputs {
        let result =
            std::panic::catch_unwind(|| scopegate::config::parse(Path::new("g.yaml"), input));
        let result = result.unwrap_or_else(|_| {
            panic!(
                "panicked on {:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            )
        });
        let err = result.expect_err("hostile input must be refused");
        let text = err.to_string();
        assert!(text.starts_with("g.yaml:"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}

#[test]
fn the_repository_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml");
    let config = scopegate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.routes.routes().len() >= 5);
}
