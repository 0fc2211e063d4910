//! The embedded controller from a Rust program: open a state directory,
//! look at the local node, run a container, read its output, delete it.
//!
//! ```text
//! cargo run -p zixiao-examples --example embedded -- /tmp/zixiao-example
//! ```
//!
//! Without a container runtime on this machine the create is refused with an
//! `Unsupported` error that says what is missing; that is printed too.

use zixiao_core::{CreateInstance, ErrorKind, InstanceSpec};
use zixiao_embedded::{open, EmbeddedConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state_dir = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("zixiao-example")
            .display()
            .to_string()
    });
    let embedded = open(EmbeddedConfig::new(&state_dir)).await?;
    let controller = &embedded.controller;

    let node = &embedded.node;
    println!(
        "local node {}: {} cpus, {} MiB, {} GiB; runs {:?}",
        node.id,
        node.capacity.cpus,
        node.capacity.memory_mib,
        node.capacity.disk_gib,
        node.runtimes
    );

    let request = CreateInstance::new(
        "hello",
        InstanceSpec::container("docker.io/library/busybox:latest").with_command(["echo", "hi"]),
    );
    let created = match controller.create_instance(request).await {
        Ok(created) => created,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("cannot run a container here: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let instance = controller
        .converge(&created.id)
        .await?
        .ok_or("deleted meanwhile")?;
    println!("instance {} is {}", instance.name, instance.status.as_str());

    // The log is written by the runtime as the workload runs: read until
    // it has stopped and everything it wrote is in.
    let reader = controller.logs("hello").await?;
    let mut output = Vec::new();
    loop {
        let running = reader.is_running().await?;
        let data = match reader.read(output.len() as u64, 64 * 1024).await {
            Ok(chunk) => chunk.data,
            // Nothing written yet.
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        output.extend_from_slice(&data);
        if data.is_empty() && !running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    print!("output: {}", String::from_utf8_lossy(&output));

    controller.delete_instance("hello").await?;
    controller.converge(&created.id).await?;
    println!("deleted");
    Ok(())
}
