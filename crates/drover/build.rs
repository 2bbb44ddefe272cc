//! Marks the process tests whose outside parts are missing here as ignored (see
//! `build/parts.rs`), and records the commit the binary is built from for `drover version`.
include!("../../build/parts.rs");

/// Sets `DROVER_COMMIT` to the checkout's commit (12 hex digits, `+` when the work tree has
/// changes), or `unknown` outside a git checkout (a source archive).
fn record_commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}+") } else { hash }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=DROVER_COMMIT={commit}");
    // A new commit or checkout changes HEAD or the branch it points to.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for path in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{path}");
        }
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}

fn main() {
    record_commit();
    probe_parts(&[
        "docker",
        "python3",
        "shell_tools",
        "sqlite3_json",
        "contract",
        "tmpfs",
        "postgres",
        "netns",
        "systemd_analyze",
    ]);
}
