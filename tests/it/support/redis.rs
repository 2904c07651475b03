//! A real Redis (Debian's `redis-server`) on a free loopback port, with no
//! persistence, stopped by PID; `redis-cli` for what the tests do to it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, installed};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// `None` (after saying why) when redis-server is not installed.
    pub async fn start() -> Option<Redis> {
        installed(&["redis-server"], "redis-server")?;
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.spawn().await;
        Some(redis)
    }

    /// Starts (again) on the same port.
    pub async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one `redis-cli` command against it.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
