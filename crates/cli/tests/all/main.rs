//! Integration tests: each starts the real `wisp` binary on free ports with a temporary
//! data directory and uses it like a user, through the CLI and over HTTP.
//! All of them compile into this one test binary.

mod harness;

mod conformance;
mod deploy;
mod describe;
mod dev;
mod errors;
mod events;
mod hardening;
mod lifecycle;
mod limits;
mod logs;
mod metrics;
mod native;
mod outbound;
mod routing;
mod scaffold;
mod scaling;
mod streaming;
mod strict_clients;
mod thumbnails;
mod traces;
mod usage;
