//! capstan's benchmarks; run them with `cargo xtask bench <name>`.

use anyhow::bail;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("store") => capstan_tests::bench::store::run().await,
        Some("api") => capstan_tests::bench::api::run().await,
        Some("scheduler") => capstan_tests::bench::scheduler::run().await,
        Some("controllers") => capstan_tests::bench::controllers::run().await,
        Some("service-lb") => {
            tokio::task::spawn_blocking(capstan_tests::bench::service_lb::run).await?
        }
        Some("connect-loop") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let [address, count] = args.as_slice() else {
                bail!("usage: capstan-bench connect-loop <address> <count>");
            };
            capstan_tests::bench::service_lb::connect_loop(address, count.parse()?)
        }
        Some("pod-start") => {
            tokio::task::spawn_blocking(capstan_tests::bench::pod_start::run).await?
        }
        other => bail!(
            "unknown benchmark {other:?}; known: store, api, scheduler, controllers, pod-start, service-lb"
        ),
    }
}
