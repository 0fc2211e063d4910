//! The YAML configuration files of `zixiao server` and `zixiao agent`
//! (examples in `zixiao-cluster/examples/`), with environment overrides:
//! a variable named in each field's documentation wins over the file, and
//! command-line flags win over both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zixiao_core::{AllocationRatio, AllocationRatios, Error, Result};

use crate::timing::Timing;

/// `server.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The API.
    pub server: ServerSection,
    /// Where the state lives.
    pub store: StoreSection,
    /// Liveness settings.
    pub timing: Timing,
}

/// `server:` of `server.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// This replica's id (`ZIXIAO_SERVER_ID`; default: hostname and port).
    pub id: Option<String>,
    /// gRPC listen address (`ZIXIAO_SERVER_LISTEN`; default `0.0.0.0:50051`).
    pub listen: String,
    /// A carbon source file (see [`crate::carbon`]): nodes' and zones'
    /// carbon intensity, read again whenever it changes; the server does
    /// not start when it is missing or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carbon_file: Option<PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            id: None,
            listen: "0.0.0.0:50051".to_owned(),
            carbon_file: None,
        }
    }
}

/// `store:` of `server.yaml`: etcd endpoints, or an embedded state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// etcd client URLs (`ZIXIAO_ETCD_ENDPOINTS`, comma-separated).
    pub etcd: Vec<String>,
    /// Key prefix in etcd (`ZIXIAO_ETCD_PREFIX`), to share one etcd.
    pub etcd_prefix: String,
    /// Serve the embedded store and a local agent from this state
    /// directory instead (`ZIXIAO_STATE_DIR` with `--embedded`).
    pub embedded: Option<PathBuf>,
}

/// `agent.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The node.
    pub node: NodeSection,
    /// The agent process.
    pub agent: AgentSection,
    /// Runtime settings.
    pub drivers: DriversSection,
    /// Liveness settings (must match the servers').
    pub timing: Timing,
    /// The smoke test run before the node takes work.
    pub onboarding: crate::onboarding::OnboardingSection,
}

/// `node:` of `agent.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// The node's name (`ZIXIAO_NODE_NAME`; default: the hostname as a DNS label).
    pub name: Option<String>,
    /// Region (`ZIXIAO_NODE_REGION`).
    pub region: String,
    /// Zone (`ZIXIAO_NODE_ZONE`).
    pub zone: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Reserved CPU may be this many times the node's cores (as Nova's
    /// `cpu_allocation_ratio`). Set, the agent registers it every time
    /// (with the default for a memory ratio not set); unset, the node
    /// keeps its own (4 for a new node, or what `zixiao node update` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_allocation_ratio: Option<AllocationRatio>,
    /// Reserved memory may be this many times the node's memory (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_allocation_ratio: Option<AllocationRatio>,
}

impl NodeSection {
    /// The allocation ratios the configuration sets, if it sets any.
    pub fn allocation_ratios(&self) -> Option<AllocationRatios> {
        if self.cpu_allocation_ratio.is_none() && self.memory_allocation_ratio.is_none() {
            return None;
        }
        let defaults = AllocationRatios::default();
        Some(AllocationRatios {
            cpu: self.cpu_allocation_ratio.unwrap_or(defaults.cpu),
            memory: self.memory_allocation_ratio.unwrap_or(defaults.memory),
        })
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: None,
            region: "default".to_owned(),
            zone: "default".to_owned(),
            labels: BTreeMap::new(),
            cpu_allocation_ratio: None,
            memory_allocation_ratio: None,
        }
    }
}

/// `agent:` of `agent.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Server endpoints (`ZIXIAO_SERVERS`, comma-separated).
    pub servers: Vec<String>,
    /// AgentService listen address (`ZIXIAO_AGENT_LISTEN`; default `0.0.0.0:50052`).
    pub listen: String,
    /// The `host:port` servers dial (`ZIXIAO_AGENT_ADVERTISE`).
    pub advertise: Option<String>,
    /// The node's IP address between nodes, which networks' VXLAN overlays
    /// use (`ZIXIAO_AGENT_UNDERLAY`; default: the host of `advertise` when
    /// that is an IP other than loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
    /// The node's state directory (`ZIXIAO_STATE_DIR`).
    pub state_dir: Option<PathBuf>,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            servers: Vec::new(),
            listen: "0.0.0.0:50052".to_owned(),
            advertise: None,
            underlay: None,
            state_dir: None,
        }
    }
}

