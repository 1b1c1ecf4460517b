//! `blktap-man`: writes the manual pages of `blktapd` and `blktap-ctl` (section 8).
//!
//! The pages are rendered with `clap_mangen` from the very clap definitions the programs parse
//! (`blktapd::cli::Args`, `blktap_ctl::cli::Cli`), so options and help text cannot drift
//! apart. `blktap-ctl` gets one page per subcommand as well (`blktap-ctl-create.8`, ...).
//! What `--help` does not say (exit status, files, signals) is added here.
//!
//! Usage: `blktap-man OUTDIR` writes the pages into OUTDIR and prints their paths.

use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Inline, Roff};
use clap_mangen::Man;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Section of both programs: system administration commands and daemons.
const SECTION: &str = "8";

/// The `.TH` source field: project and version.
const SOURCE: &str = concat!("blktap-rs ", env!("CARGO_PKG_VERSION"));

/// The `.TH` manual field.
const MANUAL: &str = "System Administration";

/// Text of a section added to a page: paragraphs, each a list of inline runs.
struct Section {
    heading: &'static str,
    /// Each entry is a tagged paragraph (`.TP`): the tag, then its text. An empty tag makes a
    /// plain paragraph (`.PP`).
    items: &'static [(&'static str, &'static str)],
}

const BLKTAPD_EXTRA: &[Section] = &[
    Section {
        heading: "SIGNALS",
        items: &[(
            "SIGTERM, SIGINT",
            "Remove the block device, retrying while it fails with EBUSY (the disk is open or \
             requests are pending) and answering I/O meanwhile, so that the disk's last user can \
             finish and close it; then unmap the ring and exit with status 0. The tap stays \
             allocated until it is freed (blktap-ctl free).",
        )],
    },
    Section {
        heading: "EXIT STATUS",
        items: &[
            (
                "0",
                "The disk was removed after SIGTERM or SIGINT. Without --foreground: the \
                   process that was started exits 0 as soon as the disk exists.",
            ),
            (
                "1",
                "The backend, the ring or the disk could not be set up, or serving failed. \
                   Without --foreground: the daemon failed before the disk existed.",
            ),
            ("2", "Invalid command line."),
        ],
    },
    Section {
        heading: "FILES",
        items: &[
            (
                "/dev/xen/blktap-2/blktapN",
                "Ring node of tap N as blktap-ctl and tap-ctl create \
                                           it (used with --minor).",
            ),
            (
                "/dev/blktap/blktapN",
                "Ring node of tap N created by devtmpfs (the fallback of \
                                     --minor).",
            ),
            (
                "/dev/tdX",
                "The block device served, td followed by letters: tda for tap 0, tdz \
                          for 25, tdaa for 26.",
            ),
            (
                "/sys/class/blktap2/blktap!blktapN/task",
                "Process id of the daemon that has the \
                                                       ring of tap N open.",
            ),
            (
                "/sys/class/blktap2/blktap!blktapN/timeout",
                "Request timeout of tap N in seconds, written from --timeout once the ring is \
                 mapped.",
            ),
            (
                "/sys/class/blktap2/blktap!blktapN/recovery",
                "Recovery window of tap N in seconds, written from --recover if given.",
            ),
        ],
    },
    Section {
        heading: "SEE ALSO",
        items: &[(
            "",
            "blktap-ctl(8); Documentation/admin-guide.rst and \
                       Documentation/userspace-api.rst in the blktap-rs sources.",
        )],
    },
];

const BLKTAP_CTL_EXTRA: &[Section] = &[
    Section {
        heading: "EXIT STATUS",
        items: &[
            ("0", "Success."),
            ("1", "Failure; the reason is printed on standard error."),
            ("2", "Invalid command line."),
        ],
    },
    Section {
        heading: "FILES",
        items: &[
            (
                "/dev/xen/blktap-2/control, /dev/blktap-control, /dev/blktap/control",
                "Control device nodes, tried in this order. If none exists, \
              /dev/xen/blktap-2/control is created from the minor that /proc/misc lists for \
              blktap/control.",
            ),
            (
                "/dev/xen/blktap-2/blktapN, /dev/xen/blktap-2/tapdevN",
                "Ring and disk nodes of tap N, created (mode 0600) when the tap is allocated and \
              removed when it is freed.",
            ),
            (
                "/sys/class/blktap2",
                "Allocated taps, their daemons (task) and names.",
            ),
        ],
    },
    Section {
        heading: "SEE ALSO",
        items: &[(
            "",
            "blktapd(8); Documentation/admin-guide.rst in the blktap-rs sources.",
        )],
    },
];

/// Appends `sections` as roff.
fn render_sections(roff: &mut Roff, sections: &[Section]) {
    for s in sections {
        roff.control("SH", [s.heading]);
        for (tag, text) in s.items {
            if tag.is_empty() {
                roff.control("PP", []);
            } else {
                roff.control("TP", []);
                roff.text([bold(*tag)]);
            }
            roff.text([roman(*text)]);
        }
    }
}

/// Renders the text after the options (clap's `after_help`): a block whose first line is an
/// upper-case word ending in ':' becomes a section whose lines are kept as they are (usage
/// lines, lists); any other block is a paragraph of the current section.
fn render_after_help(roff: &mut Roff, text: &str) {
    for block in text.split("\n\n") {
        let mut lines = block.lines();
        let Some(first) = lines.next() else { continue };
        let heading = first
            .strip_suffix(':')
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_uppercase() || c == ' '));
        match heading {
            Some(h) => {
                roff.control("SH", [h]);
                roff.control("nf", []);
                for l in lines {
                    roff.text([roman(l)]);
                }
                roff.control("fi", []);
            }
            None => {
                roff.control("PP", []);
                let body: Vec<Inline> = block.lines().map(|l| roman(format!("{l} "))).collect();
                roff.text(body);
            }
        }
    }
}

