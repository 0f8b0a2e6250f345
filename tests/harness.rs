//! The test harness' own conventions (tests/common): `KUBEBUILDER_ASSETS` (upstream binaries the
//! harness starts itself) and `USE_EXISTING_CLUSTER` (the current kubeconfig), as
//! controller-runtime's envtest reads them.
//!
//! Upstream binaries can not be downloaded on these machines, so the assets path is exercised
//! with a folder whose `kube-apiserver` is the envtest "lite" server and whose `etcd` is Debian's
//! (the binaries `../shared/envtest/envtest.sh build` unpacks into its cache); the harness leaves
//! out the upstream flags the lite server does not know, and this test checks which.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Backend, KUBEBUILDER_ASSETS_ENV, describe, start_cluster_with};

/// The envtest cache's binaries (`ENVTEST_CACHE`, default `~/.cache/envtest`), after
/// `envtest.sh build`.
fn envtest_bin() -> Option<PathBuf> {
    let script = std::env::var_os("ENVTEST_SH")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_dir().join("../shared/envtest/envtest.sh"));
    if script.is_file() {
        // Unpacks the binaries into the cache if they are not there yet (no-op otherwise).
        let _ = Command::new(&script).arg("build").output();
    }
    let cache = std::env::var_os("ENVTEST_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("envtest")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/envtest")))?;
    let bin = cache.join("bin");
    (bin.join("kube-apiserver-lite").is_file() && bin.join("etcd").is_file()).then_some(bin)
}

/// A `KUBEBUILDER_ASSETS`-style folder: kube-apiserver, etcd and kubectl (symlinks).
fn lite_assets(dir: &std::path::Path, bin: &std::path::Path) {
    use std::os::unix::fs::symlink;
    symlink(bin.join("kube-apiserver-lite"), dir.join("kube-apiserver")).expect("link");
    symlink(bin.join("etcd"), dir.join("etcd")).expect("link");
    let kubectl = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        .expect("find kubectl");
    let kubectl = String::from_utf8_lossy(&kubectl.stdout).trim().to_string();
    assert!(!kubectl.is_empty(), "kubectl is on PATH");
    symlink(kubectl, dir.join("kubectl")).expect("link");
}

#[test]
fn kubebuilder_assets_start_etcd_and_kube_apiserver_with_envtest_flags() {
    // The lite server from the envtest cache, else the caller's KUBEBUILDER_ASSETS.
    let scratch = tempfile::tempdir().expect("assets dir");
    let assets = match (envtest_bin(), std::env::var_os(KUBEBUILDER_ASSETS_ENV)) {
        (Some(bin), _) => {
            lite_assets(scratch.path(), &bin);
            scratch.path().to_path_buf()
        }
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => panic!(
            "no envtest binaries (run ../shared/envtest/envtest.sh build) and no {KUBEBUILDER_ASSETS_ENV}"
        ),
    };
    let cluster = start_cluster_with(Backend::Assets(assets.clone()))
        .unwrap_or_else(|e| panic!("{KUBEBUILDER_ASSETS_ENV} start: {e}"));
    assert!(!cluster.is_external());
    // The lite server says so in its version (`v1.36.4+lite`).
    let out = cluster.kubectl(&["get", "--raw", "/version"]);
    assert!(out.status.success(), "{}", describe(&out));
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    let lite = version.contains("+lite");
    let env = cluster.env().clone();
    let run = PathBuf::from(&env["ENVTEST_RUN_DIR"]);

    // The CRDs are installed and the admin client certificate works (kubectl, the kubeconfig's
    // current context), and so does the admin token.
    let out = cluster.kubectl(&["get", "tenants,subscriptions"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cluster.kubectl(&["--context=test-token", "get", "crd", "tenants.mailsec.io"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cluster.kubectl(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    if out.status.success() {
        let groups = String::from_utf8_lossy(&out.stdout);
        assert!(groups.contains("system:masters"), "{groups}");
    }

    // The lite server lacks these upstream flags (said on stderr, recorded in the run dir); an
    // upstream kube-apiserver gets every one of them.
    let left_out = std::fs::read_to_string(run.join("apiserver-flags-left-out")).expect("notes");
    if !lite {
        assert_eq!(
            left_out, "",
            "an upstream kube-apiserver ({version}) gets every flag"
        );
    }
    for flag in lite.then_some(()).into_iter().flat_map(|()| {
        [
            "--service-account-issuer=",
            "--service-account-key-file=",
            "--service-account-signing-key-file=",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
        ]
    }) {
        assert!(left_out.contains(flag), "{flag} not left out: {left_out}");
    }
    let pid: i32 = std::fs::read_to_string(run.join("kube-apiserver.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    for flag in [
        "--secure-port=",
        "--bind-address=127.0.0.1",
        "--client-ca-file=",
        "--token-auth-file=",
        "--tls-cert-file=",
        "--advertise-address=127.0.0.1",
    ] {
        assert!(cmdline.contains(flag), "{flag} missing: {cmdline}");
    }
    let etcd_pid: i32 = std::fs::read_to_string(run.join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");

    // Restarting works as with envtest.sh (same pid-file layout).
    cluster
        .restart_apiserver(std::time::Duration::from_millis(100))
        .expect("restart");
    let out = cluster.kubectl(&["get", "tenants"]);
    assert!(out.status.success(), "{}", describe(&out));
    let pid: i32 = std::fs::read_to_string(run.join("kube-apiserver.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");

    // Dropping the cluster stops both processes.
    drop(cluster);
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists() && {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !stat.contains(") Z ")
        }
    };
    assert!(!alive(pid), "kube-apiserver {pid} still running");
    assert!(!alive(etcd_pid), "etcd {etcd_pid} still running");
    assert!(!run.exists(), "the run dir is deleted");
}

#[test]
fn use_existing_cluster_reads_the_controller_runtime_convention() {
    // Read from the environment of this process: only what the variables say is checked here;
    // the other test binaries run against such a cluster when they are set.
    let backend = Backend::from_env();
    match (
        std::env::var("MAILSEC_TEST_KUBECONFIG")
            .ok()
            .filter(|v| !v.is_empty()),
        std::env::var("USE_EXISTING_CLUSTER").ok(),
    ) {
        (Some(path), _) => assert_eq!(backend, Backend::Existing(Some(path.into()))),
        (None, Some(v)) if ["1", "t", "T", "true", "TRUE", "True"].contains(&v.as_str()) => {
            assert_eq!(backend, Backend::Existing(None))
        }
        _ => assert!(!matches!(backend, Backend::Existing(_)), "{backend:?}"),
    }
}
