//! The `envlink` binary: wiring only.

/// mimalloc instead of the system allocator: a review allocates and frees many small
/// objects, and glibc's free-list maintenance was a visible share of the request path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use envlink::cli::{Cli, Command, audit, mutate, policy, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mutate(args) => {
            let code = mutate::run(
                &args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            ExitCode::from(code.code())
        }
        Command::Audit(args) => {
            let code = audit::run(&args, &mut std::io::stdout().lock());
            ExitCode::from(code)
        }
        Command::Policy(args) => ExitCode::from(policy::run(
            &args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
        Command::Serve(args) => {
            let log_guard = match envlink::telemetry::init(args.log_format) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("envlink serve: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // One process-wide TLS provider (aws-lc-rs) for the server and the Kubernetes client;
            // an error only means one is installed already, which is fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("envlink serve: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(serve::run(*args));
            // Every log line out before the final error, so it comes last.
            drop(runtime);
            drop(log_guard);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("envlink serve: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
