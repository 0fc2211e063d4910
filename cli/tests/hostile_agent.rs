//! A hostile caller of a node's agent, over real gRPC with valid
//! credentials: a server certificate of the cluster's CA (what every agent
//! accepts), used to send forged AgentService calls to a `zixiao agent`
//! that runs real containers in containerd. Ids and snapshot names that
//! are paths (`/etc`, `../..`), a known id with another spec (image, command, a host file as
//! a VM's disk), calls about an instance the cluster placed on another
//! node, an orphan removal of a live instance, networks naming links that
//! are not Zixiao's (`lo`, `eth0`, a canary of the test's) or a bridge with
//! a newline, a well-formed network the cluster does not hold, and the
//! cluster's network as another installation on the host would have it.
//! Each is refused with its kind (reads such as GetRunningSize too) or runs
//! the cluster's copy; afterwards the paths exist, the links, addresses and nftables tables outside
//! Zixiao's are as before, no bridge was made or removed, the containers
//! run what the cluster stored, and the store holds nothing new. The
//! cluster's own network delete still removes its bridge.
//!
//! Needs etcd, containerd and the busybox image of `scripts/services/*.sh`;
//! skips with a reason elsewhere (and fails in CI, where
//! ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "etcd")]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zixiao_api::pb;
use zixiao_api::pb::agent_service_client::AgentServiceClient;
use zixiao_core::model::{BridgeName, InstallationId, NetworkName};
use zixiao_core::{Error, ErrorKind, Instance, Network, Node};
use zixiao_testing::output::{json, text};
use zixiao_testing::runtimes::ContainerdNamespace;

use support::{
    agent, agent_with_networks, cluster, containerd, import_busybox, start_agent, wait_ready,
    Cluster,
};

/// Awaits an AgentService call and turns its status into the model's error.
macro_rules! call {
    ($call:expr) => {
        $call
            .await
            .map(|_| ())
            .map_err(|status| zixiao_api::status::to_error(status, "the agent"))
    };
}