/// Renders one page: clap's sections, then the after-help text and `extra`.
fn render_page(cmd: clap::Command, extra: &[Section]) -> io::Result<(String, Vec<u8>)> {
    let after = cmd.get_after_help().map(|s| s.to_string());
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .source(SOURCE)
        .manual(MANUAL);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::default();
    if let Some(text) = after {
        render_after_help(&mut roff, &text);
    }
    render_sections(&mut roff, extra);
    if cmd.get_version().is_some() {
        roff.control("SH", ["VERSION"]);
        roff.text([roman(SOURCE)]);
    }
    roff.to_writer(&mut out)?;
    Ok((man.get_filename(), out))
}

/// Every page: `blktapd.8`, `blktap-ctl.8` and one page per `blktap-ctl` subcommand.
fn pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut pages = vec![render_page(blktapd::cli::Args::command(), BLKTAPD_EXTRA)?];
    let mut ctl = blktap_ctl::cli::Cli::command().disable_help_subcommand(true);
    ctl.build();
    pages.push(render_page(ctl.clone(), BLKTAP_CTL_EXTRA)?);
    for sub in ctl.get_subcommands().filter(|s| !s.is_hide_set()) {
        let see_also: &[Section] = &[Section {
            heading: "SEE ALSO",
            items: &[("", "blktap-ctl(8), blktapd(8)")],
        }];
        pages.push(render_page(sub.clone(), see_also)?);
    }
    Ok(pages)
}

/// Writes every page into `dir` and returns the paths written.
fn write_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in pages()? {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: blktap-man OUTDIR");
        return ExitCode::from(2);
    };
    match write_pages(Path::new(dir)) {
        Ok(paths) => {
            let mut out = io::stdout().lock();
            for p in paths {
                let _ = writeln!(out, "{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("blktap-man: {dir}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cmd` and its subcommands, built (so that help and version flags exist).
    fn all_commands(mut cmd: clap::Command) -> Vec<clap::Command> {
        cmd.build();
        let mut out = vec![cmd.clone()];
        for sub in cmd.get_subcommands() {
            out.extend(all_commands(sub.clone()));
        }
        out
    }

    #[test]
    fn every_option_and_command_is_documented() {
        for top in [
            blktapd::cli::Args::command(),
            blktap_ctl::cli::Cli::command(),
        ] {
            for cmd in all_commands(top) {
                let name = cmd.get_name().to_string();
                assert!(cmd.get_about().is_some(), "{name} has no about text");
                for arg in cmd.get_arguments() {
                    let id = arg.get_id().as_str();
                    assert!(
                        arg.get_help().is_some() || matches!(id, "help" | "version"),
                        "{name}: argument {id} has no help text"
                    );
                }
            }
        }
    }

    #[test]
    fn pages_cover_every_option() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "blktapd.8",
                "blktap-ctl.8",
                "blktap-ctl-alloc.8",
                "blktap-ctl-free.8",
                "blktap-ctl-create.8",
                "blktap-ctl-destroy.8",
                "blktap-ctl-abort.8",
                "blktap-ctl-recover.8",
                "blktap-ctl-list.8",
            ]
        );
        let text = |name: &str| {
            let (_, t) = pages.iter().find(|(n, _)| n == name).unwrap();
            String::from_utf8(t.clone()).unwrap()
        };
        let blktapd = text("blktapd.8");
        for opt in [
            "ring",
            "minor",
            "dev\\-dir",
            "backend",
            "size",
            "read\\-only",
            "sector\\-size",
            "ready\\-fd",
            "foreground",
            "log",
        ] {
            assert!(
                blktapd.contains(&format!("\\-\\-{opt}")),
                "blktapd.8 lacks --{opt}"
            );
        }
        for section in [
            ".SH BACKENDS",
            ".SH EXAMPLES",
            ".SH \"EXIT STATUS\"",
            ".SH SIGNALS",
        ] {
            assert!(blktapd.contains(section), "blktapd.8 lacks {section}");
        }
        assert!(blktapd.contains("\n.TH blktapd 8 "), "no title line");
        let create = text("blktap-ctl-create.8");
        for opt in ["backend", "size", "read\\-only", "timeout", "daemon", "log"] {
            assert!(
                create.contains(&format!("\\-\\-{opt}")),
                "create page lacks --{opt}"
            );
        }
        let ctl = text("blktap-ctl.8");
        assert!(
            ctl.contains("blktap\\-ctl\\-create(8)"),
            "no subcommand list"
        );
    }

    #[test]
    fn writes_files() {
        let dir = std::env::temp_dir().join(format!("blktap-man-test-{}", std::process::id()));
        let written = write_pages(&dir).unwrap();
        assert_eq!(written.len(), 9);
        for p in &written {
            assert!(std::fs::metadata(p).unwrap().len() > 100, "{}", p.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn after_help_sections() {
        let mut roff = Roff::default();
        render_after_help(
            &mut roff,
            "NOTES:\n  a  b\n\nplain text\nmore\n\nnot: a heading",
        );
        let s = roff.to_roff();
        assert!(s.contains(".SH NOTES\n.nf\n"), "{s}");
        assert!(s.contains(".fi\n.PP\nplain text more"), "{s}");
        assert!(!s.contains(".SH not"), "{s}");
    }
}
