//! `envlink audit`: list the cluster once and report what admission could not see.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::audit::collect::{self, Options};
use crate::audit::{Outcome, report};
use crate::config::Policy;
use crate::listing::PAGE_SIZE;

/// Arguments of `envlink audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Kubeconfig of the cluster; default: in-cluster configuration, else $KUBECONFIG.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Audit only this namespace (repeatable); default: all namespaces.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Vec<String>,
    /// The policy file (see the README); default: the built-in policy.
    #[arg(long, value_name = "FILE", env = "ENVLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = AuditOutput::Table)]
    pub output: AuditOutput,
    /// Objects per list page (the API server's `limit`).
    #[arg(long, value_name = "N", default_value_t = PAGE_SIZE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
}

/// Output formats of `envlink audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    /// A table for people, and a closing count.
    Table,
    /// A JSON list of findings (`check`, `kind`, `namespace`, `name`, `container`,
    /// `variable`, `message`).
    Json,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReports, one per namespace, in a `List`.
    Policyreport,
}

/// Runs `envlink audit`; the exit code is 0 when nothing is found, 1 when something is,
/// 2 on error (the message on standard error).
pub fn run(args: &AuditArgs, out: &mut dyn Write) -> u8 {
    match run_inner(args) {
        Ok((outcome, notes)) => {
            for note in notes {
                eprintln!("envlink audit: {note}");
            }
            let text = match args.output {
                AuditOutput::Table => report::table(&outcome),
                AuditOutput::Json => report::json(&outcome),
                AuditOutput::Policyreport => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                        .unwrap_or(0);
                    serde_json::to_string_pretty(&report::policy_reports(&outcome, now))
                        .unwrap_or_default()
                }
            };
            if let Err(e) = writeln!(out, "{}", text.trim_end()) {
                eprintln!("envlink audit: cannot write output: {e}");
                return 2;
            }
            if args.output != AuditOutput::Table {
                eprintln!("envlink audit: {}", report::closing_line(&outcome));
            }
            u8::from(!outcome.findings.is_empty())
        }
        Err(e) => {
            eprintln!("envlink audit: {e:#}");
            2
        }
    }
}

fn run_inner(args: &AuditArgs) -> anyhow::Result<(Outcome, Vec<String>)> {
    let policy = match &args.config {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default(),
    };
    for ns in &args.namespace {
        if !crate::servicelinks::is_dns_label(ns) {
            anyhow::bail!("--namespace {ns:?} is not a namespace name");
        }
    }
    let options = Options {
        namespaces: args.namespace.clone(),
        page_size: Some(args.page_size),
    };
    // A progress line only for a person watching: never in a pipe or a CI log.
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |pods: usize, workloads: usize| {
        if terminal {
            eprint!("\raudited {pods} Pods, {workloads} workloads ...");
        }
    };
    let runtime = super::cluster::runtime()?;
    let result = runtime.block_on(async {
        let client = super::cluster::client(args.kubeconfig.as_deref()).await?;
        collect::audit(&client, &policy, &options, &mut progress)
            .await
            .context("audit failed")
    });
    if terminal {
        eprint!("\r\x1b[K");
    }
    result
}
