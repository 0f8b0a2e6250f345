//! The container image's build stage, replayed without a container engine (these machines have
//! none): the repository is copied the way `docker build` sends it, honouring `.dockerignore`,
//! then the build stage of the `Dockerfile` is played on that copy instruction by instruction —
//! each `COPY` from the copied context (a source `.dockerignore` left out fails, as it does in
//! Docker), each `RUN` in a shell. To stay fast, `cargo build --release` runs as
//! `cargo check --offline` in this repository's target directory (the dependencies are checked
//! once; the copy, in `target/image-replay/`, is checked under a hash of its own), and `strip`
//! has no binary to strip; `apk add` is the Alpine image's business and is skipped.
//! What this catches: a file the build needs but the context leaves out (Cargo.toml declaring
//! `benches/` that `.dockerignore` dropped made every image build fail), a source that does not
//! compile there, a `Cargo.lock` out of date (`--locked`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{describe, repo_dir};

/// One line of `.dockerignore`: a pattern relative to the context root, maybe negated (`!`).
#[derive(Debug)]
struct Pattern {
    negated: bool,
    parts: Vec<String>,
}

/// `.dockerignore` as Docker reads it: blank lines and `#` comments skipped, each pattern cleaned
/// (leading `/` and `./`, trailing `/` dropped), matched with Go's `filepath.Match` per path
/// element plus `**` for any number of elements.
fn read_dockerignore(text: &str) -> Vec<Pattern> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (negated, p) = match l.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, l),
            };
            let parts = p
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            Pattern { negated, parts }
        })
        .collect()
}

/// Go's `filepath.Match` for one path element: `*`, `?`, `[...]` and `\` escapes.
fn element_matches(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| element_matches(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && element_matches(rest, &name[1..]),
        Some(('[', rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let Some(end) = rest.iter().position(|&x| x == ']') else {
                return false;
            };
            let (class, after) = (&rest[..end], &rest[end + 1..]);
            let (negate, class) = match class.split_first() {
                Some(('^', cl)) => (true, cl),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && element_matches(after, name_rest)
        }
        Some(('\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && element_matches(&rest[1..], &name[1..])
        }
        Some((c, rest)) => name.first() == Some(c) && element_matches(rest, &name[1..]),
    }
}

fn parts_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| parts_match(rest, &path[i..])),
        Some((p, rest)) => {
            let p: Vec<char> = p.chars().collect();
            path.split_first().is_some_and(|(name, path_rest)| {
                element_matches(&p, &name.chars().collect::<Vec<_>>())
                    && parts_match(rest, path_rest)
            })
        }
    }
}

/// Whether Docker leaves `path` (relative, `/`-separated) out of the context: the last pattern
/// that matches it or one of its parent folders decides.
fn ignored(patterns: &[Pattern], path: &str) -> bool {
    let elements: Vec<&str> = path.split('/').collect();
    let mut out = false;
    for p in patterns {
        if (1..=elements.len()).any(|n| parts_match(&p.parts, &elements[..n])) {
            out = !p.negated;
        }
    }
    out
}

