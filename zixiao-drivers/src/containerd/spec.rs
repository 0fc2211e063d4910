//! The OCI runtime spec of a container, generated from its [`InstanceSpec`](zixiao_core::InstanceSpec)
//! and its image's config: what `ctr run` and nerdctl would give it, with
//! the instance's limits for the kernel to enforce.
//!
//! Knobs `InstanceSpec` has no field for yet (a pids limit, a read-only
//! rootfs, the working directory) come from the instance's labels
//! ([`PIDS_LIMIT_LABEL`], [`READ_ONLY_ROOTFS_LABEL`], [`WORKDIR_LABEL`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use zixiao_core::{DriverError, Instance};

use super::error::invalid;

/// Label giving a container's pids limit (a positive integer); without it the
/// driver's default applies.
pub const PIDS_LIMIT_LABEL: &str = "zixiao.io/pids-limit";
/// Label that, set to `true`, mounts a container's root filesystem read-only.
pub const READ_ONLY_ROOTFS_LABEL: &str = "zixiao.io/read-only-rootfs";
/// Label giving a container's working directory (an absolute path), in place
/// of the image's.
pub const WORKDIR_LABEL: &str = "zixiao.io/workdir";

/// The smallest memory limit the driver accepts. runc's init alone uses
/// about 2.2 MiB (peak 2.5 MiB) before the workload starts; measured with
/// runc 1.1.5, a 1 MiB limit fails with "unable to set memory limit" and
/// 2 MiB runs `echo`. 4 MiB leaves the workload a little room.
pub const MIN_MEMORY_MIB: u64 = 4;

/// The period of the CFS quota that enforces `cpu_limit`, in microseconds.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup v1 CPU shares one core's request is worth (runc turns
/// shares into cgroup v2's `cpu.weight`), as Kubernetes counts them.
const SHARES_PER_CORE: u64 = 1024;
/// The fewest shares the kernel accepts.
const MIN_CPU_SHARES: u64 = 2;

/// `PATH` when the image sets none, as Docker and containerd default it.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The part of an OCI image config a container starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct ImageConfig {
    /// `KEY=value` pairs.
    pub(crate) env: Option<Vec<String>>,
    /// Entrypoint.
    pub(crate) entrypoint: Option<Vec<String>>,
    /// Default arguments.
    pub(crate) cmd: Option<Vec<String>>,
    /// Working directory.
    pub(crate) working_dir: Option<String>,
    /// User, `uid[:gid]` (names need the image's /etc/passwd; see [`process_user`]).
    pub(crate) user: Option<String>,
}

/// Settings of the driver that shape every spec.
#[derive(Debug, Clone)]
pub(crate) struct SpecDefaults {
    /// The pids limit when the instance has no [`PIDS_LIMIT_LABEL`].
    pub(crate) pids_limit: i64,
    /// The cgroup path, under which the kernel enforces the limits.
    pub(crate) cgroups_path: String,
}

