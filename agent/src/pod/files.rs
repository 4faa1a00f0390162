//! The files the agent writes for each pod and binds into its containers:
//! /etc/hosts, /etc/resolv.conf and /etc/hostname.

use std::{net::Ipv4Addr, path::Path};

use k8s_openapi::api::core::v1::Pod;

/// Cluster DNS as pods see it.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub nameserver: Ipv4Addr,
    pub cluster_domain: String,
    /// The node's own resolv.conf, for dnsPolicy Default.
    pub host_resolv_conf: String,
}

/// A pod's hostname: spec.hostname, else its name (cut to 63 characters,
/// a DNS label's limit).
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars().take(63).collect()
}

/// /etc/hosts: localhost, the pod's own name and address, and hostAliases.
pub fn hosts(pod: &Pod, ip: Ipv4Addr, cluster_domain: &str) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let name = hostname(pod);
    let spec = pod.spec.as_ref();
    match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            text.push_str(&format!(
                "{ip}\t{name}.{subdomain}.{namespace}.svc.{cluster_domain}\t{name}\n"
            ));
        }
        None => text.push_str(&format!("{ip}\t{name}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        text.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.clone().unwrap_or_default().join("\t");
            text.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    text
}

/// /etc/resolv.conf under the pod's dnsPolicy and dnsConfig.
pub fn resolv_conf(pod: &Pod, dns: &DnsSettings) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = &dns.cluster_domain;
    let (mut nameservers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
            "None" => (Vec::new(), Vec::new(), Vec::new()),
            "Default" => host_settings(&dns.host_resolv_conf),
            _ => (
                vec![dns.nameserver.to_string()],
                vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.clone(),
                ],
                vec!["ndots:5".to_owned()],
            ),
        };
    if let Some(config) = &spec.dns_config {
        nameservers.extend(config.nameservers.clone().unwrap_or_default());
        searches.extend(config.searches.clone().unwrap_or_default());
        for option in config.options.clone().unwrap_or_default() {
            let Some(name) = option.name else { continue };
            let text = match option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.clone(),
            };
            let key = |o: &String| o.split(':').next().unwrap_or_default().to_owned();
            options.retain(|o| key(o) != name);
            options.push(text);
        }
    }
    nameservers.dedup();
    searches.dedup();
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in nameservers.iter().take(3) {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

fn host_settings(resolv_conf: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.map(str::to_owned)),
            Some("search" | "domain") => searches.extend(words.map(str::to_owned)),
            Some("options") => options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// Writes the three files into `dir` (created if missing).
pub fn write_all(dir: &Path, pod: &Pod, ip: Ipv4Addr, dns: &DnsSettings) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("hosts"), hosts(pod, ip, &dns.cluster_domain))?;
    std::fs::write(dir.join("resolv.conf"), resolv_conf(pod, dns))?;
    std::fs::write(dir.join("hostname"), format!("{}\n", hostname(pod)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-0", "namespace": "shop" },
            "spec": spec,
        }))
        .unwrap()
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            nameserver: Ipv4Addr::new(10, 96, 0, 10),
            cluster_domain: "cluster.local".to_owned(),
            host_resolv_conf: "nameserver 192.0.2.53\nsearch corp.example\n".to_owned(),
        }
    }

    #[test]
    fn cluster_first_pods_use_cluster_dns() {
        let text = resolv_conf(&pod(json!({ "containers": [] })), &dns());
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn dns_policy_and_config_change_the_file() {
        let default = resolv_conf(
            &pod(json!({ "dnsPolicy": "Default", "containers": [] })),
            &dns(),
        );
        assert_eq!(default, "search corp.example\nnameserver 192.0.2.53\n");
        let custom = pod(
            json!({ "dnsPolicy": "None", "containers": [], "dnsConfig": {
            "nameservers": ["192.0.2.1"], "searches": ["a.example"],
            "options": [{ "name": "ndots", "value": "2" }, { "name": "edns0" }] } }),
        );
        assert_eq!(
            resolv_conf(&custom, &dns()),
            "search a.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn hosts_name_the_pod_and_its_aliases() {
        let with_alias = pod(json!({ "containers": [], "hostAliases": [
            { "ip": "192.0.2.9", "hostnames": ["db", "db.local"] }] }));
        let text = hosts(&with_alias, Ipv4Addr::new(10, 244, 0, 5), "cluster.local");
        assert!(text.contains("10.244.0.5\tweb-0\n"), "{text}");
        assert!(text.contains("192.0.2.9\tdb\tdb.local\n"), "{text}");
        let in_subdomain = pod(json!({ "containers": [], "hostname": "db-0", "subdomain": "db" }));
        let text = hosts(&in_subdomain, Ipv4Addr::new(10, 244, 0, 6), "cluster.local");
        assert!(
            text.contains("10.244.0.6\tdb-0.db.shop.svc.cluster.local\tdb-0\n"),
            "{text}"
        );
    }
}
