//! The suite's proof that nothing escaped: while the tests run, an
//! nftables table in the host's network namespace counts packets leaving
//! by the machine's real interface (the default route's) for a pod, Service
//! or test-host address. Tests must send such traffic only inside network
//! namespaces with no route out, so the count must stay 0.

use std::{
    fs,
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

const TABLE: &str = "capstan_test_guard";
/// The cluster network, the Service network, and the test hosts' network.
const GUARDED: &str = "10.244.0.0/16, 10.96.0.0/12, 198.18.0.0/15";

/// The counting table, removed on drop.
#[derive(Debug)]
pub struct Guard {
    interface: String,
}

impl Guard {
    /// Starts counting; None when the machine has no default route (then
    /// nothing can leave by it).
    pub fn install() -> anyhow::Result<Option<Self>> {
        let Some(interface) = default_interface() else {
            return Ok(None);
        };
        let _ = nft(&["delete", "table", "inet", TABLE]);
        let chain = |name: &str| {
            format!(
                "chain {name} {{\n\
                 type filter hook {name} priority 0; policy accept;\n\
                 oifname \"{interface}\" ip daddr {{ {GUARDED} }} counter\n\
                 }}\n"
            )
        };
        let rules = format!(
            "table inet {TABLE} {{\n{}{}}}\n",
            chain("output"),
            chain("forward")
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("running nft")?;
        nft.stdin
            .take()
            .context("nft's stdin")?
            .write_all(rules.as_bytes())?;
        if !nft.wait()?.success() {
            bail!("nft refused the guard's table:\n{rules}");
        }
        Ok(Some(Self { interface }))
    }

    /// Fails if any guarded packet left by the real interface.
    pub fn check(&self) -> anyhow::Result<String> {
        let listing = nft(&["list", "table", "inet", TABLE])?;
        let packets: u64 = listing
            .split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        if packets > 0 {
            bail!(
                "{packets} packet(s) for pod, Service or test-host addresses left by {}",
                self.interface
            );
        }
        Ok(format!(
            "0 packets to cluster addresses left by {}",
            self.interface
        ))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", TABLE]);
    }
}

fn nft(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("nft")
        .args(args)
        .output()
        .context("running nft")?;
    if !output.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The interface of the host's default route.
fn default_interface() -> Option<String> {
    let routes = fs::read_to_string("/proc/self/net/route").ok()?;
    routes.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let interface = fields.next()?;
        (fields.next()? == "00000000").then(|| interface.to_owned())
    })
}
