//! Live resize on a real containerd: the new CPU and memory limits read
//! back from the container's cgroup files on the host, through the driver
//! and through the controller's `instance update`.

use std::time::Duration;

use zixiao_core::{
    Cpus, CreateInstance, Driver, ErrorKind, Instance, InstanceSpec, InstanceStatus,
    InstanceUpdate, RuntimeState,
};
use zixiao_drivers::containerd::ContainerdDriver;

use super::controller::{controller, converged};
use super::driver::cgroup_file;
use super::{busybox, fixture, instance};

/// The container's limits as the kernel enforces them: the CFS quota in
/// microseconds per 100 ms period, and the memory limit in bytes.
fn limits(driver: &ContainerdDriver, instance: &Instance) -> (String, String) {
    let path = driver.cgroups_path(instance);
    let quota = cgroup_file("cpu", &path, "cpu.cfs_quota_us", "cpu.max").expect("cpu cgroup");
    let memory =
        cgroup_file("memory", &path, "memory.limit_in_bytes", "memory.max").expect("memory cgroup");
    // cgroup v2 writes `quota period`; v1 the quota alone.
    let quota = quota
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    (quota, memory)
}

fn mib(n: u64) -> String {
    (n << 20).to_string()
}

/// `spec` reserving `cores` and capped at them, with `mib` of memory.
fn capped(spec: InstanceSpec, cores: u32, mib: u64) -> InstanceSpec {
    let mut spec = spec.with_size(cores, mib);
    spec.cpu_limit = Some(Cpus::cores(cores));
    spec
}

/// What the kernel gives a container beyond its caps: its CPU weight
/// (cgroup v1 shares, or v2's weight runc derives from them) and the
/// memory it protects from reclaim (v1 soft limit, v2 `memory.low`).
fn reservations(driver: &ContainerdDriver, instance: &Instance) -> (String, String) {
    let path = driver.cgroups_path(instance);
    let weight = cgroup_file("cpu", &path, "cpu.shares", "cpu.weight").expect("cpu cgroup");
    let low = cgroup_file("memory", &path, "memory.soft_limit_in_bytes", "memory.low")
        .expect("memory cgroup");
    (weight, low)
}

#[tokio::test]
async fn a_container_reserves_a_fraction_of_a_core_and_is_capped_only_when_asked() {
    let Some(fx) = fixture("fraction").await else {
        return;
    };
    // The default: a tenth of a core reserved, no CPU cap, memory capped
    // at what it reserves.
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpu").is_dir();
    let mut small = instance("small", busybox(&["sleep", "1000"]).with_size(1, 32));
    small.spec.cpus = InstanceSpec::DEFAULT_CONTAINER_CPUS;
    fx.driver.create(&small).await.expect("create small");
    fx.driver.start(&small).await.expect("start small");
    let uncapped = if v1 { "-1" } else { "max" };
    assert_eq!(limits(&fx.driver, &small), (uncapped.into(), mib(32)));
    let (weight, _) = reservations(&fx.driver, &small);
    // 0.1 core is 102 shares (1024 a core); v2 maps them to weight 4.
    assert_eq!(weight, if v1 { "102" } else { "4" });

    // A quarter of a core reserved, half a core at most; 64 MiB reserved,
    // 128 MiB at most.
    let mut burst = instance("burst", busybox(&["sleep", "1000"]).with_size(1, 64));
    burst.spec.cpus = "250m".parse().expect("cpus");
    burst.spec.cpu_limit = Some("0.5".parse().expect("limit"));
    burst.spec.memory_limit_mib = Some(128);
    fx.driver.create(&burst).await.expect("create burst");
    fx.driver.start(&burst).await.expect("start burst");
    assert_eq!(limits(&fx.driver, &burst), ("50000".into(), mib(128)));
    let (weight, low) = reservations(&fx.driver, &burst);
    assert_eq!(weight, if v1 { "256" } else { "10" });
    assert_eq!(low, mib(64));

    for i in [&small, &burst] {
        fx.driver.stop(i, Duration::ZERO).await.expect("stop");
        fx.driver.delete(i).await.expect("delete");
    }
    fx.finish().await;
}

