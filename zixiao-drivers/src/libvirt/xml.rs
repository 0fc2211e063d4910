//! Domain XML: written from a [`DomainDefinition`] with a real XML writer
//! (so every value is escaped), and the few reads the driver needs from
//! libvirt's XML (our metadata, the capabilities' domain types and NUMA
//! cells, snapshot descriptions).

use std::path::PathBuf;

use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};

use crate::instance_id::InstanceId;

/// The namespace of the metadata element that marks a domain as Zixiao's.
pub const METADATA_NAMESPACE: &str = "https://zixiao.dev/xmlns/libvirt/instance/1";
/// The prefix the metadata element is written with.
const METADATA_PREFIX: &str = "zixiao";

/// The libvirt domain type (`<domain type=...>`): which accelerator runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainType {
    /// Hardware-assisted KVM (QEMU/KVM, and Cloud Hypervisor's `ch://` driver).
    Kvm,
    /// QEMU's software emulation (TCG): slow but needs no KVM.
    Qemu,
    /// libvirt's mock hypervisor (`test:///default`), for tests.
    Test,
}

impl DomainType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
            DomainType::Test => "test",
        }
    }

    /// Parses `kvm`, `qemu` or `test`.
    pub fn parse(value: &str) -> Option<DomainType> {
        match value {
            "kvm" => Some(DomainType::Kvm),
            "qemu" => Some(DomainType::Qemu),
            "test" => Some(DomainType::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for DomainType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the domain boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Direct kernel boot.
    Kernel {
        /// The kernel image on the hypervisor host.
        kernel: PathBuf,
        /// Its initial ramdisk.
        initrd: Option<PathBuf>,
        /// Its command line.
        cmdline: String,
    },
    /// Firmware boot from the first disk.
    Disk,
}

/// A disk attached as `vda`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Its format (`qcow2`, `raw`).
    pub format: String,
}

/// A network interface on a host bridge: libvirt creates the TAP device
/// `target` on `bridge` when the domain starts and removes it when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The Linux bridge the TAP joins (it must exist when the domain starts).
    pub bridge: String,
    /// The host-side TAP device's name.
    pub target: String,
    /// The guest NIC's MAC address.
    pub mac: String,
    /// The MTU of the TAP and of the guest's NIC (virtio's `host_mtu`, which
    /// the guest driver takes): the bridge's, when known. Under an overlay
    /// it is below 1500, and a guest left at 1500 would send frames the
    /// overlay drops.
    pub mtu: Option<u32>,
}

/// Everything the domain XML is made of: plain data, checked before it
/// gets here (see `LibvirtDriver::definition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDefinition {
    /// The domain name.
    pub name: String,
    /// The accelerator.
    pub domain_type: DomainType,
    /// The Zixiao instance id, kept in the domain's metadata, and the
    /// domain's UUID when it is one (as the controller's ids are), so the
    /// domain is found by id whatever its name.
    pub instance_id: String,
    /// The Zixiao instance name, kept in the domain's metadata.
    pub instance_name: String,
    /// vCPUs it runs.
    pub vcpus: u32,
    /// The most vCPUs it may run, by a live change (at least `vcpus`).
    pub max_vcpus: u32,
    /// Memory in MiB it runs with (the balloon's target when below the maximum).
    pub memory_mib: u64,
    /// The memory in MiB it boots with, the most a live change may give
    /// it (at least `memory_mib`); above `memory_mib`, a virtio balloon
    /// holds the rest back from the guest.
    pub max_memory_mib: u64,
    /// How it boots.
    pub boot: Boot,
    /// Its disk, if any.
    pub disk: Option<Disk>,
    /// Its cloud-init `cidata` disk (a raw ISO 9660 image), attached
    /// read-only after the disk, if any.
    pub seed: Option<PathBuf>,
    /// Its network interfaces (virtio), in guest order (`eth0`, `eth1`...).
    pub interfaces: Vec<Interface>,
    /// Where the serial console's output is logged (by virtlogd), if anywhere.
    pub console_log: Option<PathBuf>,
}

