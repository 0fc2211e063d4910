//! A microVM from a Rust program, through the embedded controller: boot a
//! kernel (and initramfs), print its serial console until a marker line
//! (or for a while), then stop and delete it.
//!
//! ```text
//! eval "$(scripts/services/microvm.sh start)"
//! cargo run -p zixiao-examples --features microvm --example microvm -- \
//!     "$ZIXIAO_TEST_MICROVM_KERNEL" "$ZIXIAO_TEST_MICROVM_INITRD" ZIXIAO-BOOT-OK
//! ```
//!
//! Arguments: KERNEL [INITRD] [MARKER]. The backend is the node's choice
//! (`auto`: Zixiao's own VMM where KVM is hardware-backed, QEMU otherwise;
//! set `ZIXIAO_MICROVM_BACKEND` to force one). Without a microVM runtime the
//! create is refused with an `Unsupported` error saying what is missing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use zixiao_core::{CreateInstance, ErrorKind, InstanceSpec};
use zixiao_embedded::{open, EmbeddedConfig};

/// How long the console is followed when the marker does not show.
const FOLLOW_FOR: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kernel = PathBuf::from(
        args.next()
            .ok_or("usage: microvm KERNEL [INITRD] [MARKER]")?,
    );
    let initrd = args.next().filter(|a| !a.is_empty()).map(PathBuf::from);
    let marker = args.next().unwrap_or_else(|| "ZIXIAO-BOOT-OK".to_owned());
    let state_dir = std::env::temp_dir().join("zixiao-example-microvm");
    let embedded = open(EmbeddedConfig::new(&state_dir)).await?;
    let controller = &embedded.controller;

    let mut spec = InstanceSpec::microvm(std::path::absolute(&kernel)?).with_size(1, 256);
    spec.initrd = initrd.map(std::path::absolute).transpose()?;
    spec.cmdline = Some("console=ttyS0 panic=-1 quiet".to_owned());
    let created = match controller
        .create_instance(CreateInstance::new("example-microvm", spec))
        .await
    {
        Ok(created) => created,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("cannot run a microVM here: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let instance = controller
        .converge(&created.id)
        .await?
        .ok_or("deleted meanwhile")?;
    println!(
        "microVM {} is {} on backend {}",
        instance.name,
        instance.status.as_str(),
        instance.runtime.as_deref().unwrap_or("-")
    );
    if let Some(problem) = instance.problem() {
        println!("it did not start: {problem}");
    }

    // Print the console as the guest writes it, until the marker.
    let reader = controller.logs(&created.id).await?;
    let (mut offset, mut seen) = (0, String::new());
    let started = Instant::now();
    while !seen.contains(&marker) && started.elapsed() < FOLLOW_FOR {
        match reader.read(offset, 64 * 1024).await {
            Ok(chunk) => {
                offset = chunk.next_offset;
                let text = String::from_utf8_lossy(&chunk.data);
                print!("{text}");
                seen.push_str(&text);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if !reader.is_running().await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!();
    if seen.contains(&marker) {
        println!(
            "saw {marker} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    controller.delete_instance(&created.id).await?;
    controller.converge(&created.id).await?;
    println!("deleted");
    Ok(())
}
