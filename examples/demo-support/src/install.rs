//! Setting up what a throwaway database needs on a fresh machine: PostgreSQL's server
//! binaries, installed with apt when this process may (root on Debian), or the exact
//! command to run when it may not.

use std::path::Path;
use std::process::Command;

use crate::DemoError;

/// What to do about missing PostgreSQL server binaries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Root on a machine with apt: install the `postgresql` package.
    Install,
    /// Someone else must install it: the message says how.
    Ask(String),
}

/// The command a user without root runs on Debian.
pub(crate) const SUDO_INSTALL: &str = "sudo apt-get install -y postgresql";

pub(crate) fn plan(is_root: bool, has_apt: bool) -> Plan {
    match (is_root, has_apt) {
        (true, true) => Plan::Install,
        (false, true) => Plan::Ask(format!(
            "no PostgreSQL server binaries found, and installing them needs root: run\n\n    \
             {SUDO_INSTALL}\n\nthen this command again (or set DATABASE_URL to an existing \
             server's URL)"
        )),
        (_, false) => Plan::Ask(
            "no PostgreSQL server binaries found (initdb, pg_ctl): install PostgreSQL's server \
             package with this system's package manager, or set PG_BIN to their directory, or \
             set DATABASE_URL to an existing server's URL"
                .to_owned(),
        ),
    }
}

/// Installs the `postgresql` package with apt when this process is root on a machine with
/// apt, saying what it does; otherwise an error with what to run.
pub(crate) fn install_postgresql() -> Result<(), DemoError> {
    match plan(is_root(), on_path("apt-get")) {
        Plan::Ask(message) => Err(DemoError::msg(message)),
        Plan::Install => {
            println!(
                "PostgreSQL's server binaries are not installed; installing them with apt \
                 (this runs once):"
            );
            apt(&["update", "-qq"])?;
            apt(&[
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "postgresql",
            ])?;
            println!("PostgreSQL installed.");
            Ok(())
        }
    }
}

fn apt(args: &[&str]) -> Result<(), DemoError> {
    let shown = format!("apt-get {}", args.join(" "));
    println!("  $ DEBIAN_FRONTEND=noninteractive {shown}");
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| DemoError::msg(format!("cannot run `{shown}`: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(DemoError::msg(format!(
            "`{shown}` failed ({status}); install PostgreSQL yourself (`apt-get install \
             postgresql`) or set DATABASE_URL to an existing server's URL"
        )))
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user of this process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_with_apt_installs_and_everyone_else_is_told_what_to_run() {
        assert_eq!(plan(true, true), Plan::Install);
        let Plan::Ask(message) = plan(false, true) else {
            panic!("a non-root user cannot install");
        };
        assert!(message.contains(SUDO_INSTALL), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
        let Plan::Ask(message) = plan(true, false) else {
            panic!("no apt, no install");
        };
        assert!(message.contains("DATABASE_URL"), "{message}");
    }
}
