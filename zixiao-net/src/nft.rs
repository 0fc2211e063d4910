//! NAT and isolation rules through `nft`'s JSON input: one table per network
//! (`inet zx_<installation>_<network>`, see [`HostMark::nft_table`]),
//! replaced atomically in one `nft -j -f -` transaction and removed as a
//! whole, so no rule of ours outlives its network.
//!
//! The ruleset is a JSON value built from typed data (a [`BridgeName`], a
//! [`HostMark`], [`Cidr`]s): no text is ever pasted into an nft script, so
//! no value can add a command (`flush ruleset`) to the transaction. A
//! table's name carries its installation, which is what makes it ours: a
//! table is only replaced or removed through the mark of the network it
//! belongs to.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use zixiao_core::model::{BridgeName, Cidr, HostMark, Network, BRIDGE_PREFIX, HOST_NAME_PREFIX};
use zixiao_core::{Error, Result};

/// The priority of the `srcnat` hook.
const SRCNAT: i32 = 100;
/// The priority of the `filter` hook.
const FILTER: i32 = 0;

/// Every table of Zixiao's (this version's and older ones') starts with this (`zx_`).
pub fn table_prefix() -> String {
    format!("{HOST_NAME_PREFIX}_")
}

/// The ruleset of `network`, whose host objects carry `mark`: masquerade
/// what leaves its subnets (when NAT is on) and drop what crosses to another
/// Zixiao bridge (when isolated). Adding then deleting the table first
/// makes the transaction replace it.
pub fn ruleset(network: &Network, mark: &HostMark) -> Value {
    let table = mark.nft_table();
    let bridge = &network.bridge;
    let id = json!({ "family": "inet", "name": table });
    let mut commands = vec![
        json!({ "metainfo": { "json_schema_version": 1 } }),
        json!({ "add": { "table": id } }),
        json!({ "delete": { "table": id } }),
        json!({ "add": { "table": id } }),
    ];
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({ "add": { "chain": {
            "family": "inet", "table": table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        } } })
    };
    let rule = |chain: &str, expr: Vec<Value>| {
        json!({ "add": { "rule": {
            "family": "inet", "table": table, "chain": chain, "expr": expr,
        } } })
    };
    if network.nat {
        commands.push(chain("postrouting", "nat", "postrouting", SRCNAT));
        for subnet in &network.subnets {
            commands.push(rule(
                "postrouting",
                vec![
                    address_match("==", "saddr", &subnet.cidr),
                    address_match("!=", "daddr", &subnet.cidr),
                    name_match("!=", "oifname", bridge),
                    json!({ "masquerade": null }),
                ],
            ));
        }
    }
    if network.isolated {
        // A trailing `*` is nft's wildcard: any Zixiao bridge.
        let any_bridge = format!("{BRIDGE_PREFIX}*");
        commands.push(chain("forward", "filter", "forward", FILTER));
        // A published port (DNAT to an instance, see `ports`) is open to
        // whoever reaches the node's address, an instance of another
        // network too: its connections (both ways) pass the isolation.
        commands.push(rule(
            "forward",
            vec![
                json!({ "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } }),
                json!({ "accept": null }),
            ],
        ));
        for (from, to) in [("iifname", "oifname"), ("oifname", "iifname")] {
            commands.push(rule(
                "forward",
                vec![
                    name_match("==", from, bridge),
                    json!({ "match": { "op": "==", "left": { "meta": { "key": to } }, "right": any_bridge } }),
                    name_match("!=", to, bridge),
                    json!({ "drop": null }),
                ],
            ));
        }
    }
    json!({ "nftables": commands })
}

/// `ip saddr 10.0.0.0/24` (or `ip6 …`): `field` of the family's header in `cidr`.
fn address_match(op: &str, field: &str, cidr: &Cidr) -> Value {
    let protocol = if cidr.is_ipv4() { "ip" } else { "ip6" };
    json!({ "match": {
        "op": op,
        "left": { "payload": { "protocol": protocol, "field": field } },
        "right": { "prefix": { "addr": cidr.network().address().to_string(), "len": cidr.prefix_len() } },
    } })
}

/// `iifname "zxb…"` / `oifname "zxb…"`: the interface is `bridge`.
fn name_match(op: &str, key: &str, bridge: &BridgeName) -> Value {
    json!({ "match": { "op": op, "left": { "meta": { "key": key } }, "right": bridge.as_str() } })
}

/// Runs `ruleset` (from [`ruleset`]) as one atomic `nft -j -f -` transaction.
pub async fn apply(ruleset: &Value) -> Result<()> {
    run(&["-j", "-f", "-"], Some(&ruleset.to_string()))
        .await
        .map(|_| ())
}

/// Removes the table of the network marked `mark`; a missing table is not an error.
pub async fn delete_table(mark: &HostMark) -> Result<()> {
    let id = json!({ "family": "inet", "name": mark.nft_table() });
    let script = json!({ "nftables": [
        { "add": { "table": id } },
        { "delete": { "table": id } },
    ] });
    apply(&script).await
}

/// Whether the table of the network marked `mark` exists.
pub async fn table_exists(mark: &HostMark) -> Result<bool> {
    Ok(inet_tables().await?.contains(&mark.nft_table()))
}

/// The inet tables whose names start with `zx_` (any installation's, and
/// those of Zixiao versions older than installation ids).
pub async fn our_tables() -> Result<Vec<String>> {
    let prefix = table_prefix();
    Ok(inet_tables()
        .await?
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect())
}

async fn inet_tables() -> Result<Vec<String>> {
    let out = run(&["-j", "list", "tables", "inet"], None).await?;
    let json: Value = serde_json::from_str(&out)
        .map_err(|e| Error::Internal(format!("`nft -j list tables` printed no JSON: {e}")))?;
    Ok(json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["table"]["name"].as_str())
        .map(str::to_owned)
        .collect())
}

