//! Man page and shell completions rendered from a binary's real clap
//! definition, so the package never ships hand-written copies that drift
//! from the flags the binary actually accepts.
//!
//! Each binary calls [`render_if_requested`] first thing: with
//! `GROUPD_RENDER_ASSETS=<dir>` in the environment it writes
//! `<dir>/<name>.1`, `<dir>/<name>.bash`, `<dir>/_<name>` (zsh) and
//! `<dir>/<name>.fish`, then exits. `make assets` uses it before cargo-deb
//! packages the files (an environment variable rather than a subcommand keeps
//! the operator-facing CLI free of build plumbing; clap's own dynamic
//! completion uses the same mechanism).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// The environment variable that asks a binary to render its assets.
pub const RENDER_ENV: &str = "GROUPD_RENDER_ASSETS";

/// `Some(exit code)` when the environment asked for the assets (the caller
/// returns it from `main`), `None` for a normal run.
pub fn render_if_requested(cmd: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    let dir = PathBuf::from(std::env::var_os(RENDER_ENV)?);
    let mut cmd = cmd();
    let name = cmd.get_name().to_string();
    match render(&mut cmd, &dir) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!(
                "{name}: cannot write the man page and completions to {}: {e} \
                 (create the directory or point {RENDER_ENV} at a writable one)",
                dir.display()
            );
            Some(ExitCode::FAILURE)
        }
    }
}

/// Write the man page and the bash, zsh and fish completions of `cmd`.
pub fn render(cmd: &mut clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, cmd, name.clone(), &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_man_page_and_three_completions_named_after_the_command() {
        let dir = std::env::temp_dir().join(format!("groupd-assets-{}", std::process::id()));
        let mut cmd = clap::Command::new("demo")
            .about("Does a demo")
            .subcommand(clap::Command::new("run"));
        render(&mut cmd, &dir).expect("render");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let page = read("demo.1");
        assert!(
            page.contains(".TH demo") && page.contains("Does a demo"),
            "{page}"
        );
        assert!(read("demo.bash").contains("complete -F"));
        assert!(read("_demo").starts_with("#compdef demo"));
        assert!(read("demo.fish").contains("complete -c demo"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
