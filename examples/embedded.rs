//! The one API from a Rust program: a [`Client`](zixiao_core::Client) of a
//! state directory's deployment (in this process, or through its daemon
//! when one runs), or of a server with `--endpoint`; then the same calls
//! either way: look at the nodes, run a container, follow its output,
//! delete it.
//!
//! ```text
//! cargo run -p zixiao-examples --features containerd --example embedded -- /tmp/zixiao-example
//! cargo run -p zixiao-examples --example embedded -- --endpoint 127.0.0.1:50051
//! ```
//!
//! Without a container runtime the create is refused with an `Unsupported`
//! error that says what is missing; that is printed too.

use futures::StreamExt;
use zixiao_core::{CreateInstance, ErrorKind, InstanceSpec, Wait};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let zx = match args.as_slice() {
        [flag, endpoint] if flag == "--endpoint" => {
            // A plain server on loopback; for a TLS one, add its CA and a
            // token to the options (or use `zixiao_client::context_options`).
            let options = zixiao_client::ConnectOptions::new(endpoint.as_str());
            zixiao_client::connect(options).await?
        }
        [state_dir] => {
            zixiao_client::open(zixiao_client::OpenOptions::new(Some(state_dir.into()))).await?
        }
        _ => {
            let dir = std::env::temp_dir().join("zixiao-example");
            zixiao_client::open(zixiao_client::OpenOptions::new(Some(dir))).await?
        }
    };

    for node in zx.list_nodes().await? {
        println!(
            "node {}: {} cpus, {} MiB, {} GiB; runs {:?}",
            node.id,
            node.capacity.cpus,
            node.capacity.memory_mib,
            node.capacity.disk_gib,
            node.runtimes
        );
    }

    let spec = InstanceSpec::container("busybox").with_command(["sh", "-c", "echo hi; echo bye"]);
    let hello = match zx
        .create_instance(CreateInstance::new("hello", spec), Wait::Settled)
        .await
    {
        Ok(hello) => hello,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("cannot run a container here: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!("instance {} is {}", hello.name, hello.status.as_str());

    // Its output as the runtime writes it, until it stops.
    let mut log = zx.follow_log("hello", 0).await?;
    while let Some(piece) = log.next().await {
        print!("output: {}", String::from_utf8_lossy(&piece?));
    }

    zx.delete_instance("hello", Wait::Settled).await?;
    println!("deleted");
    Ok(())
}
