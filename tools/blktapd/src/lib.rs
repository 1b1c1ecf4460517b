//! Library part of `blktapd`: the command line ([`cli`]), the storage backends
//! ([`backend`]) and the file backend's io_uring path ([`uring`]). The daemon itself is the
//! `blktapd` binary; `blktap-man` renders its manual page from [`cli::Args`].

// Doc comments on the CLI types are clap help text, written for a terminal, not rustdoc.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

pub mod backend;
pub mod cli;
pub mod uring;