/// The most MiB of an instance's log a node may be told to keep (1 TiB).
pub const MAX_LOG_LIMIT_MIB: u64 = 1 << 20;

/// `drivers:` of `agent.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriversSection {
    /// containerd's socket (`ZIXIAO_CONTAINERD_SOCKET`).
    pub containerd_socket: Option<PathBuf>,
    /// libvirt URI (`ZIXIAO_LIBVIRT_URI`).
    pub libvirt_uri: Option<String>,
    /// This node's libvirtd as other nodes' libvirtd reach it, for live
    /// migrations to this node (`ZIXIAO_LIBVIRT_MIGRATION_URI`,
    /// `--libvirt-migration-uri`; default `qemu+tls://ADDRESS/system`,
    /// libvirtd's TLS listener at `libvirt_migration_address`).
    ///
    /// It is the target node's to say, and it says it when a migration
    /// comes: its agent answers it in the `MigrationTarget` of
    /// `PrepareIncoming`, checked at both ends, rather than in what it
    /// registers. So only the two nodes of a migration ever see it, a
    /// changed setting takes effect at the agent's restart without the
    /// node registering anew, and a node that takes no migrations says so
    /// when asked (`Unsupported`) instead of advertising nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_migration_uri: Option<String>,
    /// The address other nodes' QEMU sends a migration's memory and disk
    /// to (`ZIXIAO_LIBVIRT_MIGRATION_ADDRESS`,
    /// `--libvirt-migration-address`; default: the node's underlay
    /// address). Without one the node takes no live migrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_migration_address: Option<std::net::IpAddr>,
    /// MiB of each instance's log kept on disk (`ZIXIAO_LOG_LIMIT_MIB`,
    /// `--log-limit-mib`; default 16).
    pub log_limit_mib: Option<u64>,
}

fn read<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            format!("cannot read the config file: {e}"),
        )
    })?;
    serde_yaml::from_str(&text)
        .map_err(|e| Error::invalid(path.display().to_string(), format!("invalid config: {e}")))
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads one variable through `env` (the process environment in practice).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, ignoring empty variables.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ServerConfig {
    /// Reads `path` (defaults when `None`) and applies `env`'s overrides.
    /// Errors: `InvalidArgument` naming the file and what is wrong.
    pub fn load(path: Option<&Path>, env: Env<'_>) -> Result<Self> {
        let mut config: ServerConfig = read(path)?;
        if let Some(v) = env("ZIXIAO_SERVER_ID") {
            config.server.id = Some(v);
        }
        if let Some(v) = env("ZIXIAO_SERVER_LISTEN") {
            config.server.listen = v;
        }
        if let Some(v) = env("ZIXIAO_ETCD_ENDPOINTS") {
            config.store.etcd = list(&v);
        }
        if let Some(v) = env("ZIXIAO_ETCD_PREFIX") {
            config.store.etcd_prefix = v;
        }
        if let Some(v) = env("ZIXIAO_STATS_SAMPLE_MS") {
            config.timing.stats_sample_ms = v.trim().parse().map_err(|_| {
                Error::invalid(
                    "ZIXIAO_STATS_SAMPLE_MS",
                    format!("`{v}` is not a whole number of milliseconds"),
                )
            })?;
        }
        config.timing.validate()?;
        Ok(config)
    }
}

impl DriversSection {
    /// Where other nodes' libvirtd send live migrations to this node:
    /// the configured URI and address, the address defaulting to
    /// `underlay` (the node's address between nodes) and the URI to
    /// libvirtd's TLS listener there (`qemu+tls://ADDRESS/system`). `None`
    /// without an address: the node takes no live migrations.
    pub fn libvirt_migration(
        &self,
        underlay: Option<std::net::IpAddr>,
    ) -> Option<(String, std::net::IpAddr)> {
        let address = self.libvirt_migration_address.or(underlay)?;
        let uri = self.libvirt_migration_uri.clone().unwrap_or_else(|| {
            let host = match address {
                std::net::IpAddr::V4(a) => a.to_string(),
                std::net::IpAddr::V6(a) => format!("[{a}]"),
            };
            format!("qemu+tls://{host}/system")
        });
        Some((uri, address))
    }
}