/// Copies `from` into `to`, leaving out what `.dockerignore` leaves out of the context.
fn copy_context(patterns: &[Pattern], from: &Path, to: &Path, rel: &str) {
    let negations = patterns.iter().any(|p| p.negated);
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
        .map(|e| e.expect("directory entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().expect("file type");
        let out = ignored(patterns, &path);
        if kind.is_dir() {
            // A folder left out can still hold something a `!` pattern lets back in.
            if out && !negations {
                continue;
            }
            copy_context(patterns, &entry.path(), &to.join(&name), &path);
        } else if !out && kind.is_file() {
            std::fs::create_dir_all(to).expect("mkdir");
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

/// The Dockerfile's instructions (continuation lines joined, comments dropped).
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((op.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// A `RUN` command as it runs here: the cargo builds as offline checks in a kept target
/// directory, `strip` of a binary a check does not make skipped.
fn replayable(command: &str) -> String {
    command
        .split("&&")
        .map(str::trim)
        .map(|c| {
            if let Some(rest) = c.strip_prefix("cargo build") {
                let rest = rest.replace("--release", "");
                format!("cargo check --offline {}", rest.trim())
            } else if c.starts_with("strip ") {
                "true".to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

#[test]
fn dockerignore_is_read_like_docker_reads_it() {
    let patterns = read_dockerignore("# c\n*\n!Cargo.toml\n!src/\n/target/\n**/*.bak\n!keep.bak\n");
    assert!(ignored(&patterns, "README.md"));
    assert!(
        ignored(&patterns, "tests/chart.rs"),
        "parent folder matches *"
    );
    assert!(!ignored(&patterns, "Cargo.toml"));
    assert!(!ignored(&patterns, "src/metrics.rs"));
    assert!(ignored(&patterns, "src/old.bak"), "** matches any depth");
    assert!(!ignored(&patterns, "keep.bak"));
    assert!(ignored(&patterns, "target/debug/x"));
    let md = read_dockerignore("*.md\nsrc/[a-c]*.rs\n");
    assert!(ignored(&md, "README.md"));
    assert!(
        !ignored(&md, "docs/x.md"),
        "a pattern without ** is anchored at the root"
    );
    assert!(ignored(&md, "src/api.rs") && !ignored(&md, "src/metrics.rs"));
}

#[test]
fn the_build_stage_builds_from_the_context_dockerignore_lets_through() {
    let repo = repo_dir();
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).expect("Dockerfile");
    let patterns = read_dockerignore(
        &std::fs::read_to_string(repo.join(".dockerignore")).expect(".dockerignore"),
    );
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    // A fixed place (emptied first), so the copy of the crate keeps one hash in the target
    // directory from run to run instead of adding a new one each time.
    let replay = target_dir.join("image-replay");
    if replay.exists() {
        std::fs::remove_dir_all(&replay).expect("empty target/image-replay");
    }
    let context = replay.join("context");
    copy_context(&patterns, &repo, &context, "");
    for left_out in ["target", ".git", "tests", "README.md"] {
        assert!(
            !context.join(left_out).exists(),
            "{left_out} is in the build context"
        );
    }

    let all = instructions(&dockerfile);
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and the runtime stage");
    let build = &all[stages[0] + 1..stages[1]];
    let runtime = &all[stages[1] + 1..];

    // WORKDIR /src of the build stage.
    let workdir = replay.join("src");
    std::fs::create_dir_all(&workdir).expect("mkdir");
    let mut ran_cargo = 0;
    for (op, args) in build {
        match op.as_str() {
            "COPY" => {
                assert!(!args.starts_with("--"), "COPY {args}: flags not replayed");
                let words: Vec<&str> = args.split_whitespace().collect();
                let (dest, sources) = words.split_last().expect("COPY SRC... DEST");
                for source in sources {
                    let from = context.join(source);
                    assert!(
                        from.exists(),
                        "COPY {args}: {source} is not in the build context (.dockerignore leaves it out)"
                    );
                    let to = if dest.ends_with('/') || sources.len() > 1 {
                        workdir.join(dest).join(source)
                    } else {
                        workdir.join(dest)
                    };
                    copy_tree(&from, &to);
                }
            }
            "RUN" if args.starts_with("apk ") => {}
            "RUN" => {
                let command = replayable(args);
                ran_cargo += command.matches("cargo check").count();
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(&command)
                    .current_dir(&workdir)
                    .env("CARGO_TARGET_DIR", &target_dir)
                    .env_remove("RUSTFLAGS")
                    .output()
                    .expect("run sh");
                assert!(
                    out.status.success(),
                    "RUN {args}\n(replayed as: {command})\n{}",
                    describe(&out)
                );
            }
            "WORKDIR" => assert_eq!(args, "/src", "the replay assumes WORKDIR /src"),
            "ENV" | "ARG" => panic!("{op} {args}: not replayed, extend this test"),
            _ => {}
        }
    }
    assert_eq!(ran_cargo, 2, "the dependency layer and the build");

    // The runtime stage copies the binary the build makes, and runs it as 65532, the user the
    // chart's security context expects.
    let copy = runtime
        .iter()
        .find(|(op, args)| op == "COPY" && args.starts_with("--from=build"))
        .map(|(_, args)| args.as_str())
        .expect("COPY --from=build");
    assert!(
        copy.contains("/src/target/release/mailsec-operator "),
        "{copy}"
    );
    assert!(
        runtime
            .iter()
            .any(|(op, args)| op == "USER" && args == "65532:65532"),
        "USER 65532:65532"
    );
    let values = std::fs::read_to_string(repo.join("charts/mailsec-operator/values.yaml"))
        .expect("values.yaml");
    assert!(
        values.contains("runAsUser: 65532") && values.contains("readOnlyRootFilesystem: true"),
        "the chart runs the image as 65532 with a read-only root filesystem"
    );
}
