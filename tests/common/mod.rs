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
//! # Upstream binaries: `KUBEBUILDER_ASSETS`
//!
//! When `KUBEBUILDER_ASSETS` names a folder holding `kube-apiserver`, `etcd` and (optionally)
//! `kubectl`, as `setup-envtest use -p path` makes it for controller-runtime's envtest, the
//! harness starts those instead of `envtest.sh`, with the flags controller-runtime's envtest
//! gives them: etcd on loopback without fsync; kube-apiserver on a loopback secure port with a
//! self-signed CA and serving certificate (openssl), an admin client certificate in
//! `system:masters` and a static admin token, a service-account signing key and issuer,
//! `--authorization-mode=RBAC`, `--service-cluster-ip-range=10.0.0.0/24`,
//! `--allow-privileged=true` and `--disable-admission-plugins=ServiceAccount`
//! ([`apiserver_flags`]). A flag the binary's `--help` does not list is left out with a note on
//! stderr: the envtest "lite" server (`../shared/envtest`), which these machines have instead of
//! upstream binaries, lacks the service-account, authorization, privileged and service-IP flags.
//! The run dir has the same layout as `envtest.sh`'s (pid files, `env`, `kubeconfig`, `pki/`), so
//! the clean-up and [`Cluster::restart_apiserver`] work the same. The folder's `kubectl` runs
//! the tests' kubectl commands when it is there.
//!
//! # Using an existing cluster instead
//!
//! Set `USE_EXISTING_CLUSTER=true` (as for controller-runtime's envtest) to run the tests against
//! the current context of the current kubeconfig (`KUBECONFIG`, else `~/.kube/config`; flattened
//! into the scratch directory with `kubectl config view --raw --flatten --minify`), or
//! `MAILSEC_TEST_KUBECONFIG=/path/to/kubeconfig` (the older name, which wins) for the current
//! context of that kubeconfig. Nothing is started or stopped then; the CRDs in `crds/` are installed into
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
/// `true`: use the current kubeconfig's cluster (controller-runtime's envtest convention).
pub const USE_EXISTING_CLUSTER_ENV: &str = "USE_EXISTING_CLUSTER";
/// A folder with upstream `kube-apiserver`, `etcd` and `kubectl` to start instead of envtest.sh.
pub const KUBEBUILDER_ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";

/// Field manager the harness and the tests use for server-side apply.
pub const FIELD_MANAGER: &str = "mailsec-tests";

/// The API server the tests of this binary talk to.
pub struct Cluster {
    kubeconfig: PathBuf,
    env: BTreeMap<String, String>,
    /// `kubectl`, or `$KUBEBUILDER_ASSETS/kubectl` when the harness started those binaries.
    kubectl: PathBuf,
    guard: ServerGuard,
}

impl Cluster {
    /// The kubeconfig to talk to the server with.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// True when the tests run against an existing cluster (`USE_EXISTING_CLUSTER`,
    /// `MAILSEC_TEST_KUBECONFIG`), not a private server. Tests then avoid writing objects with
    /// fixed names.
    pub fn is_external(&self) -> bool {
        matches!(self.guard.server, Server::External)
    }

