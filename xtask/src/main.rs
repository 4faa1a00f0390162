//! cargo xtask: everything it takes to build, test, run and benchmark
//! capstan on a fresh Debian 12 machine, as commands instead of instructions.

mod bench;
mod cmd;
mod ebpf;
mod guard;
mod image;
mod paths;
mod push;
mod setup;
mod test;
mod up;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building, testing and benchmarking need (idempotent).
    Setup,
    /// Build the eBPF programs the agent embeds.
    BuildEbpf,
    /// Build the test images (OCI tarballs) from local files.
    Image,
    /// Push an image tarball to a registry on loopback, e.g.
    /// `cargo xtask push target/images/testapp.tar 127.0.0.1:5000/capstan/testapp:v1`.
    Push {
        tarball: std::path::PathBuf,
        reference: String,
    },
    /// Set up, build, lint, and run every test (end-to-end ones need root).
    Test(test::TestArgs),
    /// Run a single-node cluster on this host until Ctrl-C.
    Up(up::UpArgs),
    /// Run a benchmark beside its peer (store, api, scheduler, controllers, pod-start).
    Bench {
        /// Which benchmark: store, api, scheduler, controllers, pod-start.
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let result = match Args::parse().task {
        Task::Setup => setup::run().map(drop),
        Task::BuildEbpf => ebpf::build(),
        Task::Image => image::build().map(drop),
        Task::Push { tarball, reference } => push::run(&tarball, &reference),
        Task::Test(args) => test::run(&args),
        Task::Up(args) => up::run(&args),
        Task::Bench { name } => bench::run(&name),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The chain of contexts says what failed and how to fix it; a
        // backtrace of xtask itself would only bury that.
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
