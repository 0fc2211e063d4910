//! A private OCI registry for one test: Debian's `docker-registry`
//! (distribution 2.8) on a free loopback port with HTTP basic auth from an
//! htpasswd file (bcrypt), filled with the busybox OCI archive by `skopeo
//! copy`. scripts/services/registry.sh installs both programs and runs the
//! shared anonymous registry; a registry that wants credentials is the
//! test's own, so nothing else sees its users. Plain HTTP: distribution
//! serves htpasswd auth without TLS, and loopback is where Zixiao allows it.
//! It also writes and pushes Zixiao's VM artifacts (a disk, kernel or
//! initrd as an OCI artifact: [`write_artifact_layout`], [`push_artifact`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry that wants `user` and `password`; stopped on drop.
#[derive(Debug)]
pub struct AuthRegistry {
    child: Child,
    /// Its `127.0.0.1:port`.
    pub address: String,
}

impl AuthRegistry {
    /// Starts a registry under `dir` whose only user is `user` with
    /// `password`, and pushes `busybox_oci` (an OCI layout tar) to it as
    /// `busybox:1`. Errors: what failed, with the registry's log.
    pub fn start(
        dir: &Path,
        user: &str,
        password: &str,
        busybox_oci: &str,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt(password)?))
            .map_err(|e| format!("write htpasswd: {e}"))?;
        let address = free_address()?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: zixiao-test\n    path: {}\n",
            dir.join("storage").display(),
            htpasswd.display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let log = std::fs::File::create(dir.join("registry.log"))
            .map_err(|e| format!("create the log: {e}"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start docker-registry: {e}"))?;
        let registry = AuthRegistry {
            child,
            address: address.to_string(),
        };
        let log = || std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(address).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the registry did not listen within 10 s: {}",
                    log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pushed = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
            .arg(format!("{user}:{password}"))
            .arg(format!("oci-archive:{busybox_oci}"))
            .arg(format!("docker://{}/busybox:1", registry.address))
            .output()
            .map_err(|e| format!("run skopeo: {e}"))?;
        if !pushed.status.success() {
            return Err(format!(
                "skopeo copy failed: {}\nregistry log: {}",
                String::from_utf8_lossy(&pushed.stderr),
                log()
            ));
        }
        Ok(registry)
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port nothing listens on (just now).
fn free_address() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("find a free port: {e}"))
}

/// A bcrypt hash of `password`, as htpasswd files hold them, from the C
/// library's crypt(3) through Python's `crypt` module (Debian's libxcrypt
/// does bcrypt; apache2-utils' `htpasswd` is not installed here).
fn bcrypt(password: &str) -> Result<String, String> {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.stdin.read(), crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(password.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| format!("run python3 for a bcrypt hash: {e}"))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !hash.starts_with("$2") {
        return Err(format!(
            "python3 made no bcrypt hash: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(hash)
}

/// `sha256:<hex>` of `data`, as registries name blobs.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI 1.1 empty config, `{}`, that artifacts carry.
const EMPTY_CONFIG: &[u8] = b"{}";

/// Writes an OCI image layout directory `layout` holding one Zixiao VM
/// artifact (zixiao-registry's `application/vnd.zixiao.*` media types):
/// `file` as its one layer of `media_type`, the empty config, and
/// `artifactType` `media_type`, tagged `tag`; what a user builds to push a
/// disk, kernel or initrd with `skopeo copy oci:DIR:TAG docker://…`.
/// Returns the manifest's digest. Errors: what failed.
pub fn write_artifact_layout(
    layout: &Path,
    tag: &str,
    media_type: &str,
    file: &Path,
) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let put = |data: &[u8]| -> Result<String, String> {
        let digest = hex(&Sha256::digest(data));
        std::fs::write(blobs.join(&digest), data).map_err(|e| format!("write a blob: {e}"))?;
        Ok(digest)
    };
    // The layer is hashed as it is copied, so a large disk is read once.
    let layer = {
        let mut source =
            std::fs::File::open(file).map_err(|e| format!("open {}: {e}", file.display()))?;
        let temp = blobs.join(".layer");
        let mut out = std::fs::File::create(&temp).map_err(|e| format!("create a blob: {e}"))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            use std::io::{Read, Write};
            let n = source
                .read(&mut buffer)
                .map_err(|e| format!("read {}: {e}", file.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])
                .map_err(|e| format!("write a blob: {e}"))?;
            size += n as u64;
        }
        let digest = hex(&hasher.finalize());
        std::fs::rename(&temp, blobs.join(&digest)).map_err(|e| format!("name a blob: {e}"))?;
        (digest, size)
    };
    let config = put(EMPTY_CONFIG)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": media_type,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": format!("sha256:{config}"),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [{
            "mediaType": media_type,
            "digest": format!("sha256:{}", layer.0),
            "size": layer.1,
        }],
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string())
        .map_err(|e| format!("write index.json: {e}"))?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(|e| format!("write oci-layout: {e}"))?;
    Ok(format!("sha256:{manifest_digest}"))
}

/// Pushes `file` as a Zixiao VM artifact of `media_type` to `image`
/// (`127.0.0.1:PORT/repository:tag`, plain HTTP) with `skopeo copy`, from
/// a layout written in a temporary directory ([`write_artifact_layout`]).
/// Returns the manifest's digest. Errors: what failed, with skopeo's words.
pub fn push_artifact(image: &str, media_type: &str, file: &Path) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let layout = dir.path().join("layout");
    let digest = write_artifact_layout(&layout, "artifact", media_type, file)?;
    push_with_skopeo(
        &format!("oci:{}:artifact", layout.display()),
        image,
        &[PLAIN_HTTP],
    )?;
    Ok(digest)
}

/// Pushes the OCI layout tar `archive` to `image` (on a loopback registry,
/// over plain HTTP) with `skopeo copy`, its manifest written in `format`
/// (`oci` or `v2s2`): the same content pushed in the other format moves
/// the tag to another manifest digest, as a rebuilt image would.
/// Errors: skopeo's own.
pub fn push_oci_archive(archive: &str, image: &str, format: &str) -> Result<(), String> {
    push_with_skopeo(
        &format!("oci-archive:{archive}"),
        image,
        &[PLAIN_HTTP, "--format", format],
    )
}

/// The `skopeo copy` flag for a plain-HTTP loopback registry.
pub const PLAIN_HTTP: &str = "--dest-tls-verify=false";

/// `skopeo copy` of `source` (a transport and its path, such as
/// `oci-archive:/tmp/busybox.tar`) to `image` with `flags` (how to reach
/// the registry: [`PLAIN_HTTP`], or a certificate directory and
/// credentials). Errors: skopeo's own words.
pub fn push_with_skopeo(source: &str, image: &str, flags: &[&str]) -> Result<(), String> {
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(flags)
        .arg(source)
        .arg(format!("docker://{image}"))
        .output()
        .map_err(|e| format!("run skopeo: {e}"))?;
    if !pushed.status.success() {
        return Err(format!(
            "skopeo copy to {image} failed: {}",
            String::from_utf8_lossy(&pushed.stderr)
        ));
    }
    Ok(())
}