/// The rules of Zixiao table `table` as `nft list table` prints them (for
/// tests and people). Errors: `InvalidArgument` for a name that is not a
/// Zixiao table's (nft reads its arguments as one command line, so nothing
/// else is passed to it).
pub async fn show_table(table: &str) -> Result<Option<String>> {
    let legacy = table
        .strip_prefix(&table_prefix())
        .is_some_and(|bridge| BridgeName::try_from(bridge).is_ok());
    let ports = crate::ports::PortsTable::parse(table).is_some();
    if HostMark::from_nft_table(table).is_none() && !legacy && !ports {
        return Err(Error::invalid(
            "table",
            format!("`{}` is not a Zixiao nftables table", table.escape_debug()),
        ));
    }
    match run(&["list", "table", "inet", table], None).await {
        Ok(out) => Ok(Some(out)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn run(args: &[&str], stdin: Option<&str>) -> Result<String> {
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
    use zixiao_core::model::{CreateNetwork, InstallationId};

    #[test]
    fn ruleset_masquerades_each_family_and_isolates_the_bridge() {
        let here = InstallationId::try_from("0123456789abcdef").unwrap();
        let net = CreateNetwork::new("lan", ["10.9.0.0/24", "fd09::/64"])
            .validate(&here, chrono::Utc::now())
            .unwrap();
        let mark = net.mark().unwrap();
        let rules = ruleset(&net, &mark);
        let text = rules.to_string();
        assert!(
            text.contains(r#""name":"zx_0123456789abcdef_lan""#),
            "{text}"
        );
        assert!(
            text.contains(r#""prefix":{"addr":"10.9.0.0","len":24}"#),
            "{text}"
        );
        assert!(text.contains(r#""protocol":"ip6""#), "{text}");
        assert!(
            text.contains(&format!(r#""right":"{}""#, net.bridge)),
            "{text}"
        );
        assert!(text.contains(r#""right":"zxb*""#), "{text}");
        let commands = rules["nftables"].as_array().unwrap();
        // metainfo, add/delete/add table, 2 chains, 2 NAT rules, the
        // published ports' exception and 2 isolation rules.
        assert_eq!(commands.len(), 11, "{text}");
        let mut open = net.clone();
        open.nat = false;
        open.isolated = false;
        let text = ruleset(&open, &mark).to_string();
        assert!(!text.contains("masquerade") && !text.contains("drop"));
    }
}