/// The command, environment and working directory a container runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Merges the instance's command and environment over the image's.
/// `spec.command` replaces the image's entrypoint and cmd, as its doc says.
pub(crate) fn process(instance: &Instance, image: &ImageConfig) -> Result<Process, DriverError> {
    let spec = &instance.spec;
    let args = if spec.command.is_empty() {
        let mut args = image.entrypoint.clone().unwrap_or_default();
        args.extend(image.cmd.clone().unwrap_or_default());
        args
    } else {
        spec.command.clone()
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid(
            "spec.command",
            "the image has no entrypoint or cmd, so the instance must give a command",
        ));
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for pair in image.env.iter().flatten() {
        let (key, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        if env.insert(key.to_owned(), value.to_owned()).is_none() {
            order.push(key.to_owned());
        }
    }
    if !env.contains_key("PATH") {
        let (key, value) = DEFAULT_PATH.split_once('=').unwrap_or(("PATH", ""));
        env.insert(key.to_owned(), value.to_owned());
        order.insert(0, key.to_owned());
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return Err(invalid(
                "spec.env",
                format!("`{key}` is not a valid variable name"),
            ));
        }
        if env.insert(key.clone(), value.clone()).is_none() {
            order.push(key.clone());
        }
    }
    let env = order
        .into_iter()
        .map(|key| {
            let value = env.get(&key).cloned().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect();
    let cwd = match instance.labels.get(WORKDIR_LABEL) {
        Some(dir) if dir.starts_with('/') => dir.clone(),
        Some(dir) => {
            return Err(invalid(
                &format!("labels.{WORKDIR_LABEL}"),
                format!("`{dir}` is not an absolute path"),
            ))
        }
        None => image
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
    };
    let (uid, gid) = process_user(image.user.as_deref().unwrap_or(""))?;
    Ok(Process {
        args,
        env,
        cwd,
        uid,
        gid,
    })
}

/// The image's user as numbers. Names would need the image's /etc/passwd,
/// which the driver does not read, so only `root` and numeric ids work.
pub(crate) fn process_user(user: &str) -> Result<(u32, u32), DriverError> {
    let (user, group) = user.split_once(':').unwrap_or((user, ""));
    let number = |s: &str, root: &str| -> Result<u32, DriverError> {
        if s.is_empty() || s == root {
            return Ok(0);
        }
        s.parse().map_err(|_| {
            invalid(
                "image config User",
                format!("`{s}` is not numeric; only numeric users and groups are supported"),
            )
        })
    };
    Ok((number(user, "root")?, number(group, "root")?))
}

/// The limits the kernel enforces for the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The memory limit: `memory_limit_mib`, else `memory_mib`.
    pub(crate) memory_bytes: i64,
    /// What the kernel protects from reclaim (`memory.low`): the
    /// reservation, when the limit is above it.
    pub(crate) memory_reservation_bytes: Option<i64>,
    /// CFS quota in microseconds per [`CPU_PERIOD_US`], from `cpu_limit`;
    /// `None` is unlimited.
    pub(crate) cpu_quota_us: Option<i64>,
    /// The container's share of CPU under contention, from its request.
    pub(crate) cpu_shares: u64,
    pub(crate) pids: i64,
    pub(crate) read_only_rootfs: bool,
}

impl Limits {
    /// The memory and CPU part of the OCI `LinuxResources`: what a create
    /// starts with and a live resize changes.
    pub(crate) fn resources(&self) -> Value {
        let mut cpu = json!({ "period": CPU_PERIOD_US, "shares": self.cpu_shares });
        if let Some(quota) = self.cpu_quota_us {
            cpu["quota"] = json!(quota);
        }
        let mut memory = json!({ "limit": self.memory_bytes });
        if let Some(reservation) = self.memory_reservation_bytes {
            memory["reservation"] = json!(reservation);
        }
        json!({ "memory": memory, "cpu": cpu })
    }
}

/// Checks the instance's limits against what runc can honour.
pub(crate) fn limits(instance: &Instance, defaults: &SpecDefaults) -> Result<Limits, DriverError> {
    let spec = &instance.spec;
    if spec.memory_mib < MIN_MEMORY_MIB {
        return Err(invalid(
            "spec.memory_mib",
            format!(
                "{} MiB is below the {MIN_MEMORY_MIB} MiB a container needs to start",
                spec.memory_mib
            ),
        ));
    }
    let bytes = |field: &str, mib: u64| {
        mib.checked_mul(1024 * 1024)
            .and_then(|b| i64::try_from(b).ok())
            .ok_or_else(|| invalid(field, format!("{mib} MiB is too large")))
    };
    let reserved = bytes("spec.memory_mib", spec.memory_mib)?;
    let (memory_bytes, memory_reservation_bytes) = match spec.memory_limit_mib {
        Some(limit) if limit > spec.memory_mib => {
            (bytes("spec.memory_limit_mib", limit)?, Some(reserved))
        }
        _ => (reserved, None),
    };
    let cpu_quota_us = spec
        .cpu_limit
        .map(|limit| i64::from(limit.millis()) * CPU_PERIOD_US as i64 / 1000);
    let cpu_shares = (u64::from(spec.cpus.millis()) * SHARES_PER_CORE / 1000).max(MIN_CPU_SHARES);
    let pids = match instance.labels.get(PIDS_LIMIT_LABEL) {
        None => defaults.pids_limit,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(invalid(
                    &format!("labels.{PIDS_LIMIT_LABEL}"),
                    format!("`{raw}` is not a positive number of processes"),
                ))
            }
        },
    };
    let read_only_rootfs = match instance
        .labels
        .get(READ_ONLY_ROOTFS_LABEL)
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(
                &format!("labels.{READ_ONLY_ROOTFS_LABEL}"),
                format!("`{other}` is not true or false"),
            ))
        }
    };
    Ok(Limits {
        memory_bytes,
        memory_reservation_bytes,
        cpu_quota_us,
        cpu_shares,
        pids,
        read_only_rootfs,
    })
}

/// The container's hostname: its name, cut to the kernel's 64-byte limit.
fn hostname(instance: &Instance) -> String {
    let mut name: String = instance
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    name
}

