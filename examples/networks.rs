//! Networks from a Rust program: create a network (a bridge with NAT and
//! isolation rules on this machine, addresses kept in the store), give a
//! container an address on it, read the address and MAC back, and remove
//! both again.
//!
//! ```text
//! sudo cargo run -p zixiao-examples --example networks -- /tmp/zixiao-example
//! ```
//!
//! Setting up a bridge needs CAP_NET_ADMIN: without it the create is
//! refused with an `Unsupported` error saying so, which is printed. The
//! container is only stored, not started, so no image is needed; without a
//! container runtime on this machine that step is skipped with the reason.

use zixiao_core::model::CreateNetwork;
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

    // 10.99.0.1 becomes the bridge's (gateway) address; NAT and isolation are on.
    let request = CreateNetwork::new("example-lan", ["10.99.0.0/24"]);
    let network = match controller.create_network(request).await {
        Ok(network) => network,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("cannot set networks up here: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "network {}: bridge {}, subnets {:?}, nat {}, isolated {}",
        network.name,
        network.bridge,
        network
            .subnets
            .iter()
            .map(|s| s.cidr.to_string())
            .collect::<Vec<_>>(),
        network.nat,
        network.isolated
    );

    let mut spec = InstanceSpec::container("docker.io/library/busybox:latest");
    spec.networks = vec![network.name.to_string()];
    match controller
        .create_instance(CreateInstance::new("example-web", spec))
        .await
    {
        Ok(instance) => {
            for attachment in &instance.attachments {
                println!(
                    "{} joins {} as {} with MAC {} and {:?}",
                    instance.name,
                    attachment.network,
                    attachment.interface,
                    attachment.mac,
                    attachment
                        .addresses
                        .iter()
                        .map(|a| format!("{}/{}", a.address, a.prefix_len))
                        .collect::<Vec<_>>()
                );
            }
            controller.delete_instance(&instance.id).await?;
            // Deleting finishes (and gives the address back) when it converges.
            controller.converge(&instance.id).await?;
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("no container here to give an address to: {e}");
        }
        Err(e) => return Err(e.into()),
    }

    // A network in use cannot be deleted (FailedPrecondition); this one is free again.
    controller.delete_network(&network.name).await?;
    println!("network {} deleted: no bridge or rule left", network.name);
    Ok(())
}
