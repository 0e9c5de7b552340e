//! Helpers shared by the tests that run `envlink serve` as a process.

// Each test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;
use std::thread::JoinHandle;

use serde_json::Value;

/// What the "envlink serving" log line says, and the rest of the log.
pub struct Serving {
    /// The HTTPS address (`--listen`, with the port the OS chose for `:0`).
    pub listen: SocketAddr,
    /// The plain-HTTP metrics address.
    pub metrics: SocketAddr,
    /// Every later stderr line, collected until the child exits. Reading on keeps the child
    /// from ever blocking on a full pipe.
    pub rest: JoinHandle<Vec<String>>,
}

/// Reads the child's JSON log lines (`--log-format json`, stderr piped) until the "envlink
/// serving" one. If the child never logs it, kills the child and panics with its log.
pub fn wait_for_serving(child: &mut Child) -> Serving {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("envlink serving"))
        {
            let address = |key: &str| v[key].as_str().and_then(|a| a.parse().ok());
            if let (Some(listen), Some(metrics)) = (address("listen"), address("metrics")) {
                let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
                return Serving {
                    listen,
                    metrics,
                    rest,
                };
            }
        }
        seen.push(line);
    }
    let _ = child.kill();
    panic!("envlink never logged that it serves:\n{}", seen.join("\n"));
}
