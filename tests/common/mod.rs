//! Test harness: one real Kubernetes API server (kube-apiserver + etcd) per test binary.
//!
//! The first call to [`cluster`] in a test binary starts a private kube-apiserver and etcd on
//! loopback with `../shared/envtest/envtest.sh start` (the script's path can be overridden with
//! the `ENVTEST_SH` environment variable), in a private `ENVTEST_RUN_DIR` under a fresh
//! `$TMPDIR/mailsec-test.XXXXXX` directory so that test binaries running at the same time do not
//! collide, and installs `crds/` (server-side apply, then waits for the CRDs to be
//! `Established`). Every later call, from any test thread of the same binary, gets the same
//! server. Tests share it, so they must give the objects they create unique names
//! ([`unique_name`]).
//!
//! # Using an existing cluster instead
//!
//! Set `MAILSEC_TEST_KUBECONFIG=/path/to/kubeconfig` to run the tests against the current context
//! of that kubeconfig. Nothing is started or stopped then; the CRDs in `crds/` are installed into
//! that cluster with server-side apply (field manager `mailsec-tests`, forcing conflicts) and are
//! left installed. Test objects get unique names and are deleted by the tests that create them;
//! the examples are only applied with `--dry-run=server` so that they cannot overwrite objects
//! of the same name.
//!
//! # Clean-up
//!
//! A server this harness starts is stopped (`envtest.sh stop`, which also deletes its run dir)
//! whichever way the test process ends:
//! - [`ServerGuard`]'s `Drop` stops it when start-up fails half-way (e.g. the CRDs do not install);
//! - the guard lives in a `static`, which is never dropped, so a libc `atexit` hook stops it when
//!   the test binary exits, also after failed tests (the test harness exits with code 101);
//! - a watchdog (`sh` in its own process group) polls the test process' PID and stops the server
//!   once the process is gone, so even `SIGKILL` or Ctrl-C of the test binary leaves nothing
//!   running. Start and stop are serialized with `flock`, so a test process killed while the
//!   server is still starting is cleaned up once the start has finished.
//!
//! Set `ENVTEST_KEEP_RUN_DIR=1` to keep the run dir (logs, kubeconfig) after the server is stopped.
//!
//! # Restarting the API server
//!
//! [`Cluster::restart_apiserver`] kills the kube-apiserver (SIGKILL, like a crashed control
//! plane) and starts it again with the same command line, environment and port; etcd stays up,
//! so every object survives. The respawned server's PID goes to the run dir's
//! `kube-apiserver.pid`, where `envtest.sh stop` (and so every clean-up path above) finds it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::CustomResourceExt;
use mailsec_operator::api::{Subscription, Tenant};

/// Environment variable naming the kubeconfig of an existing cluster to use instead of starting one.
pub const EXTERNAL_KUBECONFIG_ENV: &str = "MAILSEC_TEST_KUBECONFIG";

/// Field manager the harness and the tests use for server-side apply.
pub const FIELD_MANAGER: &str = "mailsec-tests";

/// The API server the tests of this binary talk to.
pub struct Cluster {
    kubeconfig: PathBuf,
    env: BTreeMap<String, String>,
    guard: ServerGuard,
}

impl Cluster {
    /// The kubeconfig to talk to the server with.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// True when the tests run against a cluster named by `MAILSEC_TEST_KUBECONFIG`, not a
    /// private server. Tests then avoid writing objects with fixed names.
    pub fn is_external(&self) -> bool {
        self.guard.envtest_sh.is_none()
    }

