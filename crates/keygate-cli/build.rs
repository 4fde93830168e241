//! Puts the git revision into `keygate --version`, so a running binary says which commit
//! it was built from.
//!
//! `KEYGATE_GIT_REV` wins when set (a container build, whose context has no `.git`);
//! else `git rev-parse --short HEAD`; else "unknown" (a source tarball, no git installed).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KEYGATE_GIT_REV");
    let from_env = std::env::var("KEYGATE_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty());
    let rev = from_env
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KEYGATE_GIT_REV={rev}");

    // A commit moves the branch's ref, not HEAD (which names the branch), so watch both;
    // and packed-refs, where `git gc` moves refs. Paths come from git itself: in a
    // worktree `.git` is a file and HEAD lives elsewhere. Only existing files: cargo reruns
    // a script on every build while a watched path is missing.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", absolute(&head).display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(path) = git(&["rev-parse", "--git-path", &branch])
            && absolute(&path).exists()
        {
            println!("cargo:rerun-if-changed={}", absolute(&path).display());
        }
        if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"])
            && absolute(&packed).exists()
        {
            println!("cargo:rerun-if-changed={}", absolute(&packed).display());
        }
    }
}

/// git prints paths relative to the current directory (the crate's folder).
fn absolute(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map_or(p.clone(), |d| d.join(p))
    }
}
