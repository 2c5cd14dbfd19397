//! `qgate completions SHELL` and `qgate man [COMMAND]`.

use anyhow::{Context, Result};

use crate::cli::Cli;

/// qgate's command line without its hidden `__worker` (clap_complete would offer it).
pub(crate) fn public_command() -> clap::Command {
    let cmd = crate::defaults::documented(<Cli as clap::CommandFactory>::command());
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let about = cmd.get_about().cloned().unwrap_or_default();
    clap::Command::new("qgate")
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .subcommand_required(true)
        .subcommands(subs)
}

/// Writes generated text to stdout; a reader that went away ends it quietly.
pub(crate) fn print_bytes(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

/// `qgate man [COMMAND]`: the roff page of qgate or of one of its commands.
pub(crate) fn man(command: Option<&str>) -> Result<()> {
    let mut cmd = public_command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => cmd
            .get_subcommands()
            .find(|c| c.get_name() == name && !c.is_hide_set())
            .cloned()
            .map(|c| {
                c.display_name(format!("qgate-{name}"))
                    .version(env!("CARGO_PKG_VERSION"))
            })
            .with_context(|| {
                let names: Vec<&str> = cmd
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| c.get_name())
                    .collect();
                format!("man {name}: no such command; one of {}", names.join(", "))
            })?,
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .context("cannot render the man page")?;
    print_bytes(&text)
}