    /// The variables from `$ENVTEST_RUN_DIR/env` (`KUBECONFIG`, `ENVTEST_APISERVER_URL`,
    /// `ENVTEST_TOKEN`, ...), or only `KUBECONFIG` for an external cluster.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// A `kubectl` command with `KUBECONFIG` set and a private discovery cache, so that one test
    /// binary never reads discovery that another server (or an earlier CRD set) left behind.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.guard.base.join("kube-cache"))
            .arg("--request-timeout=60s")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl ARGS` against this cluster and returns its output (whatever the exit code).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubectl {args:?} (is kubectl on PATH?): {e}"))
    }

    /// Runs `kubectl ARGS` with `input` on its standard input (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl {args:?} (is kubectl on PATH?): {e}"));
        child
            .stdin
            .take()
            .expect("stdin was piped")
            .write_all(input.as_bytes())
            .expect("write the manifest to kubectl's stdin");
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for kubectl {args:?}: {e}"))
    }

    /// A kube client for this cluster (the kubeconfig's current context).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", self.kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("load kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::Client::try_from(config).expect("build a kube client from the kubeconfig")
    }

    /// Restarts the API server this harness started: kills the kube-apiserver process with
    /// SIGKILL, waits until it is gone, leaves the port closed for `down`, then starts the same
    /// program again with the command line, environment and working directory it had (read from
    /// `/proc/<pid>/`), so on the same port with the same certificates and the same etcd, and
    /// waits (up to 60 s) until `/readyz` answers `ok`. Returns how long the server answered
    /// nothing (kill to ready).
    ///
    /// Clients keep working afterwards: the kubeconfig, the CA and the token do not change.
    /// The new process is a child of the test process in its own session (as `envtest.sh start`
    /// makes it with `setsid`); a thread reaps it when it exits, so that `envtest.sh stop`, which
    /// polls the PID with `kill -0`, never waits for a zombie. Its PID is written to
    /// `kube-apiserver.pid`, so the normal clean-up (`Drop`, `atexit`, the watchdog) stops it.
    /// Holds the harness' lock file meanwhile, so a clean-up never runs half-way through.
    pub fn restart_apiserver(&self, down: Duration) -> Result<Duration, String> {
        use std::os::unix::process::CommandExt;
        if self.is_external() {
            return Err(format!(
                "{EXTERNAL_KUBECONFIG_ENV} is set: the harness did not start this API server"
            ));
        }
        let run = self.guard.run_dir();
        let lock = std::fs::File::open(self.guard.lock_file())
            .or_else(|_| std::fs::File::create(self.guard.lock_file()))
            .map_err(|e| format!("open the lock file: {e}"))?;
        // SAFETY: flock(2) on a descriptor this function owns; released when `lock` is dropped.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(format!("flock: {}", std::io::Error::last_os_error()));
        }
        if self.guard.stopped.load(Ordering::SeqCst) {
            return Err("the server was stopped".into());
        }

        let pid_file = run.join("kube-apiserver.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("read {}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let nul_list = |name: &str| -> Result<Vec<std::ffi::OsString>, String> {
            use std::os::unix::ffi::OsStringExt;
            let bytes = std::fs::read(proc_dir.join(name))
                .map_err(|e| format!("read /proc/{pid}/{name}: {e}"))?;
            Ok(bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| std::ffi::OsString::from_vec(part.to_vec()))
                .collect())
        };
        let argv = nul_list("cmdline")?;
        let environ = nul_list("environ")?;
        let cwd = std::fs::read_link(proc_dir.join("cwd"))
            .map_err(|e| format!("read /proc/{pid}/cwd: {e}"))?;
        let program = argv.first().ok_or("empty command line")?;
        if !program.to_string_lossy().contains("kube-apiserver") {
            return Err(format!(
                "PID {pid} from {} is not the API server: {argv:?}",
                pid_file.display()
            ));
        }

        // Kill, and wait until the process is gone: it is reaped by init (the first server,
        // started by envtest.sh) or by the waiting thread below (a server started here), after
        // which kill(pid, 0) fails with ESRCH. Only then is the port free again.
        let killed_at = Instant::now();
        // SAFETY: kill(2) on the API server's PID, which this harness started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let gone = |pid: i32| unsafe { libc::kill(pid, 0) } != 0;
        while !gone(pid) {
            if killed_at.elapsed() > Duration::from_secs(10) {
                return Err(format!("the API server (PID {pid}) did not die"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(down);

        let log_path = run.join("kube-apiserver.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(environ.iter().map(|kv| {
                let kv = kv.to_string_lossy().into_owned();
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                (k.to_string(), v.to_string())
            }))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("dup the log: {e}"))?)
            .stderr(log);
        // SAFETY: setsid(2) is async-signal-safe; it only makes the child a session leader
        // (as `setsid` in envtest.sh does), so signals to the test's terminal do not reach it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("respawn {}: {e}", program.to_string_lossy()))?;
        let new_pid = child.id();
        let tmp = run.join("kube-apiserver.pid.tmp");
        std::fs::write(&tmp, format!("{new_pid}\n"))
            .and_then(|()| std::fs::rename(&tmp, &pid_file))
            .map_err(|e| format!("write {}: {e}", pid_file.display()))?;
        let exited = Arc::new(AtomicBool::new(false));
        {
            let exited = exited.clone();
            std::thread::spawn(move || {
                let _ = child.wait();
                exited.store(true, Ordering::SeqCst);
            });
        }
        drop(lock);

        // Ready when /readyz says `ok` (as envtest.sh start checks it).
        let url = self
            .env
            .get("ENVTEST_APISERVER_URL")
            .ok_or("no ENVTEST_APISERVER_URL")?;
        let token = self.env.get("ENVTEST_TOKEN").ok_or("no ENVTEST_TOKEN")?;
        let ca = run.join("pki/ca.crt");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "5", "--cacert"])
                .arg(&ca)
                .arg("-H")
                .arg(format!("Authorization: Bearer {token}"))
                .arg(format!("{url}/readyz"))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("run curl: {e}"))?;
            if out.status.success() && out.stdout == b"ok" {
                return Ok(killed_at.elapsed());
            }
            if exited.load(Ordering::SeqCst) || Instant::now() > deadline {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                return Err(format!(
                    "the respawned API server (PID {new_pid}) {}; last lines of {}:\n{}",
                    if exited.load(Ordering::SeqCst) {
                        "exited"
                    } else {
                        "was not ready in 60 s"
                    },
                    log_path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Installs `crds/` with server-side apply and waits until every CRD is `Established`.
    pub fn install_crds(&self) -> Result<(), String> {
        let dir = repo_dir().join("crds");
        let dir = dir.to_str().ok_or("the repository path is not UTF-8")?;
        let manager = format!("--field-manager={FIELD_MANAGER}");
        let out = self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager,
            "-f",
            dir,
        ]);
        if !out.status.success() {
            return Err(format!("installing {dir} failed: {}", describe(&out)));
        }
        let crds = [
            format!("crd/{}", Tenant::crd_name()),
            format!("crd/{}", Subscription::crd_name()),
        ];
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(crds.iter().map(String::as_str));
        let out = self.kubectl(&args);
        if !out.status.success() {
            return Err(format!(
                "the CRDs did not become Established: {}",
                describe(&out)
            ));
        }
        Ok(())
    }
}

/// The cluster of this test binary, started (and the CRDs installed) on first use.
///
/// Panics with the reason when no server could be started; every test that needs it then fails
/// with the same message, without trying again.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    static REGISTER_ATEXIT: std::sync::Once = std::sync::Once::new();

    extern "C" fn stop_at_exit() {
        if let Some(Ok(cluster)) = CLUSTER.get() {
            cluster.guard.stop();
        }
    }

    let cluster = CLUSTER.get_or_init(|| {
        // SAFETY: `stop_at_exit` is a plain `extern "C" fn()` that only reads a static; registering
        // it has no other preconditions.
        REGISTER_ATEXIT.call_once(|| {
            if unsafe { libc::atexit(stop_at_exit) } != 0 {
                eprintln!("mailsec tests: could not register the atexit clean-up hook");
            }
        });
        start_cluster()
    });
    match cluster {
        Ok(c) => c,
        Err(e) => panic!("no Kubernetes API server for the tests: {e}"),
    }
}

/// Shortcut for `cluster().kubectl(args)`.
pub fn kubectl(args: &[&str]) -> Output {
    cluster().kubectl(args)
}

/// Shortcut for `cluster().kubectl_stdin(args, input)`.
pub fn kubectl_stdin(args: &[&str], input: &str) -> Output {
    cluster().kubectl_stdin(args, input)
}

/// Shortcut for `cluster().client()`.
pub async fn client() -> kube::Client {
    cluster().client().await
}

/// A name unique to this test process and call, `PREFIX-XXXXXX-N`, valid as a DNS label when
/// `prefix` is one (and short).
pub fn unique_name(prefix: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let run = RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}", (std::process::id() ^ nanos) & 0xff_ffff)
    });
    format!("{prefix}-{run}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The repository root (this crate's manifest directory).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A readable account of a command's outcome for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Retries `f` until it returns `Some` or `timeout` passes (then returns the last `None`).
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deletes the listed objects (`kind/name`, cluster-scoped) when dropped, also when the test
/// fails, so that tests leave nothing behind on an external cluster.
#[derive(Default)]
pub struct Cleanup(Vec<String>);

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind/name` for deletion.
    pub fn add(&mut self, kind: &str, name: &str) {
        self.0.push(format!("{kind}/{name}"));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        args.extend(self.0.iter().map(String::as_str));
        let out = kubectl(&args);
        if !out.status.success() {
            eprintln!("clean-up of {:?} failed: {}", self.0, describe(&out));
        }
    }
}

