//! `envlink policy`: print the native ValidatingAdmissionPolicy for the reserved `deny` rules.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::config::Policy;
use crate::policy;

/// Arguments of `envlink policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The policy file (see the README); default: the built-in policy.
    #[arg(long, value_name = "FILE", env = "ENVLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print only the ValidatingAdmissionPolicy, not its binding (the Helm chart writes its
    /// own binding, with the webhook's namespace exclusions).
    #[arg(long)]
    pub no_binding: bool,
}

/// Runs `envlink policy`: 0 printed, 2 the configuration is unusable (the reason on `err`).
pub fn run(args: &PolicyArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let policy = match &args.config {
        Some(path) => match Policy::from_file(path) {
            Ok(p) => p,
            Err(e) => {
                let _ = writeln!(err, "envlink policy: {e}");
                return 2;
            }
        },
        None => Policy::default(),
    };
    let native = policy::generate(&policy.rules);
    match native.to_yaml(!args.no_binding) {
        Ok(text) => match out.write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "envlink policy: cannot write the output: {e}");
                2
            }
        },
        Err(e) => {
            let _ = writeln!(err, "envlink policy: {e}");
            2
        }
    }
}