impl AgentConfig {
    /// Reads `path` (defaults when `None`) and applies `env`'s overrides.
    /// Errors: `InvalidArgument` naming the file and what is wrong.
    pub fn load(path: Option<&Path>, env: Env<'_>) -> Result<Self> {
        let mut config: AgentConfig = read(path)?;
        if let Some(v) = env("ZIXIAO_NODE_NAME") {
            config.node.name = Some(v);
        }
        if let Some(v) = env("ZIXIAO_NODE_REGION") {
            config.node.region = v;
        }
        if let Some(v) = env("ZIXIAO_NODE_ZONE") {
            config.node.zone = v;
        }
        if let Some(v) = env("ZIXIAO_SERVERS") {
            config.agent.servers = list(&v);
        }
        if let Some(v) = env("ZIXIAO_AGENT_LISTEN") {
            config.agent.listen = v;
        }
        if let Some(v) = env("ZIXIAO_AGENT_ADVERTISE") {
            config.agent.advertise = Some(v);
        }
        if let Some(v) = env("ZIXIAO_AGENT_UNDERLAY") {
            config.agent.underlay = Some(v);
        }
        if let Some(v) = env("ZIXIAO_STATE_DIR") {
            config.agent.state_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ZIXIAO_CONTAINERD_SOCKET") {
            config.drivers.containerd_socket = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ZIXIAO_LIBVIRT_URI") {
            config.drivers.libvirt_uri = Some(v);
        }
        if let Some(v) = env("ZIXIAO_LIBVIRT_MIGRATION_URI") {
            config.drivers.libvirt_migration_uri = Some(v);
        }
        if let Some(v) = env("ZIXIAO_LIBVIRT_MIGRATION_ADDRESS") {
            config.drivers.libvirt_migration_address = Some(v.trim().parse().map_err(|_| {
                Error::invalid(
                    "ZIXIAO_LIBVIRT_MIGRATION_ADDRESS",
                    format!("`{v}` is not an IP address"),
                )
            })?);
        }
        config.timing.validate()?;
        crate::onboarding::SmokeTest::try_from(&config.onboarding)?;
        if let Some(mib) = config.drivers.log_limit_mib {
            if !(1..=MAX_LOG_LIMIT_MIB).contains(&mib) {
                return Err(Error::invalid(
                    "drivers.log_limit_mib",
                    format!("{mib} is not between 1 and {MAX_LOG_LIMIT_MIB} MiB"),
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }

    #[test]
    fn the_documented_examples_load_and_the_environment_wins() {
        let none = |_: &str| None;
        let server = ServerConfig::load(Some(&example("server.yaml")), &none).expect("server.yaml");
        assert_eq!(server.store.etcd.len(), 3);
        assert_eq!(server.timing, Timing::default());
        let env = |name: &str| match name {
            "ZIXIAO_ETCD_ENDPOINTS" => {
                Some("http://10.0.0.1:2379, http://10.0.0.2:2379".to_owned())
            }
            "ZIXIAO_NODE_ZONE" => Some("zone-b".to_owned()),
            "ZIXIAO_AGENT_UNDERLAY" => Some("10.0.0.21".to_owned()),
            _ => None,
        };
        let server = ServerConfig::load(Some(&example("server.yaml")), &env).expect("server.yaml");
        assert_eq!(
            server.store.etcd,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        let agent = AgentConfig::load(Some(&example("agent.yaml")), &env).expect("agent.yaml");
        assert_eq!(agent.node.zone, "zone-b");
        assert_eq!(agent.node.region, "eu-west");
        assert!(!agent.agent.servers.is_empty());
        assert_eq!(agent.agent.underlay.as_deref(), Some("10.0.0.21"));
    }

    #[test]
    fn a_bad_file_names_itself_and_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, "node:\n  nmae: x\n").expect("write");
        let error = AgentConfig::load(Some(&path), &|_| None).expect_err("typo");
        assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
        assert!(error.to_string().contains("nmae"), "{error}");
        std::fs::write(&path, "timing:\n  fence_after_ms: 5000\n").expect("write");
        let error = AgentConfig::load(Some(&path), &|_| None).expect_err("unsafe timing");
        assert!(error.to_string().contains("fence_after_ms"), "{error}");
        std::fs::write(&path, "drivers:\n  log_limit_mib: 0\n").expect("write");
        let error = AgentConfig::load(Some(&path), &|_| None).expect_err("no log at all");
        assert!(
            error.to_string().contains("drivers.log_limit_mib"),
            "{error}"
        );
        for (text, field) in [
            ("onboarding:\n  timeout_ms: 0\n", "onboarding.timeout_ms"),
            (
                "onboarding:\n  container_command: [sleep, '1']\n",
                "onboarding.container_command",
            ),
            (
                "onboarding:\n  container_image: 'Not An Image'\n",
                "onboarding.container_image",
            ),
            ("onboarding:\n  microvm: {initrd: /i}\n", "kernel"),
        ] {
            std::fs::write(&path, text).expect("write");
            let error = AgentConfig::load(Some(&path), &|_| None).expect_err(field);
            assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
            assert!(error.to_string().contains(field), "{field}: {error}");
        }
        std::fs::write(&path, "drivers:\n  log_limit_mib: 4\n").expect("write");
        let agent = AgentConfig::load(Some(&path), &|_| None).expect("a limit");
        assert_eq!(agent.drivers.log_limit_mib, Some(4));
    }

    #[test]
    fn where_a_node_takes_live_migrations_is_configured_or_derived_from_its_underlay() {
        let underlay: std::net::IpAddr = "10.0.0.21".parse().expect("ip");
        let unset = DriversSection::default();
        assert_eq!(
            unset.libvirt_migration(None),
            None,
            "no address: none taken"
        );
        assert_eq!(
            unset.libvirt_migration(Some(underlay)),
            Some(("qemu+tls://10.0.0.21/system".to_owned(), underlay))
        );
        let v6: std::net::IpAddr = "fd00::21".parse().expect("ip");
        assert_eq!(
            unset.libvirt_migration(Some(v6)),
            Some(("qemu+tls://[fd00::21]/system".to_owned(), v6))
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            "drivers:\n  libvirt_migration_uri: qemu+tcp://node-b/system\n  \
             libvirt_migration_address: 10.0.0.22\n",
        )
        .expect("write");
        let agent = AgentConfig::load(Some(&path), &|_| None).expect("agent.yaml");
        assert_eq!(
            agent.drivers.libvirt_migration(Some(underlay)),
            Some((
                "qemu+tcp://node-b/system".to_owned(),
                "10.0.0.22".parse().expect("ip")
            ))
        );
        let env =
            |name: &str| (name == "ZIXIAO_LIBVIRT_MIGRATION_ADDRESS").then(|| "node-b".to_owned());
        let error = AgentConfig::load(Some(&path), &env).expect_err("not an address");
        assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
        assert!(
            error
                .to_string()
                .contains("ZIXIAO_LIBVIRT_MIGRATION_ADDRESS"),
            "{error}"
        );
    }

    #[test]
    fn the_stats_sampling_interval_comes_from_the_environment_and_is_checked() {
        let sample = |value: &'static str| {
            move |name: &str| (name == "ZIXIAO_STATS_SAMPLE_MS").then(|| value.to_owned())
        };
        let server = ServerConfig::load(None, &sample("500")).expect("500 ms");
        assert_eq!(server.timing.stats_sample_ms, 500);
        for bad in ["0", "soon", "-5"] {
            let error = ServerConfig::load(None, &sample(bad)).expect_err(bad);
            assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
            assert!(
                error.to_string().contains("stats_sample_ms")
                    || error.to_string().contains("ZIXIAO_STATS_SAMPLE_MS"),
                "{error}"
            );
        }
    }
}