impl DomainDefinition {
    /// The domain XML.
    ///
    /// ```
    /// use zixiao_drivers::libvirt::xml::{Boot, DomainDefinition, DomainType};
    /// let xml = DomainDefinition {
    ///     name: "zixiao-web".into(),
    ///     domain_type: DomainType::Qemu,
    ///     instance_id: "1f0e".into(),
    ///     instance_name: "web".into(),
    ///     vcpus: 1,
    ///     max_vcpus: 2,
    ///     memory_mib: 256,
    ///     max_memory_mib: 512,
    ///     boot: Boot::Disk,
    ///     disk: None,
    ///     seed: None,
    ///     interfaces: Vec::new(),
    ///     console_log: None,
    /// }
    /// .to_xml();
    /// assert!(xml.starts_with("<domain type=\"qemu\">"));
    /// assert!(xml.contains("<vcpu current=\"1\">2</vcpu>"));
    /// assert!(xml.contains("<currentMemory unit=\"MiB\">256</currentMemory>"));
    /// ```
    pub fn to_xml(&self) -> String {
        let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
        // Writing into a Vec cannot fail.
        let _ = self.write(&mut writer);
        String::from_utf8_lossy(&writer.into_inner()).into_owned()
    }

    fn write(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        w.create_element("domain")
            .with_attribute(("type", self.domain_type.as_str()))
            .write_inner_content(|w| {
                text(w, "name", &self.name)?;
                if let Ok(uuid) = InstanceId::try_from(self.instance_id.as_str()) {
                    text(w, "uuid", uuid.as_str())?;
                }
                self.write_metadata(w)?;
                let max_memory = self.max_memory_mib.max(self.memory_mib);
                w.create_element("memory")
                    .with_attribute(("unit", "MiB"))
                    .write_text_content(BytesText::new(&max_memory.to_string()))?;
                w.create_element("currentMemory")
                    .with_attribute(("unit", "MiB"))
                    .write_text_content(BytesText::new(&self.memory_mib.to_string()))?;
                let max_vcpus = self.max_vcpus.max(self.vcpus);
                if max_vcpus > self.vcpus {
                    // The rest are hot-plugged by a live resize.
                    w.create_element("vcpu")
                        .with_attribute(("current", self.vcpus.to_string().as_str()))
                        .write_text_content(BytesText::new(&max_vcpus.to_string()))?;
                } else {
                    text(w, "vcpu", &self.vcpus.to_string())?;
                }
                self.write_os(w)?;
                if self.domain_type != DomainType::Test {
                    w.create_element("features").write_inner_content(|w| {
                        w.create_element("acpi").write_empty()?;
                        Ok(())
                    })?;
                }
                // A guest that powers off stays defined (and shows as
                // stopped); a reboot request restarts it.
                text(w, "on_poweroff", "destroy")?;
                text(w, "on_reboot", "restart")?;
                text(w, "on_crash", "destroy")?;
                w.create_element("devices")
                    .write_inner_content(|w| self.write_devices(w))?;
                Ok(())
            })?;
        Ok(())
    }

    fn write_metadata(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        let element = format!("{METADATA_PREFIX}:instance");
        let id = format!("{METADATA_PREFIX}:id");
        let name = format!("{METADATA_PREFIX}:name");
        w.create_element("metadata").write_inner_content(|w| {
            w.create_element(element.as_str())
                .with_attribute((
                    format!("xmlns:{METADATA_PREFIX}").as_str(),
                    METADATA_NAMESPACE,
                ))
                .write_inner_content(|w| {
                    text(w, &id, &self.instance_id)?;
                    text(w, &name, &self.instance_name)
                })?;
            Ok(())
        })?;
        Ok(())
    }

