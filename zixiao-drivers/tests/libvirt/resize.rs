//! A VM's new size on a real libvirtd: libvirt cannot change a running
//! domain's vCPUs (and this driver does not balloon), so an instance
//! update stores the size and the next start writes it into the
//! domain's definition: `virsh dominfo` shows it, and the guest boots
//! with it.

use std::time::Duration;

use zixiao_core::Driver;

use super::{fixture, instance, unique, wait_for_boots};

/// `virsh dominfo`'s CPU count and maximum memory (KiB) of domain `uuid`.
fn dominfo(uri: &str, uuid: &str) -> (String, String) {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", uri, "dominfo", uuid])
        .output()
        .expect("virsh dominfo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{name}` in {text}"))
    };
    (field("CPU(s):"), field("Max memory:"))
}

#[tokio::test]
async fn a_vm_started_after_an_update_boots_with_the_new_size() {
    let Some(fx) = fixture().await else {
        return;
    };
    let mut vm = instance(&unique("resize"), fx.vm(""));
    fx.driver.create(&vm).await.expect("create");
    assert_eq!(
        dominfo(&fx.uri, &vm.id),
        ("1".to_owned(), "262144 KiB".to_owned())
    );
    assert!(
        Driver::resize(fx.driver.as_ref()).is_none(),
        "libvirt resizes through a restart, not live"
    );
    fx.driver.start(&vm).await.expect("start");
    wait_for_boots(&fx.driver, &vm, 1).await;
    fx.driver
        .stop(&vm, Duration::from_secs(3))
        .await
        .expect("stop");

    // What the controller hands the driver after `instance update --cpus 2
    // --memory 384` of the stopped instance.
    vm.spec = vm.spec.clone().with_size(2, 384);
    fx.driver.start(&vm).await.expect("start with the new size");
    assert_eq!(
        dominfo(&fx.uri, &vm.id),
        ("2".to_owned(), "393216 KiB".to_owned())
    );
    wait_for_boots(&fx.driver, &vm, 2).await;

    fx.driver.delete(&vm).await.expect("delete");
}
