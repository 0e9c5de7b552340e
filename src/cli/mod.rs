//! Command-line interface: clap definitions; each subcommand lives in its own module.

pub mod mutate;
pub mod serve;

use clap::{Parser, Subcommand};

/// envlink: kubelet-exact service-link variables and reserved device-plugin variables,
/// as a Kubernetes admission webhook.
#[derive(Debug, Parser)]
#[command(name = "envlink", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS).
    Serve(Box<serve::ServeArgs>),
    /// Run the admission logic offline on a Pod manifest and print the result.
    ///
    /// Exit status: 0 admitted, 1 denied (the reason on standard error), 2 bad input.
    Mutate(mutate::MutateArgs),
}