    fn write_os(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        w.create_element("os").write_inner_content(|w| {
            text(w, "type", "hvm")?;
            match &self.boot {
                Boot::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                } => {
                    text(w, "kernel", &kernel.to_string_lossy())?;
                    if let Some(initrd) = initrd {
                        text(w, "initrd", &initrd.to_string_lossy())?;
                    }
                    text(w, "cmdline", cmdline)?;
                }
                Boot::Disk => {
                    w.create_element("boot")
                        .with_attribute(("dev", "hd"))
                        .write_empty()?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    fn write_devices(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        if let Some(disk) = &self.disk {
            w.create_element("disk")
                .with_attributes([("type", "file"), ("device", "disk")])
                .write_inner_content(|w| {
                    w.create_element("driver")
                        .with_attributes([("name", "qemu"), ("type", disk.format.as_str())])
                        .write_empty()?;
                    w.create_element("source")
                        .with_attribute(("file", disk.path.to_string_lossy().as_ref()))
                        .write_empty()?;
                    w.create_element("target")
                        .with_attributes([("dev", "vda"), ("bus", "virtio")])
                        .write_empty()?;
                    Ok(())
                })?;
        }
        if let Some(seed) = &self.seed {
            // The guest finds it by its label, not its place: `vdz` only
            // keeps it clear of the boot disk's name.
            w.create_element("disk")
                .with_attributes([("type", "file"), ("device", "disk")])
                .write_inner_content(|w| {
                    w.create_element("driver")
                        .with_attributes([("name", "qemu"), ("type", "raw")])
                        .write_empty()?;
                    w.create_element("source")
                        .with_attribute(("file", seed.to_string_lossy().as_ref()))
                        .write_empty()?;
                    w.create_element("target")
                        .with_attributes([("dev", "vdz"), ("bus", "virtio")])
                        .write_empty()?;
                    w.create_element("readonly").write_empty()?;
                    Ok(())
                })?;
        }
        for interface in &self.interfaces {
            w.create_element("interface")
                .with_attribute(("type", "bridge"))
                .write_inner_content(|w| {
                    w.create_element("source")
                        .with_attribute(("bridge", interface.bridge.as_str()))
                        .write_empty()?;
                    w.create_element("target")
                        .with_attribute(("dev", interface.target.as_str()))
                        .write_empty()?;
                    w.create_element("mac")
                        .with_attribute(("address", interface.mac.as_str()))
                        .write_empty()?;
                    w.create_element("model")
                        .with_attribute(("type", "virtio"))
                        .write_empty()?;
                    if let Some(mtu) = interface.mtu {
                        w.create_element("mtu")
                            .with_attribute(("size", mtu.to_string().as_str()))
                            .write_empty()?;
                    }
                    Ok(())
                })?;
        }
        // The serial port is the guest's console (ttyS0): virtlogd appends
        // its output to the log, and `virDomainOpenConsole` attaches to it.
        w.create_element("serial")
            .with_attribute(("type", "pty"))
            .write_inner_content(|w| {
                if let Some(log) = &self.console_log {
                    w.create_element("log")
                        .with_attributes([
                            ("file", log.to_string_lossy().as_ref()),
                            ("append", "on"),
                        ])
                        .write_empty()?;
                }
                w.create_element("target")
                    .with_attribute(("port", "0"))
                    .write_empty()?;
                Ok(())
            })?;
        if self.max_memory_mib > self.memory_mib {
            // What lets a running guest's memory change within the maximum.
            w.create_element("memballoon")
                .with_attribute(("model", "virtio"))
                .write_empty()?;
        }
        w.create_element("console")
            .with_attribute(("type", "pty"))
            .write_inner_content(|w| {
                w.create_element("target")
                    .with_attributes([("type", "serial"), ("port", "0")])
                    .write_empty()?;
                Ok(())
            })?;
        Ok(())
    }
}

fn text(w: &mut Writer<Vec<u8>>, element: &str, value: &str) -> std::io::Result<()> {
    w.create_element(element)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

/// The text of every element whose local name is `element` (a namespace
/// prefix is ignored), in document order. Malformed XML yields what was
/// read before the error.
pub(crate) fn texts(xml: &str, element: &str) -> Vec<String> {
    let mut reader = Reader::from_str(xml);
    let mut found = Vec::new();
    // The text of the matching element being read, pieced together from
    // text events and entity references.
    let mut current: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                current = (start.local_name().as_ref() == element.as_bytes()).then(String::new);
            }
            Ok(Event::Text(t)) => {
                if let (Some(text), Ok(piece)) = (current.as_mut(), t.decode()) {
                    text.push_str(&piece);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(text) = current.as_mut() {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        text.push(c);
                    } else if let Ok(name) = r.decode() {
                        if let Some(value) = quick_xml::escape::resolve_predefined_entity(&name) {
                            text.push_str(value);
                        }
                    }
                }
            }
            Ok(Event::End(_)) => found.extend(current.take()),
            Ok(Event::Eof) | Err(_) => return found,
            _ => {}
        }
    }
}

/// The value of attribute `attribute` on every element whose local name is
/// `element`, in document order.
pub(crate) fn attributes(xml: &str, element: &str, attribute: &str) -> Vec<String> {
    let mut reader = Reader::from_str(xml);
    let mut found = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) | Ok(Event::Empty(start))
                if start.local_name().as_ref() == element.as_bytes() =>
            {
                if let Ok(Some(value)) = start.try_get_attribute(attribute) {
                    if let Ok(value) = value.unescape_value() {
                        found.push(value.into_owned());
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => return found,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> DomainDefinition {
        DomainDefinition {
            name: "zixiao-web".into(),
            domain_type: DomainType::Qemu,
            instance_id: "id-1".into(),
            instance_name: "web".into(),
            vcpus: 2,
            max_vcpus: 2,
            memory_mib: 256,
            max_memory_mib: 256,
            boot: Boot::Kernel {
                kernel: "/k/vmlinuz".into(),
                initrd: Some("/k/initrd".into()),
                cmdline: "console=ttyS0 a=<b>&\"c\"".into(),
            },
            disk: Some(Disk {
                path: "/d/disk.qcow2".into(),
                format: "qcow2".into(),
            }),
            seed: Some("/d/cidata.iso".into()),
            interfaces: vec![Interface {
                bridge: "zxb00000001".into(),
                target: "zxt0000000001".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1450),
            }],
            console_log: Some("/d/console.log".into()),
        }
    }

    #[test]
    fn the_xml_carries_every_part_of_the_definition() {
        let xml = definition().to_xml();
        assert!(xml.starts_with(r#"<domain type="qemu">"#), "{xml}");
        assert_eq!(texts(&xml, "name"), ["zixiao-web", "web"]);
        assert_eq!(texts(&xml, "id"), ["id-1"]);
        assert_eq!(texts(&xml, "vcpu"), ["2"]);
        assert_eq!(texts(&xml, "memory"), ["256"]);
        assert_eq!(texts(&xml, "kernel"), ["/k/vmlinuz"]);
        assert_eq!(texts(&xml, "initrd"), ["/k/initrd"]);
        assert_eq!(
            attributes(&xml, "source", "file"),
            ["/d/disk.qcow2", "/d/cidata.iso"]
        );
        assert_eq!(xml.matches("<readonly/>").count(), 1);
        assert_eq!(attributes(&xml, "driver", "type"), ["qcow2", "raw"]);
        assert_eq!(attributes(&xml, "log", "file"), ["/d/console.log"]);
        assert_eq!(attributes(&xml, "interface", "type"), ["bridge"]);
        assert_eq!(attributes(&xml, "source", "bridge"), ["zxb00000001"]);
        assert_eq!(
            attributes(&xml, "target", "dev"),
            ["vda", "vdz", "zxt0000000001"]
        );
        assert_eq!(attributes(&xml, "mac", "address"), ["02:00:00:00:00:01"]);
        assert_eq!(attributes(&xml, "model", "type"), ["virtio"]);
        assert_eq!(attributes(&xml, "mtu", "size"), ["1450"]);
        assert_eq!(
            attributes(&xml, "instance", &format!("xmlns:{METADATA_PREFIX}")),
            [METADATA_NAMESPACE]
        );
    }

    #[test]
    fn maximums_define_more_than_the_domain_runs_with_and_a_balloon() {
        let xml = definition().to_xml();
        assert!(xml.contains("<vcpu>2</vcpu>"), "{xml}");
        assert_eq!(texts(&xml, "currentMemory"), ["256"]);
        assert!(attributes(&xml, "memballoon", "model").is_empty(), "{xml}");
        let mut d = definition();
        d.max_vcpus = 4;
        d.max_memory_mib = 1024;
        let xml = d.to_xml();
        assert!(xml.contains(r#"<vcpu current="2">4</vcpu>"#), "{xml}");
        assert_eq!(texts(&xml, "memory"), ["1024"]);
        assert_eq!(texts(&xml, "currentMemory"), ["256"]);
        assert_eq!(attributes(&xml, "memballoon", "model"), ["virtio"]);
    }

    #[test]
    fn an_instance_id_that_is_a_uuid_is_the_domains_uuid() {
        assert!(texts(&definition().to_xml(), "uuid").is_empty());
        let mut d = definition();
        d.instance_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into();
        let xml = d.to_xml();
        assert_eq!(
            texts(&xml, "uuid"),
            ["1b4e28ba-2fa1-11d2-883f-0016d3cca427"]
        );
        assert_eq!(texts(&xml, "id"), ["1b4e28ba-2fa1-11d2-883f-0016d3cca427"]);
    }

    #[test]
    fn values_are_escaped_and_read_back_intact() {
        let xml = definition().to_xml();
        assert!(xml.contains("a=&lt;b&gt;&amp;&quot;c&quot;"), "{xml}");
        assert_eq!(texts(&xml, "cmdline"), ["console=ttyS0 a=<b>&\"c\""]);
    }

    #[test]
    fn disk_boot_has_no_kernel() {
        let mut d = definition();
        d.boot = Boot::Disk;
        let xml = d.to_xml();
        assert!(texts(&xml, "kernel").is_empty());
        assert_eq!(attributes(&xml, "boot", "dev"), ["hd"]);
    }

    #[test]
    fn domain_types_round_trip() {
        for t in [DomainType::Kvm, DomainType::Qemu, DomainType::Test] {
            assert_eq!(DomainType::parse(t.as_str()), Some(t));
        }
        assert_eq!(DomainType::parse("xen"), None);
    }
}