/// The capabilities containerd's default spec grants.
const CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI runtime spec (as JSON) for `instance` on `image`. Pure.
/// Errors: `InvalidArgument` naming the field.
pub(crate) fn runtime_spec(
    instance: &Instance,
    image: &ImageConfig,
    defaults: &SpecDefaults,
) -> Result<Value, DriverError> {
    let process = process(instance, image)?;
    let limits = limits(instance, defaults)?;
    let mut resources = limits.resources();
    resources["pids"] = json!({ "limit": limits.pids });
    resources["devices"] = json!([{ "allow": false, "access": "rwm" }]);
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": process.uid, "gid": process.gid },
            "args": process.args,
            "env": process.env,
            "cwd": process.cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": limits.read_only_rootfs },
        "hostname": hostname(instance),
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/run", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        ],
        "linux": {
            "cgroupsPath": defaults.cgroups_path,
            "resources": resources,
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                { "type": "mount" }, { "type": "network" },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::{ErrorKind, InstanceSpec, InstanceStatus};

    fn instance(spec: InstanceSpec) -> Instance {
        let mut instance = Instance::new(
            "0b6f4c8e",
            zixiao_core::CreateInstance::new("web", spec),
            chrono::Utc::now(),
        );
        instance.status = InstanceStatus::Scheduled;
        instance.revision = 1;
        instance
    }

    fn defaults() -> SpecDefaults {
        SpecDefaults {
            pids_limit: 512,
            cgroups_path: "/zixiao/0b6f4c8e".into(),
        }
    }

    fn busybox() -> ImageConfig {
        ImageConfig {
            env: Some(vec!["PATH=/bin".into(), "HOME=/root".into()]),
            cmd: Some(vec!["/bin/sh".into()]),
            working_dir: Some("/".into()),
            ..ImageConfig::default()
        }
    }

    #[test]
    fn command_replaces_the_images_and_env_overrides() {
        let mut spec = InstanceSpec::container("busybox")
            .with_command(["echo", "hi"])
            .with_size(2, 64);
        spec.cpu_limit = Some("2".parse().unwrap());
        spec.env.insert("HOME".into(), "/tmp".into());
        spec.env.insert("A".into(), "1".into());
        let value = runtime_spec(&instance(spec), &busybox(), &defaults()).expect("spec");
        assert_eq!(value["process"]["args"], json!(["echo", "hi"]));
        assert_eq!(
            value["process"]["env"],
            json!(["PATH=/bin", "HOME=/tmp", "A=1"])
        );
        assert_eq!(
            value["linux"]["resources"]["memory"]["limit"],
            json!(64 * 1024 * 1024)
        );
        assert_eq!(value["linux"]["resources"]["cpu"]["quota"], json!(200_000));
        assert_eq!(value["linux"]["resources"]["cpu"]["shares"], json!(2048));
        assert_eq!(value["linux"]["resources"]["pids"]["limit"], json!(512));
        assert_eq!(value["hostname"], json!("web"));
        assert_eq!(value["root"]["readonly"], json!(false));
    }

    #[test]
    fn image_entrypoint_and_cmd_run_without_a_command() {
        let image = ImageConfig {
            entrypoint: Some(vec!["/bin/busybox".into()]),
            cmd: Some(vec!["sh".into()]),
            ..ImageConfig::default()
        };
        let p = process(&instance(InstanceSpec::container("busybox")), &image).expect("process");
        assert_eq!(p.args, ["/bin/busybox", "sh"]);
        assert!(p.env[0].starts_with("PATH="));
    }

    #[test]
    fn labels_set_pids_read_only_and_workdir() {
        let mut i = instance(InstanceSpec::container("busybox"));
        i.labels.insert(PIDS_LIMIT_LABEL.into(), "7".into());
        i.labels
            .insert(READ_ONLY_ROOTFS_LABEL.into(), "true".into());
        i.labels.insert(WORKDIR_LABEL.into(), "/tmp".into());
        let value = runtime_spec(&i, &busybox(), &defaults()).expect("spec");
        assert_eq!(value["linux"]["resources"]["pids"]["limit"], json!(7));
        assert_eq!(value["root"]["readonly"], json!(true));
        assert_eq!(value["process"]["cwd"], json!("/tmp"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases: Vec<(Instance, &str)> = vec![
            (
                instance(InstanceSpec::container("b").with_size(1, 2)),
                "spec.memory_mib",
            ),
            (
                {
                    let mut i = instance(InstanceSpec::container("b"));
                    i.labels.insert(PIDS_LIMIT_LABEL.into(), "0".into());
                    i
                },
                "labels.zixiao.io/pids-limit",
            ),
            (instance(InstanceSpec::container("b")), "spec.command"),
        ];
        for (i, field) in cases {
            let image = if field == "spec.command" {
                ImageConfig::default()
            } else {
                busybox()
            };
            match runtime_spec(&i, &image, &defaults()) {
                Err(e @ DriverError::InvalidArgument { .. }) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
                    assert!(e.to_string().contains(field), "{e} should name {field}");
                }
                other => panic!("expected InvalidArgument on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn users_must_be_numeric() {
        assert_eq!(process_user("").expect("root"), (0, 0));
        assert_eq!(process_user("1000:100").expect("ids"), (1000, 100));
        assert!(process_user("nobody").is_err());
    }
}
