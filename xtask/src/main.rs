//! `cargo xtask test [ARGS…]`: the README's test command. It sets up what the tests need on
//! this machine, then runs every test, so that a fresh machine either runs them all or
//! stops saying what is missing — never a green run that tested less than it says.
//!
//! 1. Debian packages for the tests that drive real outside programs (redis-server, nginx,
//!    chromium + chromium-driver, postgresql, python3-venv). As root they are installed with apt-get;
//!    otherwise a missing one stops here with the `apt-get install` line to run.
//!    (Also zsh and fish for the completion tests, and what `deploy/check.sh` needs: systemd,
//!    strace, curl, docker-compose.)
//! 2. The Python virtualenv `.venv` from the requirements files, created once and
//!    re-installed when they change.
//! 3. Node.js and the packages of the JavaScript suites (`tests/node`: oauth4webapi,
//!    openid-client, jose; `examples/express`), `npm ci` from their lockfiles, again when a
//!    lockfile changes. A missing or too old Node stops here with the line to fix it, in CI
//!    (`CI=true`) and out of it alike: the suite is never skipped.
//! 4. `cargo test --workspace --all-features ARGS…` (the node suite runs in it, against a
//!    real keygate per signing algorithm: `tests/it/node.rs`), then (without ARGS)
//!    `deploy/check.sh` on the binary the tests built.
//!
//! Written with std only: it runs before anything else is built, and a task runner that
//! needs its own dependency tree would slow every run of the test command.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

/// Programs the tests run, and the Debian package of each.
const PACKAGES: &[(&[&str], &str)] = &[
    (
        &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        "redis-server",
    ),
    (&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx"),
    (&["/usr/bin/chromium"], "chromium"),
    (&["/usr/bin/chromedriver"], "chromium-driver"),
    (&["/usr/bin/zsh", "/bin/zsh"], "zsh"),
    (&["/usr/bin/fish"], "fish"),
    (&["/usr/bin/systemd-analyze"], "systemd"),
    (&["/usr/bin/strace"], "strace"),
    (&["/usr/bin/curl"], "curl"),
    // Prometheus and promtool: the rules' checks and the dashboard's queries.
    (&["/usr/bin/prometheus"], "prometheus"),
    // The directory's tests start a PostgreSQL server of their own (tests/it/postgres_server.rs).
    (
        &[
            "/usr/lib/postgresql/15/bin/postgres",
            "/usr/lib/postgresql/16/bin/postgres",
            "/usr/lib/postgresql/17/bin/postgres",
            "/usr/lib/postgresql/18/bin/postgres",
        ],
        "postgresql",
    ),
    // `runuser`: as root, the tests run PostgreSQL as `nobody` (it refuses root).
    (&["/usr/sbin/runuser", "/sbin/runuser"], "util-linux"),
];

/// Installed without their recommends: docker-compose's bring a container engine this
/// kind of machine cannot run (`deploy/check.sh` only validates the compose file).
const BARE_PACKAGES: &[(&[&str], &str)] = &[(&["/usr/bin/docker-compose"], "docker-compose")];

/// The Python tools of the tests and of `deploy/check.sh`, installed into `.venv`.
const REQUIREMENTS: &[&str] = &[
    "crates/keygate-server/tests/interop/requirements.txt",
    "deploy/requirements.txt",
];

/// The folders whose `package-lock.json` `npm ci` installs: the node suite and the Express
/// example, both run by `tests/it/node.rs`.
const NODE_PACKAGES: &[&str] = &["tests/node", "examples/express"];

/// The oldest Node.js the pinned packages run on (jose 6 and openid-client 6).
const NODE_MIN: (u32, u32) = (20, 19);

/// Why the test command stopped before the tests could run.
#[derive(Debug)]
enum Stop {
    /// Something the tests need is missing; the text says how to get it.
    Missing(String),
    /// A file or a program could not be used (`what` names it).
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A set-up command ran and failed.
    Failed { program: String, status: ExitStatus },
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Missing(how) => f.write_str(how),
            Stop::Io { what, .. } => f.write_str(what),
            Stop::Failed { program, status } => write!(f, "{program} failed: {status}"),
        }
    }
}

impl std::error::Error for Stop {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Stop::Io { source, .. } => Some(source),
            Stop::Missing(_) | Stop::Failed { .. } => None,
        }
    }
}

/// `what` could not be used: the system's error is the source.
fn io(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> Stop {
    let what = what.to_string();
    move |source| Stop::Io { what, source }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => match test(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                let mut line = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    line = format!("{line}: {c}");
                    cause = c.source();
                }
                eprintln!("xtask test: {line}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("usage: cargo xtask test [ARGS passed to cargo test]");
            ExitCode::from(2)
        }
    }
}

