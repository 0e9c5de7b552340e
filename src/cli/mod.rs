//! Command-line interface: clap definitions; each subcommand lives in its own module.

pub mod audit;
pub mod cluster;
pub mod mutate;
pub mod policy;
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
    /// Run the admission logic offline on manifests (Pods and workloads) and print the
    /// result.
    ///
    /// Exit status: 0 admitted, 1 denied (the reason on standard error), 2 bad input.
    Mutate(mutate::MutateArgs),
    /// Audit a cluster for what admission could not see: reserved variables in existing
    /// Pods and workloads, stale and missing service variables in Pods.
    ///
    /// Exit status: 0 nothing found, 1 findings, 2 error.
    Audit(audit::AuditArgs),
    /// Print a ValidatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1,
    /// Kubernetes 1.30+) that enforce the reserved `deny` rules the object alone decides, so
    /// the API server keeps refusing such Pods while envlink is down.
    ///
    /// Exit status: 0 printed, 2 the configuration is unusable.
    Policy(policy::PolicyArgs),
}