    /// The variables from `$ENVTEST_RUN_DIR/env` (`KUBECONFIG`, `ENVTEST_APISERVER_URL`,
    /// `ENVTEST_TOKEN`, ...), or only `KUBECONFIG` for an external cluster.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// A `kubectl` command with `KUBECONFIG` set and a private discovery cache, so that one test
    /// binary never reads discovery that another server (or an earlier CRD set) left behind.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
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
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} {args:?} (is kubectl on PATH?): {e}",
                    self.kubectl.display()
                )
            })
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
        kube::Client::try_from(self.config().await)
            .expect("build a kube client from the kubeconfig")
    }

    /// The client configuration of the kubeconfig.
    pub async fn config(&self) -> kube::Config {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("load kubeconfig {}: {e}", self.kubeconfig.display()))
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
        if self.is_external() {
            return Err(format!(
                "{USE_EXISTING_CLUSTER_ENV} or {EXTERNAL_KUBECONFIG_ENV} is set: the harness did not \
                 start this API server"
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
        let mut child = spawn_in_own_session(&mut cmd)
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

/// kubectl's flags to act as a tenant editor (the `mailsec:tenant-editors` group of
/// docs/security.md).
pub const EDITOR: [&str; 2] = [
    "--as=jane@customer.example",
    "--as-group=mailsec:tenant-editors",
];

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
    /// What this guard started, and so how to stop it.
    server: Server,
    stopped: AtomicBool,
}

/// The API server a [`ServerGuard`] looks after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// An existing cluster: nothing to start or stop.
    External,
    /// Started with `envtest.sh start` (this script), stopped with `envtest.sh stop`.
    Envtest(PathBuf),
    /// etcd and kube-apiserver from `KUBEBUILDER_ASSETS`, started by the harness.
    Assets(PathBuf),
}

/// Stops what the run dir's pid files name (as `envtest.sh stop` does): TERM, up to 5 s, KILL.
/// `$1` is the run dir. Used by [`ServerGuard::stop`] and the watchdog.
const STOP_ASSETS_SH: &str = r#"
run=$1 pids=""
for n in kube-apiserver etcd; do
  [ -f "$run/$n.pid" ] && pid=$(cat "$run/$n.pid") && kill -0 "$pid" 2>/dev/null && pids="$pids $pid"
done
if [ -n "$pids" ]; then
  kill -TERM $pids 2>/dev/null
  i=0; while [ $i -lt 50 ] && kill -0 $pids 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  kill -KILL $pids 2>/dev/null
fi
rm -f "$run/kube-apiserver.pid" "$run/etcd.pid"
"#;

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
        let mut stop = Command::new("flock");
        stop.arg(self.lock_file());
        match &self.server {
            Server::External => {}
            Server::Envtest(script) => {
                stop.arg(script)
                    .arg("stop")
                    .env("ENVTEST_RUN_DIR", self.run_dir());
            }
            Server::Assets(_) => {
                stop.args(["sh", "-c", STOP_ASSETS_SH, "mailsec-test-stop"])
                    .arg(self.run_dir());
            }
        }
        if self.server != Server::External {
            let result = stop
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
            match result {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!(
                    "stopping the test API server exited with {s} ({})",
                    self.base.display()
                ),
                Err(e) => eprintln!("cannot stop the test API server: {e}"),
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
pid=$1 envtest=$2 base=$3 stop_assets=$4
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
[ -d "$base" ] || exit 0
case "$envtest" in
  "") ;;
  assets) flock "$base/lock" sh -c "$stop_assets" mailsec-test-stop "$base/run" ;;
  *) ENVTEST_RUN_DIR="$base/run" flock "$base/lock" "$envtest" stop ;;
esac
[ "${ENVTEST_KEEP_RUN_DIR:-0}" = 1 ] || rm -rf "$base"
"#;
        use std::os::unix::process::CommandExt;
        let envtest = match &self.server {
            Server::External => Default::default(),
            Server::Envtest(script) => script.as_os_str().to_owned(),
            Server::Assets(_) => "assets".into(),
        };
        Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("mailsec-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(envtest)
            .arg(&self.base)
            .arg(STOP_ASSETS_SH)
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

/// Which API server the tests use, from the environment: `MAILSEC_TEST_KUBECONFIG` (a
/// kubeconfig path), `USE_EXISTING_CLUSTER=true` (the current kubeconfig), `KUBEBUILDER_ASSETS`
/// (upstream binaries to start), else `envtest.sh` (`ENVTEST_SH`, default
/// `../shared/envtest/envtest.sh`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An existing cluster: this kubeconfig, or the current one (None).
    Existing(Option<PathBuf>),
    /// Start the binaries in this folder.
    Assets(PathBuf),
    /// Start a server with this envtest.sh.
    Envtest(PathBuf),
}

