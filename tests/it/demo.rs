//! `scopegate demo` end to end: run the real binary on free ports, read the
//! commands it prints, send their equivalents, and check every printed
//! expectation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use crate::support::{free_port, raw};

/// One printed check: `# expect STATUS: why` then a `curl` line.
struct Check {
    status: u16,
    why: String,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

fn parse(lines: &[String]) -> (HashMap<String, String>, Vec<Check>) {
    let mut vars = HashMap::new();
    let mut checks = Vec::new();
    let mut expect: Option<(u16, String)> = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("export ") {
            let (name, value) = rest.split_once('=').expect("NAME=value");
            vars.insert(name.to_owned(), value.to_owned());
        } else if let Some(rest) = line.strip_prefix("# expect ") {
            let (status, why) = rest.split_once(": ").expect("STATUS: why");
            expect = Some((status.parse().expect("status"), why.to_owned()));
        } else if let Some(rest) = line.strip_prefix("curl ") {
            let (status, why) = expect.take().expect("an expectation before each command");
            let (mut method, mut url, mut headers) = ("GET".to_owned(), String::new(), Vec::new());
            let words: Vec<String> = shell_words(rest);
            let mut i = 0;
            while i < words.len() {
                match words[i].as_str() {
                    "-i" | "--path-as-is" => {}
                    "-X" => {
                        i += 1;
                        method = words[i].clone();
                    }
                    "-H" => {
                        i += 1;
                        let (n, v) = words[i].split_once(": ").expect("header");
                        let v = vars.iter().fold(v.to_owned(), |v, (name, value)| {
                            v.replace(&format!("${name}"), value)
                        });
                        headers.push((n.to_owned(), v));
                    }
                    w => url = w.to_owned(),
                }
                i += 1;
            }
            checks.push(Check {
                status,
                why,
                method,
                url,
                headers,
            });
        }
    }
    (vars, checks)
}

/// Splits a command line on spaces, keeping double-quoted words whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_does_what_it_prints() {
    let port = loop {
        let p = free_port();
        if p < 65000
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 2)).is_ok()
        {
            break p;
        }
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["demo", "--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("utf-8");
            let done = line.starts_with("Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .expect("join");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{port}"))),
        "prints the address: {lines:?}"
    );
    let (vars, checks) = parse(&lines);
    assert_eq!(vars.len(), 4, "four minted tokens");
    assert!(checks.len() >= 8, "{} checks", checks.len());
    for expected in [200, 401, 403, 405] {
        assert!(
            checks.iter().any(|c| c.status == expected),
            "a check expects {expected}"
        );
    }
    for check in &checks {
        let target = check
            .url
            .split_once(&format!("127.0.0.1:{port}"))
            .expect("the gateway's URL")
            .1;
        let mut req = format!(
            "{} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
            check.method
        );
        for (n, v) in &check.headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("Content-Length: 0\r\n\r\n");
        let resp = raw(([127, 0, 0, 1], port).into(), req.as_bytes()).await;
        assert_eq!(
            resp.status, check.status,
            "{}: {} {}",
            check.why, check.method, target
        );
        if target == "/api/reports" {
            // The echo saw the gateway's own client-credentials token.
            assert_eq!(
                resp.json()["bearer_token_sub"],
                "demo-gateway",
                "{}",
                resp.text()
            );
            assert_eq!(
                resp.json()["bearer_token_aud"],
                "https://echo.scopegate.demo"
            );
        }
    }
    assert!(
        checks.iter().any(|c| c.url.ends_with("/api/reports")),
        "the demo shows an injected credential"
    );
    crate::support::signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends the demo with 0");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["demo", "--port", &port.to_string()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")) && stderr.contains("--port"),
        "{stderr}"
    );
}
