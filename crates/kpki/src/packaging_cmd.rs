//! `kpki completion` and `kpki man`: shell completions and manual pages generated from the
//! command-line definition itself, so they cannot drift from it.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::output::out;

/// The shells `kpki completion` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion: /usr/share/bash-completion/completions/kpki).
    Bash,
    /// zsh (a `_kpki` file on $fpath, e.g. /usr/share/zsh/vendor-completions/_kpki).
    Zsh,
    /// fish (/usr/share/fish/vendor_completions.d/kpki.fish).
    Fish,
}

/// Flags of `kpki completion`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell.
    shell: Shell,
}

/// Flags of `kpki man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write kpki.1 and one page per command (kpki-certs-renew.1, ...) into DIR instead of
    /// printing kpki.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub fn completion(args: CompletionArgs, mut cmd: clap::Command) -> Result<(), String> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kpki", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

/// Prints kpki(1), or writes every page into `args.dir` (each file replaced atomically).
pub fn man(args: ManArgs, cmd: clap::Command) -> Result<(), String> {
    let mut cmd = without_help_subcommands(cmd);
    cmd.build();
    let mut pages = Vec::new();
    collect_pages(&cmd, None, &mut pages)?;
    match args.dir {
        None => {
            let (_, kpki) = pages.first().ok_or("no manual page was generated")?;
            out!("{}", String::from_utf8_lossy(kpki));
        }
        Some(dir) => {
            for (name, page) in &pages {
                let path = dir.join(format!("{name}.1"));
                kpki_pki::store::replace(&path, page, kpki_pki::store::CERT_MODE)
                    .map_err(|e| e.to_string())?;
                tracing::info!(page = %path.display(), "wrote manual page");
            }
            out!("{}", written(&dir, pages.len()));
        }
    }
    Ok(())
}

/// `cmd` without the generated `help` subcommands (`kpki help certs`), which have no page:
/// every command's page documents `--help` instead.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .into_iter()
        .fold(cmd.disable_help_subcommand(true), |cmd, name| {
            cmd.mut_subcommand(name, without_help_subcommands)
        })
}

fn written(dir: &Path, count: usize) -> String {
    format!(
        "[man] Wrote {count} pages to {:?}\n",
        dir.display().to_string()
    )
}

/// The page of `cmd` (named `kpki`, `kpki-certs`, `kpki-certs-renew`, ...) and those of its
/// subcommands, parents first.
fn collect_pages(
    cmd: &clap::Command,
    parent: Option<&str>,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let name = match parent {
        None => cmd.get_name().to_string(),
        Some(p) => format!("{p}-{}", cmd.get_name()),
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.clone()))
        .title(name.to_uppercase())
        .section("1")
        .source(format!("kpki {}", env!("CARGO_PKG_VERSION")))
        .manual("kpki manual")
        .render(&mut page)
        .map_err(|e| format!("manual page {name}: {e}"))?;
    pages.push((name.clone(), page));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        collect_pages(sub, Some(&name), pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn pages() -> Vec<(String, Vec<u8>)> {
        let mut cmd = without_help_subcommands(crate::Cli::command());
        cmd.build();
        let mut pages = Vec::new();
        collect_pages(&cmd, None, &mut pages).unwrap();
        pages
    }

    #[test]
    fn one_page_per_command_named_like_git_pages() {
        let names: Vec<String> = pages().into_iter().map(|(n, _)| n).collect();
        for want in [
            "kpki",
            "kpki-init",
            "kpki-certs",
            "kpki-certs-check-expiration",
            "kpki-certs-renew",
            "kpki-kubeconfig-user",
            "kpki-node-add",
            "kpki-keys-import",
            "kpki-audit-verify",
            "kpki-serve",
            "kpki-completion",
            "kpki-man",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(!names.iter().any(|n| n.ends_with("-help")), "{names:?}");
    }

    #[test]
    fn pages_are_roff_with_the_commands_flags() {
        let pages = pages();
        let page = |name: &str| {
            let (_, p) = pages.iter().find(|(n, _)| n == name).unwrap();
            String::from_utf8(p.clone()).unwrap()
        };
        let top = page("kpki");
        assert!(!top.contains("kpki\\-help"), "{top}");
        assert!(top.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{top}");
        assert!(top.contains(".TH KPKI 1"), "{top}");
        assert!(
            top.contains("check\\-expiration") || top.contains("certs"),
            "{top}"
        );
        let check = page("kpki-certs-check-expiration");
        assert!(check.contains("warn\\-within"), "{check}");
    }
}
