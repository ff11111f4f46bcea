//! Man pages (clap_mangen) and shell completions (clap_complete) from a clap
//! definition; for the cli-docs example and tests/supervisor_cli.rs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// The shells whose completions are installed.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// `dir/man/*.1` and `dir/completions/*` (each under clap_complete's file
/// name for its shell: NAME.bash, _NAME, NAME.fish).
pub fn write_all(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    man_pages(command.clone(), &dir.join("man"))?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    let name = command.get_name().to_owned();
    let mut command = command;
    for shell in SHELLS {
        let path = clap_complete::generate_to(shell, &mut command, &name, &completions)?;
        if shell == Shell::Bash {
            let script = std::fs::read_to_string(&path)?;
            std::fs::write(&path, fix_hyphenated_bash(&script, &name))?;
        }
    }
    Ok(())
}

/// clap_complete (4.6.12 and before) spells a hyphenated command's
/// subcommand states one way where it sets them and another where it
/// matches them, so `handoff-supervisor status --<TAB>` offers nothing
/// (clap-rs/clap#6421): spell the matching side as the setting side does.
fn fix_hyphenated_bash(script: &str, name: &str) -> String {
    let matched = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let set = format!("{}__subcmd__", name.replace('-', "__"));
    script.replace(&matched, &set)
}

/// NAME.1, and NAME-COMMAND.1 for each command (which NAME.1's SUBCOMMANDS
/// section names).
fn man_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // No page for `help`: it is clap's, and says nothing the others do not.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    // Each page's footer names the command and its version, as NAME.1's does.
    let source = format!(
        "{} {}",
        command.get_name(),
        command.get_version().unwrap_or_default()
    );
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        Man::new(sub.clone()).source(&source).generate_to(dir)?;
    }
    let notes = command.get_after_help().map(|text| text.to_string());
    let page = Man::new(command);
    let mut out = BufWriter::new(File::create(dir.join(page.get_filename()))?);
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    page.render_subcommands_section(&mut out)?;
    // clap_mangen would title `after_help` EXTRA; these are its notes.
    let mut roff = Roff::default();
    if let Some(notes) = notes {
        roff.control("SH", ["NOTES"]);
        for line in notes.lines() {
            roff.text([roman(line)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]).text([
        bold("systemctl"),
        roman("(1), "),
        bold("systemd.service"),
        roman("(5)"),
    ]);
    roff.to_writer(&mut out)?;
    page.render_version_section(&mut out)?;
    out.flush()
}