/// Checks that `result` (of the forged call `what`) is an error of `kind`.
fn assert_refused(what: &str, result: Result<(), Error>, kind: ErrorKind) {
    match result {
        Ok(()) => panic!("{what}: accepted"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: {e}"),
    }
}

/// `ip` or `nft` output, which must succeed.
fn host(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// What a forged network call could change on this host, leaving out
/// Zixiao's own links and tables (other tests on the machine make and
/// remove theirs meanwhile): every other link with its flags and
/// addresses, and every other nftables table.
fn host_view() -> (Vec<String>, Vec<String>) {
    let links = host("ip", &["-o", "addr", "show"])
        .lines()
        .chain(host("ip", &["-o", "link", "show"]).lines())
        .filter(|line| {
            let name = line.split_whitespace().nth(1).unwrap_or_default();
            !name.starts_with("zx")
        })
        // Counters and the queue state change as traffic flows.
        .map(|line| {
            line.split_whitespace()
                .take_while(|word| *word != "qlen" && *word != "valid_lft")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let tables = host("nft", &["list", "tables"])
        .lines()
        .filter(|line| !line.contains(" zx_"))
        .map(str::to_owned)
        .collect();
    (links, tables)
}

/// A link and a table that are not Zixiao's, which a forged network call
/// must leave alone; removed when dropped.
struct Canary {
    link: String,
    table: String,
}

impl Canary {
    fn new() -> Canary {
        let canary = Canary {
            link: format!("hx{:x}", std::process::id()),
            table: format!("hostile_{}", std::process::id()),
        };
        host("ip", &["link", "add", &canary.link, "type", "bridge"]);
        host("nft", &["add", "table", "inet", &canary.table]);
        canary
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}

/// What the test leaves on the host, removed when dropped (before the
/// agents, so also after a failed assertion): its instances and network,
/// through the cluster, and a container of the forged id, made only if an
/// agent ever creates what the cluster does not hold.
struct Leftovers<'a> {
    cluster: &'a Cluster,
    socket: &'a str,
    instances: [&'static str; 2],
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        for name in self.instances {
            let _ = self
                .cluster
                .run(&self.cluster.admin(), &["instance", "delete", name]);
        }
        let _ = self
            .cluster
            .run(&self.cluster.admin(), &["network", "delete", "lan"]);
        let ctr = |args: &[&str]| {
            let _ = Command::new("ctr")
                .args(["-a", self.socket, "-n", "zixiao"])
                .args(args)
                .output();
        };
        ctr(&["tasks", "kill", "-s", "SIGKILL", UNKNOWN_ID]);
        ctr(&["tasks", "delete", "--force", UNKNOWN_ID]);
        ctr(&["containers", "delete", UNKNOWN_ID]);
    }
}

/// A well-formed instance id the cluster does not hold.
const UNKNOWN_ID: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";

/// Creates a container `name` in `zone` (so on that zone's node) running
/// `sleep`, and answers it as the cluster stores it.
fn create(cluster: &Cluster, name: &str, zone: &str) -> Instance {
    let created = json(cluster.run(
        &cluster.admin(),
        &[
            "instance",
            "create",
            "--name",
            name,
            "--type",
            "container",
            "--image",
            "busybox",
            "--memory",
            "32",
            "--zone",
            zone,
            "--",
            "sleep",
            "300",
        ],
    ));
    assert_eq!(created["status"], "running", "{created}");
    serde_json::from_value(created).expect("an instance")
}

/// The command line of instance `id`'s container's process.
fn cmdline(containerd: &ContainerdNamespace, id: &str) -> String {
    let tasks = containerd.tasks().expect("tasks");
    let task = tasks
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no task of {id}: {tasks:?}"));
    assert_eq!(task.status, "RUNNING", "{task:?}");
    std::fs::read(format!("/proc/{}/cmdline", task.pid))
        .map(|raw| text(&raw).replace('\0', " "))
        .expect("cmdline")
}

/// Another installation than the cluster's (one on the same host).
const OTHER_INSTALLATION: &str = "0123456789abcdef";

/// A network named `name` with bridge `bridge`, otherwise well-formed.
fn network(name: &str, bridge: &str) -> pb::Network {
    pb::Network {
        name: name.to_owned(),
        bridge: bridge.to_owned(),
        installation: OTHER_INSTALLATION.to_owned(),
        created_at: Some(Default::default()),
        ..Default::default()
    }
}

/// Network `name` of `installation`, with the bridge it derives.
fn network_of(installation: &str, name: &str) -> pb::Network {
    let installation = InstallationId::try_from(installation).expect("an installation");
    let bridge = BridgeName::of(&installation, &NetworkName::try_from(name).expect("a name"));
    pb::Network {
        installation: installation.to_string(),
        ..network(name, &bridge)
    }
}

/// Whether this host has a link named `name`.
fn has_link(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn with_id(instance: &pb::Instance, id: &str) -> pb::Instance {
    pb::Instance {
        id: id.to_owned(),
        ..instance.clone()
    }
}

fn request(instance: pb::Instance) -> pb::AgentInstanceRequest {
    pb::AgentInstanceRequest {
        instance: Some(instance),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_agent_calls_are_refused_or_run_the_clusters_copy_and_change_nothing() {
    let Some((socket, busybox)) = containerd() else {
        return;
    };
    let Some(cluster) = cluster().await else {
        return;
    };
    let admin = cluster.admin();
    let token = json(cluster.run(
        &admin,
        &["token", "create", "--role", "agent", "--reusable"],
    ));
    let token = token["secret"].as_str().expect("secret").to_owned();
    // worker-1 sets up networks on this host; worker-2 shares its containerd.
    let mut first = agent_with_networks(&cluster, &socket, "worker-1", Some(&token));
    first.args(["--zone", "one"]);
    let _first = start_agent(first);
    let mut second = agent(&cluster, &socket, "worker-2", Some(&token));
    second.args(["--zone", "two"]);
    let _second = start_agent(second);
    wait_ready(&cluster, "worker-1").await;
    wait_ready(&cluster, "worker-2").await;
    import_busybox(&cluster, &socket, &busybox);
    let _leftovers = Leftovers {
        cluster: &cluster,
        socket: &socket,
        instances: ["here", "there"],
    };
    let here = create(&cluster, "here", "one");
    let there = create(&cluster, "there", "two");
    assert_eq!(here.node.as_deref(), Some("worker-1"));
    assert_eq!(there.node.as_deref(), Some("worker-2"));
    let containerd =
        ContainerdNamespace::new(&socket, "zixiao").only([here.id.clone(), there.id.clone()]);
    let commands = (
        cmdline(&containerd, &here.id),
        cmdline(&containerd, &there.id),
    );
    let record = cluster
        .dir
        .join("agent-worker-1/instances")
        .join(format!("{}.json", here.id));
    let recorded = std::fs::read(&record).expect("the node's record");
    // A network of the cluster's, set up on worker-1 (which reads it from
    // the cluster before it touches the host).
    let pid = std::process::id();
    let subnet = format!("10.{}.{}.0/24", 200 + pid % 50, (pid / 50) % 250);
    let lan: Network = serde_json::from_value(json(
        cluster.run(&admin, &["network", "create", "lan", "--subnet", &subnet]),
    ))
    .expect("a network");
    let installation = lan.installation.clone().expect("an installation");
    assert!(has_link(&lan.bridge), "lan's bridge is set up");

    // The forger: a server certificate of the cluster's CA, calling
    // worker-1's AgentService over mutual TLS.
    let node: Node =
        serde_json::from_value(json(cluster.run(&admin, &["node", "get", "worker-1"])))
            .expect("a node");
    let pki = zixiao_auth::Pki::load(&cluster.pki).expect("pki");
    let issued = pki
        .issue_server(
            &["127.0.0.1".parse().expect("name")],
            Duration::from_secs(3600),
        )
        .expect("a server certificate");
    let credentials = issued.credentials().expect("credentials");
    let tls = pki
        .trust()
        .client_config(
            Some(&credentials),
            zixiao_auth::ExpectedPeer::Node(
                zixiao_auth::NodeName::try_from("worker-1").expect("name"),
            ),
        )
        .expect("config");
    let channel =
        zixiao_api::remote::channel_with(&node.address, Duration::from_secs(60), Some(tls))
            .expect("channel");
    let mut forger = AgentServiceClient::new(channel);
    // The forger is let in: its calls reach the AgentService.
    call!(forger.list_local_instances(())).expect("a server's call");

    let canary = Canary::new();
    let host_before = host_view();
    let store_before = cluster.snapshot().await;
    let genuine = pb::Instance::from(here.clone());

    // Ids that are paths never reach a driver.
    for id in ["/etc", "../..", "/", "..", "here"] {
        let forged = with_id(&genuine, id);
        assert_refused(
            &format!("delete {id}"),
            call!(forger.delete_instance(request(forged.clone()))),
            ErrorKind::InvalidArgument,
        );
        assert_refused(
            &format!("stop {id}"),
            call!(forger.stop_instance(pb::StopOnNodeRequest {
                instance: Some(forged.clone()),
                grace: None,
            })),
            ErrorKind::InvalidArgument,
        );
        assert_refused(
            &format!("running size of {id}"),
            call!(forger.get_running_size(request(forged.clone()))),
            ErrorKind::InvalidArgument,
        );
        assert_refused(
            &format!("create {id}"),
            call!(forger.create_instance(request(forged))),
            ErrorKind::InvalidArgument,
        );
        assert_refused(
            &format!("remove orphan {id}"),
            call!(forger.remove_orphan(pb::AgentOrphanRequest {
                r#type: pb::InstanceType::Container as i32,
                id: id.to_owned(),
            })),
            ErrorKind::InvalidArgument,
        );
    }

    // Snapshot names that are paths never reach a driver either: refused
    // for the name before the node's own instance is looked up.
    for name in ["../../etc", "/", "..", ".hidden", "a/b", ""] {
        let snapshot = || pb::AgentSnapshotRequest {
            instance: Some(genuine.clone()),
            snapshot: name.to_owned(),
        };
        for (what, refused) in [
            ("snapshot", call!(forger.create_snapshot(snapshot()))),
            ("revert to", call!(forger.revert_snapshot(snapshot()))),
            ("delete snapshot", call!(forger.delete_snapshot(snapshot()))),
        ] {
            assert_refused(
                &format!("{what} {name:?}"),
                refused,
                ErrorKind::InvalidArgument,
            );
        }
    }

    // A well-formed id the cluster does not know: nothing to act on.
    let unknown = with_id(&genuine, UNKNOWN_ID);
    assert_refused(
        "create an unknown id",
        call!(forger.create_instance(request(unknown.clone()))),
        ErrorKind::NotFound,
    );
    assert_refused(
        "running size of an unknown id",
        call!(forger.get_running_size(request(unknown.clone()))),
        ErrorKind::NotFound,
    );
    assert_refused(
        "delete an unknown id",
        call!(forger.delete_instance(request(unknown))),
        ErrorKind::NotFound,
    );

    // The instance worker-2 runs, named to worker-1 (their containerd is
    // one): to worker-1 it is not there.
    let elsewhere = pb::Instance::from(there.clone());
    assert_refused(
        "delete an instance of another node",
        call!(forger.delete_instance(request(elsewhere.clone()))),
        ErrorKind::NotFound,
    );
    assert_refused(
        "running size of an instance of another node",
        call!(forger.get_running_size(request(elsewhere.clone()))),
        ErrorKind::NotFound,
    );
    // Its own running container: a container takes a size at once, so
    // there is no other size to report.
    let size = forger
        .get_running_size(request(genuine.clone()))
        .await
        .expect("running size");
    assert_eq!(size.into_inner().size, None);
    assert_refused(
        "stop an instance of another node",
        call!(forger.stop_instance(pb::StopOnNodeRequest {
            instance: Some(with_id(&genuine, &there.id)),
            grace: None,
        })),
        ErrorKind::NotFound,
    );

    // A live instance of this node is no orphan.
    assert_refused(
        "remove a live instance as an orphan",
        call!(forger.remove_orphan(pb::AgentOrphanRequest {
            r#type: pb::InstanceType::Container as i32,
            id: here.id.clone(),
        })),
        ErrorKind::FailedPrecondition,
    );

    // A known id with another spec: another image and command, or a VM
    // whose disk is a host file. The agent runs the cluster's copy, so a
    // start of the running container is the no-op it is for the cluster's.
    let marker = cluster.dir.join("forged-command-ran");
    let mut forged = here.clone();
    forged.spec.image = Some("forged:latest".to_owned());
    forged.spec.command = vec!["touch".to_owned(), marker.display().to_string()];
    let mut as_vm = here.clone();
    as_vm.spec = zixiao_core::InstanceSpec::vm("/etc/shadow");
    for (what, forged) in [
        ("another command", forged),
        ("a host file as a VM's disk", as_vm),
    ] {
        call!(forger.start_instance(request(forged.clone().into())))
            .unwrap_or_else(|e| panic!("start with {what}: {e}"));
        call!(forger.create_instance(request(forged.into())))
            .unwrap_or_else(|e| panic!("create with {what}: {e}"));
    }

    // Networks naming links that are not Zixiao's, or a bridge with a
    // newline (which once reached an `nft -f` script).
    for bridge in [
        "lo",
        "eth0",
        canary.link.as_str(),
        "zxb0000000\nflush ruleset",
        "zxb00000000\n",
    ] {
        assert_refused(
            &format!("ensure network on {bridge:?}"),
            call!(forger.ensure_network(network("lan", bridge))),
            ErrorKind::InvalidArgument,
        );
        assert_refused(
            &format!("remove network on {bridge:?}"),
            call!(forger.remove_network(network("lan", bridge))),
            ErrorKind::InvalidArgument,
        );
    }
    // Well-formed networks the cluster does not hold: one of its own
    // installation it never created, and its `lan` as another installation
    // on this host would have it (whose objects it would reach).
    // (Its subnet is lan's third octet plus one: free on this host.)
    let (a, b) = (200 + pid % 50, (pid / 50) % 250 + 1);
    let ghost = pb::Network {
        subnets: vec![pb::Subnet {
            cidr: format!("10.{a}.{b}.0/24"),
            gateway: format!("10.{a}.{b}.1"),
            reserved: Vec::new(),
        }],
        ..network_of(installation.as_str(), "ghost")
    };
    let ensured = call!(forger.ensure_network(ghost.clone()));
    if ensured.is_ok() {
        // Take back what an agent that trusts its caller made.
        let _ = call!(forger.remove_network(ghost.clone()));
    }
    assert_refused(
        "ensure a network the cluster does not hold",
        ensured,
        ErrorKind::NotFound,
    );
    assert!(
        !has_link(&ghost.bridge),
        "a bridge was made for a forged network"
    );
    for forged in [
        network_of(OTHER_INSTALLATION, "lan"),
        pb::Network {
            installation: OTHER_INSTALLATION.to_owned(),
            ..pb::Network::from(lan.clone())
        },
    ] {
        let kind = if forged.bridge == lan.bridge.as_str() {
            // Decoding finds the bridge is not the one its installation derives.
            ErrorKind::InvalidArgument
        } else {
            ErrorKind::FailedPrecondition
        };
        assert_refused(
            "remove lan as another installation's",
            call!(forger.remove_network(forged.clone())),
            kind,
        );
        assert_refused(
            "ensure lan as another installation's",
            call!(forger.ensure_network(forged)),
            kind,
        );
    }
    assert!(has_link(&lan.bridge), "lan's bridge was removed");
    assert_refused(
        "a network name with a newline",
        call!(forger.remove_network(network("lan\nflush ruleset", "zxb00000000"))),
        ErrorKind::InvalidArgument,
    );

    // Nothing changed: the paths, the host's links and tables, the
    // containers and what they run, the node's record, the store.
    for path in [Path::new("/etc"), Path::new("/"), cluster.dir.as_path()] {
        assert!(path.is_dir(), "{} is gone", path.display());
    }
    assert!(cluster.dir.join("agent-worker-1").is_dir());
    assert_eq!(
        host_view(),
        host_before,
        "the host's links or tables changed"
    );
    assert!(host_before.0.iter().any(|l| l.contains(&canary.link)));
    assert!(host_before.1.iter().any(|t| t.contains(&canary.table)));
    assert!(!marker.exists(), "the forged command ran");
    assert_eq!(
        (
            cmdline(&containerd, &here.id),
            cmdline(&containerd, &there.id),
        ),
        commands,
        "a container runs something else"
    );
    let now_recorded: Instance =
        serde_json::from_slice(&std::fs::read(&record).expect("the node's record"))
            .expect("a record");
    let then_recorded: Instance = serde_json::from_slice(&recorded).expect("a record");
    assert_eq!(
        now_recorded.spec, then_recorded.spec,
        "the node's record changed"
    );
    assert_eq!(cluster.snapshot().await, store_before, "the store changed");
    // The cluster's own calls still work: deleting lan removes its bridge.
    json(cluster.run(&admin, &["network", "delete", "lan"]));
    assert!(!has_link(&lan.bridge), "lan's bridge outlived its network");

    // What taking the cluster's copy costs a call: an inspect asks a
    // server for the instance first, listing the node's records does not.
    let rounds = 20u32;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        call!(forger.list_local_instances(())).expect("list");
    }
    let local = started.elapsed() / rounds;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        call!(forger.inspect_instance(request(genuine.clone()))).expect("inspect");
    }
    let inspect = started.elapsed() / rounds;
    let unknown = with_id(&genuine, UNKNOWN_ID);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        call!(forger.inspect_instance(request(unknown.clone()))).expect_err("unknown");
    }
    let lookup = started.elapsed() / rounds;
    eprintln!(
        "agent calls over mTLS, mean of {rounds}: ListLocalInstances {local:?}, \
         InspectInstance of an unknown id (the stored-copy lookup alone) {lookup:?}, \
         InspectInstance (lookup and containerd) {inspect:?}"
    );
}