#[tokio::test]
async fn the_driver_resizes_a_running_container_and_later_starts_keep_the_size() {
    let Some(fx) = fixture("resize").await else {
        return;
    };
    let mut i = instance("grow", capped(busybox(&["sleep", "1000"]), 1, 48));
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    assert_eq!(limits(&fx.driver, &i), ("100000".into(), mib(48)));
    let resize = Driver::resize(fx.driver.as_ref()).expect("resize capability");

    i.spec = capped(i.spec.clone(), 2, 96);
    resize.resize(&i).await.expect("resize");
    assert_eq!(limits(&fx.driver, &i), ("200000".into(), mib(96)));
    resize.resize(&i).await.expect("resize is idempotent");
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        RuntimeState::Running,
        "the workload kept running"
    );

    // A later task starts from the container's record: the new size stays.
    fx.driver.stop(&i, Duration::ZERO).await.expect("stop");
    fx.driver.start(&i).await.expect("start again");
    assert_eq!(limits(&fx.driver, &i), ("200000".into(), mib(96)));

    // Stopped, only the record changes; the next start has the size.
    fx.driver.stop(&i, Duration::ZERO).await.expect("stop");
    i.spec = capped(i.spec.clone(), 1, 64);
    resize.resize(&i).await.expect("resize a stopped container");
    fx.driver.start(&i).await.expect("start with the new size");
    assert_eq!(limits(&fx.driver, &i), ("100000".into(), mib(64)));

    // A size runc cannot honour is refused, naming the field.
    let mut tiny = i.clone();
    tiny.spec.memory_mib = 1;
    let err = resize.resize(&tiny).await.expect_err("too small");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(limits(&fx.driver, &i), ("100000".into(), mib(64)));

    let missing = instance("missing", busybox(&["true"]));
    let err = resize.resize(&missing).await.expect_err("no container");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    fx.driver.delete(&i).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn instance_update_resizes_a_running_container_live() {
    let Some(fx) = fixture("update").await else {
        return;
    };
    let dir = fx.dir.path().join("controller");
    std::fs::create_dir_all(&dir).expect("dir");
    let c = controller(&dir, &fx.socket, &fx.namespace).await;
    c.create_instance(CreateInstance::new(
        "web",
        capped(busybox(&["sleep", "1000"]), 1, 64),
    ))
    .await
    .expect("create");
    let web = converged(&c, "web", "web to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    assert_eq!(limits(&fx.driver, &web), ("100000".into(), mib(64)));

    let updated = c
        .update_instance(
            "web",
            InstanceUpdate {
                cpus: Some(Cpus::cores(2)),
                cpu_limit: Some(Cpus::cores(2)),
                memory_mib: Some(128),
                set_labels: [("tier".to_owned(), "front".to_owned())].into(),
                ..InstanceUpdate::default()
            },
        )
        .await
        .expect("update");
    // In force when the call answers: no polling.
    assert_eq!(limits(&fx.driver, &updated), ("200000".into(), mib(128)));
    assert_eq!(updated.status, InstanceStatus::Running);
    assert_eq!(
        updated.labels.get("tier").map(String::as_str),
        Some("front")
    );
    let seen = converged(&c, "web", "web to keep running", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    assert_eq!(seen.started_at, web.started_at, "not restarted");

    // More memory than the node has: refused, naming the shortfall; the
    // cgroup and the record stay as they were.
    let node = c.get_node("local").await.expect("node");
    let free = node.free().memory_mib;
    let err = c
        .update_instance(
            "web",
            InstanceUpdate {
                memory_mib: Some(128 + free + 1),
                ..InstanceUpdate::default()
            },
        )
        .await
        .expect_err("too big for the node");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "has {free} MiB free, the update of `web` needs {} MiB more",
            free + 1
        )),
        "{message}"
    );
    assert_eq!(limits(&fx.driver, &updated), ("200000".into(), mib(128)));
    assert_eq!(c.get_instance("web").await.unwrap().spec.memory_mib, 128);

    c.delete_instance("web").await.expect("delete");
    c.converge("web").await.expect("converge the delete");
    fx.finish().await;
}