/// `strconv.ParseBool`'s true values, as controller-runtime reads `USE_EXISTING_CLUSTER`.
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl Backend {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(path) = var(EXTERNAL_KUBECONFIG_ENV) {
            return Backend::Existing(Some(PathBuf::from(path)));
        }
        if var(USE_EXISTING_CLUSTER_ENV).is_some_and(|v| truthy(&v.to_string_lossy())) {
            return Backend::Existing(None);
        }
        if let Some(dir) = var(KUBEBUILDER_ASSETS_ENV) {
            return Backend::Assets(PathBuf::from(dir));
        }
        Backend::Envtest(
            var("ENVTEST_SH")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_dir().join("../shared/envtest/envtest.sh")),
        )
    }
}

fn start_cluster() -> Result<Cluster, String> {
    start_cluster_with(Backend::from_env())
}

/// Starts (or connects to) the API server `backend` names, in a fresh scratch directory, and
/// installs the CRDs. The returned cluster stops what it started when dropped.
pub fn start_cluster_with(backend: Backend) -> Result<Cluster, String> {
    let base = tempfile::Builder::new()
        .prefix("mailsec-test.")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?
        .keep();
    let server = match &backend {
        Backend::Existing(_) => Server::External,
        Backend::Envtest(script) => Server::Envtest(script.clone()),
        Backend::Assets(dir) => Server::Assets(dir.clone()),
    };
    // From here on the guard cleans up whatever happens.
    let guard = ServerGuard {
        base,
        server,
        stopped: AtomicBool::new(false),
    };
    guard.spawn_watchdog()?;

    let mut kubectl = PathBuf::from("kubectl");
    let (kubeconfig, env) = match &backend {
        Backend::Existing(Some(path)) => {
            if !path.is_file() {
                return Err(format!(
                    "{EXTERNAL_KUBECONFIG_ENV}={} is not a file",
                    path.display()
                ));
            }
            let env = BTreeMap::from([("KUBECONFIG".to_string(), path.display().to_string())]);
            (path.clone(), env)
        }
        Backend::Existing(None) => {
            let path = current_kubeconfig(&guard)?;
            let env = BTreeMap::from([("KUBECONFIG".to_string(), path.display().to_string())]);
            (path, env)
        }
        Backend::Envtest(script) => start_envtest(&guard, script)?,
        Backend::Assets(dir) => {
            if dir.join("kubectl").is_file() {
                kubectl = dir.join("kubectl");
            }
            start_assets(&guard, dir)?
        }
    };

    let cluster = Cluster {
        kubeconfig,
        env,
        kubectl,
        guard,
    };
    cluster.install_crds()?;
    Ok(cluster)
}

/// The current context of the current kubeconfig (`KUBECONFIG` or `~/.kube/config`, as kubectl
/// reads them), flattened into one file in the scratch directory, for kubectl and kube clients.
fn current_kubeconfig(guard: &ServerGuard) -> Result<PathBuf, String> {
    let out = Command::new("kubectl")
        .args(["config", "view", "--raw", "--flatten", "--minify"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{USE_EXISTING_CLUSTER_ENV}: cannot run kubectl config view: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "{USE_EXISTING_CLUSTER_ENV} is set but there is no current kubeconfig context (KUBECONFIG \
             or ~/.kube/config): {}",
            describe(&out)
        ));
    }
    let path = guard.base.join("kubeconfig");
    std::fs::write(&path, &out.stdout).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

/// Spawns `cmd` as the leader of a new session (as `setsid` in envtest.sh does), so signals to
/// the test's terminal do not reach it.
fn spawn_in_own_session(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid(2) is async-signal-safe; it only makes the child a session leader.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
}

pub use probe::try_free_port;

/// [`try_free_port`], for a test: panics when there is none.
pub fn free_port() -> u16 {
    try_free_port().expect("a free loopback port")
}

