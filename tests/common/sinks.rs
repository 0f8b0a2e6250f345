//! The other end of the notifications: a real SMTP server (aiosmtpd) and a webhook receiver
//! (Python's http.server, checking the HMAC signature with Python's own hmac module), each a
//! Python process on a free loopback port that writes what it receives to a directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use super::repo_dir;

/// Installs aiosmtpd from PyPI when python3 lacks it (scripts/setup.sh does the same).
pub fn ensure_aiosmtpd() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let has = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            let out = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
                .output()
                .expect("run python3 -m pip");
            assert!(
                out.status.success(),
                "pip install aiosmtpd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// One running sink; killed when dropped.
pub struct Sink {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Sink {
    fn start(script: &str, port: u16, dir: &Path, args: &[&str]) -> Sink {
        std::fs::create_dir_all(dir).expect("sink directory");
        let mut child = Command::new("python3")
            .arg(repo_dir().join("tests/support").join(script))
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                let _ = child.kill();
                panic!("{script} did not start: {other:?}");
            }
        }
        Sink {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// An SMTP server on `port` writing to `dir` (see tests/support/mail_sink.py for `args`).
    pub fn mail(port: u16, dir: &Path, args: &[&str]) -> Sink {
        ensure_aiosmtpd();
        Self::start("mail_sink.py", port, dir, args)
    }

    /// A webhook receiver on `port` checking signatures with `secret`.
    pub fn webhook(port: u16, dir: &Path, secret: &str, args: &[&str]) -> Sink {
        let mut all = vec!["--secret", secret];
        all.extend_from_slice(args);
        Self::start("webhook_sink.py", port, dir, &all)
    }

    /// Stops the server (SIGKILL: it is gone at once, like a crashed server).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True until [`Sink::stop`].
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// What it received, in order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        read_records(&self.dir)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `N.json` records in `dir`, by N.
pub fn read_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<(u64, serde_json::Value)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter_map(|p| {
                    let n = p.file_stem()?.to_str()?.parse::<u64>().ok()?;
                    let text = std::fs::read_to_string(&p).ok()?;
                    Some((n, serde_json::from_str(&text).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(n, _)| *n);
    out.into_iter().map(|(_, v)| v).collect()
}

/// A string field of a record.
pub fn field<'a>(record: &'a serde_json::Value, name: &str) -> &'a str {
    record
        .get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
}
