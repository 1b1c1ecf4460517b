//! Library part of `blktap-ctl`: its command line ([`cli`]), shared with `blktap-man`, which
//! renders the manual pages from it. The tool itself is the `blktap-ctl` binary.

// Doc comments on the CLI types are clap help text, written for a terminal, not rustdoc.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

pub mod cli;
