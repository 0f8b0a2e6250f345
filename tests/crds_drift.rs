//! `crds/` is generated from the Rust types; these tests fail when the two drift apart.

use std::path::PathBuf;
use std::process::Command;

const CRD_FILE: &str = "crds/mailsec.io_crds.yaml";
const REGENERATE: &str = "cargo run -- crd > crds/mailsec.io_crds.yaml";

fn committed() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nGenerate it with: {REGENERATE}",
            path.display()
        )
    })
}

/// The first line where `a` and `b` differ, for a readable failure message.
fn first_difference(a: &str, b: &str) -> String {
    let (mut a_lines, mut b_lines) = (a.lines(), b.lines());
    let mut n = 1;
    loop {
        match (a_lines.next(), b_lines.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            (None, None) => return "only in line endings or trailing whitespace".to_string(),
            (x, y) => {
                return format!(
                    "line {n}:\n  {CRD_FILE}: {}\n  generated:  {}",
                    x.unwrap_or("<end of file>"),
                    y.unwrap_or("<end of file>")
                );
            }
        }
    }
}

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = mailsec_operator::api::crds_yaml().expect("serialize the CRDs to YAML");
    let committed = committed();
    assert!(
        committed == generated,
        "{CRD_FILE} is out of date with the types in src/api (first difference at {}).\n\
         Regenerate it with:\n    {REGENERATE}",
        first_difference(&committed, &generated)
    );
}

#[test]
fn crd_subcommand_prints_the_committed_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailsec-operator"))
        .arg("crd")
        .output()
        .expect("run mailsec-operator crd");
    assert!(
        out.status.success(),
        "mailsec-operator crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("mailsec-operator crd prints UTF-8");
    let committed = committed();
    assert!(
        printed == committed,
        "`mailsec-operator crd` differs from {CRD_FILE} (first difference at {}).\n\
         Regenerate it with:\n    {REGENERATE}",
        first_difference(&committed, &printed)
    );
}