fn test(args: &[String]) -> Result<ExitCode, Stop> {
    let root = workspace_root();
    std::env::set_current_dir(&root).map_err(io(root.display()))?;
    system_packages()?;
    virtualenv(&root)?;
    node_packages(&root)?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--workspace", "--all-features"])
        .args(args)
        .status()
        .map_err(io("cargo test"))?;
    if !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    if args.is_empty() {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let status = Command::new("bash")
            .arg("deploy/check.sh")
            .arg(Path::new(&target).join("debug/keygate"))
            .status()
            .map_err(io("deploy/check.sh"))?;
        if !status.success() {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Installs the missing packages as root; otherwise names them and stops.
fn system_packages() -> Result<(), Stop> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(paths, _)| !paths.iter().any(|p| Path::new(p).exists()))
        .map(|(_, package)| *package)
        .collect();
    if !venv_works() {
        missing.push("python3-venv");
    }
    let bare: Vec<&str> = BARE_PACKAGES
        .iter()
        .filter(|(paths, _)| !paths.iter().any(|p| Path::new(p).exists()))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() && bare.is_empty() {
        return Ok(());
    }
    let line = [missing.as_slice(), bare.as_slice()].concat().join(" ");
    let line = format!("apt-get install -y {line}");
    if !is_root() {
        return Err(Stop::Missing(format!(
            "the tests need Debian packages that are not installed: run `sudo apt-get update && sudo {line}`, then this again"
        )));
    }
    eprintln!("xtask test: {line}");
    run(Command::new("apt-get").arg("update"))?;
    if !missing.is_empty() {
        run(Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !bare.is_empty() {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&bare)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// Whether `python3 -m venv` can make a virtualenv (Debian needs python3-venv for it).
fn venv_works() -> bool {
    let probe = std::env::temp_dir().join(format!("keygate-venv-probe-{}", std::process::id()));
    let ok = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&probe)
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("python3")
            .args(["-c", "import ensurepip"])
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = std::fs::remove_dir_all(&probe);
    ok
}

/// `.venv` with the test requirements; re-installed when a requirements file changes.
fn virtualenv(root: &Path) -> Result<(), Stop> {
    let venv = root.join(".venv");
    let mut requirements = String::new();
    for file in REQUIREMENTS {
        requirements += &std::fs::read_to_string(root.join(file)).map_err(io(file))?;
    }
    let stamp = venv.join(".installed-requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) {
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        eprintln!("xtask test: creating .venv");
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    eprintln!("xtask test: installing the Python test tools into .venv");
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"]);
    for file in REQUIREMENTS {
        pip.arg("-r").arg(root.join(file));
    }
    run(&mut pip)?;
    std::fs::write(&stamp, requirements).map_err(io(stamp.display()))
}

/// Node.js at least [`NODE_MIN`], and `npm ci` in each of [`NODE_PACKAGES`] whose
/// lockfile changed since it was last installed. Never skipped: without Node the run stops
/// here, with the line that installs it.
fn node_packages(root: &Path) -> Result<(), Stop> {
    let how = "install Node.js 20.19 or later with npm (Debian 12's nodejs is too old: `curl -fsSL https://deb.nodesource.com/setup_22.x | sudo bash - && sudo apt-get install -y nodejs`), then run this again";
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .ok_or_else(|| {
            Stop::Missing(format!(
                "the tests need Node.js, which is not on PATH: {how}"
            ))
        })?;
    if !is_recent_enough(&version) {
        return Err(Stop::Missing(format!(
            "the tests need Node.js 20.19 or later, found {version}: {how}"
        )));
    }
    for folder in NODE_PACKAGES {
        let dir = root.join(folder);
        let lock = std::fs::read_to_string(dir.join("package-lock.json"))
            .map_err(io(format!("{folder}/package-lock.json")))?;
        let stamp = dir.join("node_modules/.installed-lockfile");
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == lock) {
            continue;
        }
        eprintln!("xtask test: npm ci in {folder}");
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir))?;
        std::fs::write(&stamp, lock).map_err(io(stamp.display()))?;
    }
    Ok(())
}

/// Whether `node --version` (`v20.19.0`) names at least [`NODE_MIN`].
fn is_recent_enough(version: &str) -> bool {
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= NODE_MIN
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

fn run(cmd: &mut Command) -> Result<(), Stop> {
    let program = format!("{:?}", cmd.get_program());
    let status = cmd.status().map_err(io(&program))?;
    if status.success() {
        Ok(())
    } else {
        Err(Stop::Failed { program, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions_are_compared_by_major_then_minor() {
        for ok in ["v20.19.0", "v20.20.2", "v22.1.0", "v24.0.0\n"] {
            assert!(is_recent_enough(ok), "{ok}");
        }
        for old in ["v18.20.4", "v20.18.9", "v12", "", "garbage"] {
            assert!(!is_recent_enough(old), "{old}");
        }
    }
}
