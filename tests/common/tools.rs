//! Helpers for the shipping tests: the Python with real Helm and Lua, rendering the chart,
//! and operator processes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use super::{describe, repo_dir};

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    repo_dir().join("charts/mailsec-operator")
}

/// The Python with `helm_python` and `lupa` (scripts/setup.sh installs them and exports
/// `MAILSEC_PYTHON`; without it, the virtualenv setup.sh uses by default).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILSEC_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let default = home.join(".cache/mailsec-operator/pyenv/bin/python");
    assert!(
        default.is_file(),
        "no Python with helm-python-sdk and lupa: run `bash scripts/setup.sh` (or scripts/test.sh), \
         or set MAILSEC_PYTHON"
    );
    default
}

/// Runs `python SCRIPT ARGS` (a script under scripts/) with `stdin` as input.
pub fn run_python(script: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(python())
        .arg(repo_dir().join("scripts").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python {script}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("write to python");
    child.wait_with_output().expect("wait for python")
}

/// Renders the chart with the real Helm engine: template path → manifest text.
pub fn render(
    values: &Value,
    release: &str,
    namespace: &str,
) -> Result<BTreeMap<String, String>, String> {
    let chart = chart_dir();
    let values = values.to_string();
    let out = run_python(
        "helm.py",
        &[
            "render",
            chart.to_str().expect("utf-8 path"),
            "--name",
            release,
            "--namespace",
            namespace,
            "--values",
            &values,
        ],
        "",
    );
    if !out.status.success() {
        return Err(describe(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("render output: {e}"))
}

/// Every object of the rendered templates (NOTES.txt and empty documents left out).
pub fn objects(rendered: &BTreeMap<String, String>) -> Vec<Value> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (path, text) in rendered {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path}: rendered YAML does not parse: {e}"));
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

/// The object of `kind` (and name, when given).
pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Sends `signal` to a child process.
pub fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}