/// The kube-apiserver flags controller-runtime's envtest uses (its `DefaultArgs` and the
/// serving, etcd and authentication flags it adds), for a server on `port` of loopback with the
/// certificates and keys in `pki`.
pub fn apiserver_flags(etcd: &str, port: u16, pki: &Path) -> Vec<(String, String)> {
    let file = |name: &str| pki.join(name).display().to_string();
    [
        ("etcd-servers", etcd.to_string()),
        ("advertise-address", "127.0.0.1".into()),
        ("bind-address", "127.0.0.1".into()),
        ("secure-port", port.to_string()),
        ("cert-dir", pki.display().to_string()),
        ("tls-cert-file", file("server.crt")),
        ("tls-private-key-file", file("server.key")),
        ("client-ca-file", file("ca.crt")),
        ("token-auth-file", file("tokens.csv")),
        ("service-account-key-file", file("sa.pub")),
        ("service-account-signing-key-file", file("sa.key")),
        (
            "service-account-issuer",
            format!("https://127.0.0.1:{port}/"),
        ),
        ("service-cluster-ip-range", "10.0.0.0/24".into()),
        ("allow-privileged", "true".into()),
        ("authorization-mode", "RBAC".into()),
        ("disable-admission-plugins", "ServiceAccount".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Makes the CA, the serving certificate, the admin client certificate (`system:masters`), the
/// admin token and the service-account key pair in `pki` with openssl; returns the token.
fn make_pki(pki: &Path) -> Result<String, String> {
    const PKI_SH: &str = r#"
set -e
cd "$1"; umask 077
q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }
q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=mailsec-test-ca"
q openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
keyUsage=digitalSignature
' > server.ext
q openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext
q openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=mailsec-test-admin"
printf 'extendedKeyUsage=clientAuth
keyUsage=digitalSignature
' > client.ext
q openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext
q openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
q openssl pkey -in sa.key -pubout -out sa.pub
token=$(openssl rand -hex 24)
echo "$token,mailsec-test-admin,mailsec-test-admin,"system:masters"" > tokens.csv
echo "$token"
"#;
    std::fs::create_dir_all(pki).map_err(|e| format!("create {}: {e}", pki.display()))?;
    let out = Command::new("sh")
        .args(["-c", PKI_SH, "mailsec-test-pki"])
        .arg(pki)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl (sh): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "making certificates with openssl failed: {}",
            describe(&out)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts `program` with `args` in its own session (as `envtest.sh` does with `setsid`), its
/// output to `log`, and writes its PID to `pid_file`.
fn spawn_server(
    program: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
) -> Result<(), String> {
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| format!("dup the log: {e}"))?,
        )
        .stderr(log_file);
    let mut child =
        spawn_in_own_session(&mut cmd).map_err(|e| format!("start {}: {e}", program.display()))?;
    std::fs::write(pid_file, format!("{}\n", child.id()))
        .map_err(|e| format!("write {}: {e}", pid_file.display()))?;
    // Reap it when it exits, so that `kill -0` in the clean-up never waits for a zombie.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Whether the process whose PID `pid_file` holds is running (not gone, not a zombie).
fn running(pid_file: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z ") && !stat.contains(") X "))
}

/// Polls `url` with curl (extra `args`) until it answers `ok`, the process of `pid_file` has
/// exited, or `timeout` passes.
fn wait_ok(url: &str, args: &[&str], pid_file: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && running(pid_file) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out {
            let body = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && (body == "ok" || body.contains("\"health\":\"true\"")) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Starts etcd and kube-apiserver from `assets` (`KUBEBUILDER_ASSETS`) in the guard's run dir,
/// with the layout `envtest.sh start` writes (`etcd.pid`, `kube-apiserver.pid`, `env`,
/// `kubeconfig`, `pki/`), and waits until `/readyz` answers `ok`.
fn start_assets(
    guard: &ServerGuard,
    assets: &Path,
) -> Result<(PathBuf, BTreeMap<String, String>), String> {
    let (apiserver, etcd) = (assets.join("kube-apiserver"), assets.join("etcd"));
    for bin in [&apiserver, &etcd] {
        if !bin.is_file() {
            return Err(format!(
                "{KUBEBUILDER_ASSETS_ENV}={}: no {} there (setup-envtest use -p path makes the folder)",
                assets.display(),
                bin.display()
            ));
        }
    }
    let lock = std::fs::File::create(guard.lock_file()).map_err(|e| format!("lock file: {e}"))?;
    // SAFETY: flock(2) on a descriptor this function owns; released when `lock` is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(format!("flock: {}", std::io::Error::last_os_error()));
    }
    let run = guard.run_dir();
    let pki = run.join("pki");
    let token = make_pki(&pki)?;
    let free_port = || try_free_port().map_err(|e| format!("no free loopback port: {e}"));
    let (etcd_port, peer_port, port) = (free_port()?, free_port()?, free_port()?);
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data = run.join("etcd-data");
    let etcd_args: Vec<String> = [
        "--name=default".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        "--unsafe-no-fsync=true".to_string(),
        "--log-level=warn".to_string(),
    ]
    .into();
    spawn_server(
        &etcd,
        &etcd_args,
        &run.join("etcd.log"),
        &run.join("etcd.pid"),
    )?;
    if !wait_ok(
        &format!("{etcd_url}/health"),
        &[],
        &run.join("etcd.pid"),
        Duration::from_secs(20),
    ) {
        return Err(format!(
            "etcd from {} did not become healthy (or exited); last lines of its log:\n{}",
            etcd.display(),
            log_tail(&run.join("etcd.log"))
        ));
    }

    // The upstream flag set; what this binary does not know (the envtest lite server) is left
    // out, and said so.
    let help = Command::new(&apiserver)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    // A flag is known when `--help` lists it; an admission plugin when the flag's own help
    // (which lists every plugin) names it.
    let known = |flag: &str, value: &str| {
        let option = format!("--{flag} ");
        help.lines().any(|line| {
            line.contains(&option) && (flag != "disable-admission-plugins" || line.contains(value))
        })
    };
    let mut args = Vec::new();
    let mut left_out = Vec::new();
    for (flag, value) in apiserver_flags(&etcd_url, port, &pki) {
        if known(&flag, &value) {
            args.push(format!("--{flag}={value}"));
        } else {
            left_out.push(format!("--{flag}={value}"));
        }
    }
    if !left_out.is_empty() {
        eprintln!(
            "mailsec tests: {} does not know {} (not an upstream kube-apiserver?): started without",
            apiserver.display(),
            left_out.join(" ")
        );
    }
    std::fs::write(run.join("apiserver-flags-left-out"), left_out.join("\n"))
        .map_err(|e| format!("write the run dir: {e}"))?;
    let log = run.join("kube-apiserver.log");
    spawn_server(&apiserver, &args, &log, &run.join("kube-apiserver.pid"))?;
    let url = format!("https://127.0.0.1:{port}");
    let ca = pki.join("ca.crt").display().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    if !wait_ok(
        &format!("{url}/readyz"),
        &["--cacert", &ca, "-H", &bearer],
        &run.join("kube-apiserver.pid"),
        Duration::from_secs(60),
    ) {
        return Err(format!(
            "kube-apiserver from {} exited or was not ready in 60 s; last lines of its log:\n{}",
            apiserver.display(),
            log_tail(&log)
        ));
    }

    let kubeconfig = run.join("kubeconfig");
    let pki_file = |name: &str| pki.join(name).display().to_string();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {}
    client-key: {}
- name: admin-token
  user:
    token: {token}
contexts:
- name: test
  context: {{cluster: test, user: admin, namespace: default}}
- name: test-token
  context: {{cluster: test, user: admin-token, namespace: default}}
current-context: test
",
            pki_file("admin.crt"),
            pki_file("admin.key")
        ),
    )
    .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
    let env = BTreeMap::from([
        ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
        ("ENVTEST_APISERVER_URL".to_string(), url),
        ("ENVTEST_ETCD_URL".to_string(), etcd_url),
        ("ENVTEST_TOKEN".to_string(), token),
        ("ENVTEST_RUN_DIR".to_string(), run.display().to_string()),
    ]);
    let env_text: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    std::fs::write(run.join("env"), env_text).map_err(|e| format!("write the env file: {e}"))?;
    drop(lock);
    Ok((kubeconfig, env))
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
pub mod probe;
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