/// Owns the scratch directory of a test binary and the envtest server started in it; stops the
/// server and deletes the directory when dropped or when [`ServerGuard::stop`] is called.
pub struct ServerGuard {
    /// `$TMPDIR/mailsec-test.XXXXXX`: `run/` (the `ENVTEST_RUN_DIR`), `lock`, `kube-cache/`.
    base: PathBuf,
    /// The envtest script, when this guard started a server (None for an external cluster).
    envtest_sh: Option<PathBuf>,
    stopped: AtomicBool,
}

impl ServerGuard {
    fn run_dir(&self) -> PathBuf {
        self.base.join("run")
    }

    fn lock_file(&self) -> PathBuf {
        self.base.join("lock")
    }

    /// Stops the server (if any) and deletes the scratch directory. Idempotent; never panics
    /// (it runs from `atexit`).
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(script) = &self.envtest_sh {
            let result = Command::new("flock")
                .arg(self.lock_file())
                .arg(script)
                .arg("stop")
                .env("ENVTEST_RUN_DIR", self.run_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
            match result {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("envtest.sh stop exited with {s} ({})", self.base.display()),
                Err(e) => eprintln!("cannot run envtest.sh stop: {e}"),
            }
        }
        if std::env::var("ENVTEST_KEEP_RUN_DIR").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// Starts the watchdog: a shell in its own process group that waits for this process to be
    /// gone and then cleans up as [`ServerGuard::stop`] does.
    fn spawn_watchdog(&self) -> Result<(), String> {
        const WATCHDOG: &str = r#"
pid=$1 envtest=$2 base=$3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
[ -d "$base" ] || exit 0
if [ -n "$envtest" ]; then ENVTEST_RUN_DIR="$base/run" flock "$base/lock" "$envtest" stop; fi
[ "${ENVTEST_KEEP_RUN_DIR:-0}" = 1 ] || rm -rf "$base"
"#;
        use std::os::unix::process::CommandExt;
        let envtest = self
            .envtest_sh
            .as_deref()
            .map(|p| p.as_os_str().to_owned())
            .unwrap_or_default();
        Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("mailsec-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(envtest)
            .arg(&self.base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C to the test's terminal must not kill the watchdog.
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the clean-up watchdog: {e}"))
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_cluster() -> Result<Cluster, String> {
    let base = tempfile::Builder::new()
        .prefix("mailsec-test.")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?
        .keep();

    let external = std::env::var_os(EXTERNAL_KUBECONFIG_ENV).filter(|v| !v.is_empty());
    let envtest_sh = match &external {
        Some(_) => None,
        None => Some(
            std::env::var_os("ENVTEST_SH")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_dir().join("../shared/envtest/envtest.sh")),
        ),
    };
    // From here on the guard cleans up whatever happens.
    let guard = ServerGuard {
        base,
        envtest_sh,
        stopped: AtomicBool::new(false),
    };
    guard.spawn_watchdog()?;

    let (kubeconfig, env) = match (&external, &guard.envtest_sh) {
        (Some(path), _) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!(
                    "{EXTERNAL_KUBECONFIG_ENV}={} is not a file",
                    path.display()
                ));
            }
            let env = BTreeMap::from([("KUBECONFIG".to_string(), path.display().to_string())]);
            (path, env)
        }
        (None, Some(script)) => start_envtest(&guard, script)?,
        (None, None) => unreachable!("envtest_sh is set when no external cluster is given"),
    };

    let cluster = Cluster {
        kubeconfig,
        env,
        guard,
    };
    cluster.install_crds()?;
    Ok(cluster)
}

/// Runs `envtest.sh start` in the guard's run dir and reads back `$ENVTEST_RUN_DIR/env`.
fn start_envtest(
    guard: &ServerGuard,
    script: &Path,
) -> Result<(PathBuf, BTreeMap<String, String>), String> {
    if !script.is_file() {
        return Err(format!(
            "{} not found: the shared/ folder must sit beside the repository (or set ENVTEST_SH, \
             or {EXTERNAL_KUBECONFIG_ENV} to use an existing cluster)",
            script.display()
        ));
    }
    // `flock -o`: hold the lock while the script runs, but do not pass it on to etcd and the
    // API server, which outlive the script.
    let out = Command::new("flock")
        .arg("-o")
        .arg(guard.lock_file())
        .arg(script)
        .arg("start")
        .env("ENVTEST_RUN_DIR", guard.run_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run flock {} start: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} start failed: {}",
            script.display(),
            describe(&out)
        ));
    }
    let env_file = guard.run_dir().join("env");
    let text = std::fs::read_to_string(&env_file)
        .map_err(|e| format!("cannot read {}: {e}", env_file.display()))?;
    let env: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect();
    let kubeconfig = env
        .get("KUBECONFIG")
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} does not set KUBECONFIG", env_file.display()))?;
    Ok((kubeconfig, env))
}
pub mod operator;
pub mod sinks;
pub mod tools;

/// Async version of [`eventually`]: retries `f` every 100 ms until `Some` or `timeout`.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
