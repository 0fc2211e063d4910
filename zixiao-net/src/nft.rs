//! NAT and isolation rules through the `nft` binary: one table per network
//! (`inet zx_<bridge>`), replaced atomically in one `nft -f` transaction and
//! removed as a whole, so no rule of ours outlives its network.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use zixiao_core::model::{Network, BRIDGE_PREFIX, HOST_NAME_PREFIX};
use zixiao_core::{Error, Result};

/// Every table of ours starts with this (`zx_`).
pub fn table_prefix() -> String {
    format!("{HOST_NAME_PREFIX}_")
}

/// The ruleset of `network`: masquerade what leaves its subnets (when NAT is
/// on) and drop what crosses to another Zixiao bridge (when isolated).
/// Declaring then deleting the table first makes the script replace it.
pub fn ruleset(network: &Network) -> String {
    let table = network.nft_table();
    let bridge = &network.bridge;
    let mut script =
        format!("table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n");
    if network.nat {
        script.push_str(
            "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
        );
        for subnet in &network.subnets {
            let family = if subnet.cidr.is_ipv4() { "ip" } else { "ip6" };
            let cidr = subnet.cidr;
            script.push_str(&format!(
                "    {family} saddr {cidr} {family} daddr != {cidr} oifname != \"{bridge}\" masquerade\n"
            ));
        }
        script.push_str("  }\n");
    }
    if network.isolated {
        script.push_str(&format!(
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
             iifname \"{bridge}\" oifname \"{BRIDGE_PREFIX}*\" oifname != \"{bridge}\" drop\n    \
             oifname \"{bridge}\" iifname \"{BRIDGE_PREFIX}*\" iifname != \"{bridge}\" drop\n  }}\n"
        ));
    }
    script.push_str("}\n");
    script
}

/// Runs `nft -f -` with `script` as one atomic transaction.
pub async fn apply(script: &str) -> Result<()> {
    run(&["-f", "-"], Some(script)).await.map(|_| ())
}

/// Removes table `table` of family inet; a missing table is not an error.
pub async fn delete_table(table: &str) -> Result<()> {
    apply(&format!("table inet {table}\ndelete table inet {table}\n")).await
}

/// The inet tables whose names start with `zx_`.
pub async fn our_tables() -> Result<Vec<String>> {
    let out = run(&["-j", "list", "tables", "inet"], None).await?;
    let json: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| Error::Internal(format!("`nft -j list tables` printed no JSON: {e}")))?;
    let prefix = table_prefix();
    Ok(json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["table"]["name"].as_str())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_owned)
        .collect())
}

/// The rules of table `table` as `nft list table` prints them (for tests and people).
pub async fn show_table(table: &str) -> Result<Option<String>> {
    match run(&["list", "table", "inet", table], None).await {
        Ok(out) => Ok(Some(out)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn run(args: &[&str], stdin: Option<&str>) -> Result<String> {
    // Spawned from the calling thread, so it runs in that thread's network namespace.
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Unsupported("`nft` is not installed (Debian package nftables)".to_owned())
            } else {
                Error::Internal(format!("running nft: {e}"))
            }
        })?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(script.as_bytes())
            .await
            .map_err(|e| Error::Internal(format!("writing to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Internal(format!("waiting for nft: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(if stderr.contains("Operation not permitted") {
        Error::Unsupported(format!(
            "missing privileges for nftables (CAP_NET_ADMIN is needed): {stderr}"
        ))
    } else if stderr.contains("No such file or directory") {
        Error::not_found(format!("nftables object ({stderr})"))
    } else {
        Error::Internal(format!("nft {} failed: {stderr}", args.join(" ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::model::CreateNetwork;

    #[test]
    fn ruleset_masquerades_each_family_and_isolates_the_bridge() {
        let net = CreateNetwork::new("lan", ["10.9.0.0/24", "fd09::/64"])
            .validate(chrono::Utc::now())
            .unwrap();
        let script = ruleset(&net);
        assert!(script.contains("ip saddr 10.9.0.0/24 ip daddr != 10.9.0.0/24"));
        assert!(script.contains("ip6 saddr fd09::/64"));
        assert!(script.contains(&format!("iifname \"{}\" oifname \"zxb*\"", net.bridge)));
        let mut open = net.clone();
        open.nat = false;
        open.isolated = false;
        let script = ruleset(&open);
        assert!(!script.contains("masquerade") && !script.contains("drop"));
    }
}
