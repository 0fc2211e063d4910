//! Pulls from OCI registries: the real ones `scripts/services/registry.sh`
//! runs on loopback (plain, and TLS with a test CA and basic auth; busybox
//! pushed by skopeo), and canned servers playing
//! a registry that lies about its content or redirects to plain HTTP.

use std::collections::HashMap;
use std::sync::Mutex;

use zixiao_core::driver::{
    ImagePlatform, Images, PullOptions, PullProgress, RegistryCa, RegistryCredentials,
};
use zixiao_core::model::{ImageRef, PullPolicy};
use zixiao_core::{Driver, ErrorKind, RuntimeState};
use zixiao_testing::canned_http::{CannedResponse, CannedServer};
use zixiao_testing::registry::push_oci_archive;
use zixiao_testing::wait::runtime_endpoint;

use super::images::tar_files;
use super::{busybox, empty_fixture, instance, Fixture};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn reference(s: &str) -> ImageRef {
    ImageRef::try_from(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Runs `echo <word>` in a container of `image` and checks its output.
async fn run_echo(fx: &Fixture, name: &str, image: &str, word: &str) {
    run_echo_pulling(fx, name, image, PullPolicy::Missing, word).await
}

/// [`run_echo`], the create pulling as `policy` says.
async fn run_echo_pulling(fx: &Fixture, name: &str, image: &str, policy: PullPolicy, word: &str) {
    let mut spec = busybox(&["echo", word]);
    spec.image = Some(image.to_owned());
    spec.pull = policy;
    let i = instance(name, spec);
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    fx.wait_state(&i, "exit", |s| matches!(s, RuntimeState::Exited { .. }))
        .await;
    fx.wait_log_lines(&i, &[word]).await;
    fx.driver.delete(&i).await.expect("delete");
}

/// The files no pull should leave: the driver's temporary pull directories.
fn pull_leftovers(fx: &Fixture) -> Vec<String> {
    let dir = fx
        .dir
        .path()
        .join("containerd")
        .join(&fx.namespace)
        .join("pulls");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect()
}

#[tokio::test]
async fn pulls_by_tag_and_by_digest_and_runs_both() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(fx) = empty_fixture("pull").await else {
        return;
    };
    let tagged = format!("{registry}/busybox:1");
    let events = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    let image = fx
        .driver
        .pull(&reference(&tagged), &PullOptions::default(), &|p| {
            events.lock().expect("lock").push(p)
        })
        .await
        .expect("pull by tag");
    eprintln!("pulled {tagged} in {:?}", started.elapsed());
    assert_eq!(image.name, tagged);
    assert!(
        image.digest.starts_with("sha256:") && image.size_bytes > 500_000,
        "{image:?}"
    );
    let events = events.into_inner().expect("lock");
    let Some(PullProgress::Resolved { digest, blobs, .. }) = events.first() else {
        panic!("the first event is not the manifest: {events:?}");
    };
    assert_eq!(digest, &image.digest);
    let fetched = events
        .iter()
        .filter(|e| matches!(e, PullProgress::Fetched { .. }))
        .count();
    assert_eq!(fetched, *blobs, "one event per blob: {events:?}");
    assert_eq!(events.last(), Some(&PullProgress::Unpacking));
    run_echo(&fx, "tagged", &tagged, "pulled by tag").await;

    // Pinned by digest, it is the same content under a second name.
    let pinned = format!("{registry}/busybox@{}", image.digest);
    let again = fx
        .driver
        .pull(&reference(&pinned), &PullOptions::default(), &|_| {})
        .await
        .expect("pull by digest");
    assert_eq!(
        (again.name.as_str(), again.digest.as_str()),
        (pinned.as_str(), image.digest.as_str())
    );
    run_echo(&fx, "pinned", &pinned, "pulled by digest").await;
    let names = fx.image_names().await;
    assert_eq!(names, [tagged.clone(), pinned.clone()]);
    assert!(pull_leftovers(&fx).is_empty(), "{:?}", pull_leftovers(&fx));
    fx.finish().await;
}

#[tokio::test]
async fn an_unknown_tag_or_repository_is_not_found() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(fx) = empty_fixture("pull-unknown").await else {
        return;
    };
    for missing in [
        format!("{registry}/busybox:nope"),
        format!("{registry}/nothing/here:1"),
    ] {
        let err = fx
            .driver
            .pull(&reference(&missing), &PullOptions::default(), &|_| {})
            .await
            .expect_err("no such image");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(&registry), "{err}");
    }
    // And an instance of it: its create's pull finds nothing, and says so
    // naming the field and the registry.
    let mut spec = busybox(&["true"]);
    spec.image = Some(format!("{registry}/busybox:nope"));
    let err = fx
        .driver
        .create(&instance("absent", spec))
        .await
        .expect_err("no image");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("spec.image") && message.contains(&registry),
        "{message}"
    );
    assert!(fx.driver.list().await.expect("list").is_empty());
    fx.finish().await;
}

/// The digest of image `name` in the driver's runtime.
async fn digest_of(fx: &Fixture, name: &str) -> String {
    let images = fx.driver.list().await.expect("list");
    let image = images.iter().find(|i| i.name == name);
    image
        .unwrap_or_else(|| panic!("{name} not in {images:?}"))
        .digest
        .clone()
}

/// `spec.pull` on create, against the loopback registry: `never` refuses
/// an image that is not here (naming it, making nothing), `missing` pulls
/// it once and then keeps what it holds even when the tag moves, `always`
/// asks the registry again and takes the moved tag's new digest.
#[tokio::test]
async fn a_create_pulls_as_its_pull_policy_says() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(archive) = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")
    else {
        return;
    };
    let Some(fx) = empty_fixture("pull-policy").await else {
        return;
    };
    let image = format!("{registry}/h-pull/policy-{}:1", std::process::id());
    push_oci_archive(&archive, &image, "oci").expect("push");

    let mut spec = busybox(&["true"]);
    spec.image = Some(image.clone());
    spec.pull = PullPolicy::Never;
    let err = fx
        .driver
        .create(&instance("never", spec))
        .await
        .expect_err("never pulls");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("spec.image") && message.contains(&image),
        "{message}"
    );
    assert!(fx.driver.list().await.expect("list").is_empty());
    let left = fx.leftovers().await;
    assert!(left.is_empty(), "left behind: {left:?}");

    run_echo_pulling(
        &fx,
        "missing",
        &image,
        PullPolicy::Missing,
        "pulled on create",
    )
    .await;
    let first = digest_of(&fx, &image).await;

    // The tag moves: the same content as a docker v2s2 manifest.
    push_oci_archive(&archive, &image, "v2s2").expect("push again");
    run_echo_pulling(&fx, "held", &image, PullPolicy::Missing, "kept").await;
    run_echo_pulling(&fx, "never-held", &image, PullPolicy::Never, "held").await;
    assert_eq!(
        digest_of(&fx, &image).await,
        first,
        "missing and never keep it"
    );

    run_echo_pulling(&fx, "always", &image, PullPolicy::Always, "pulled again").await;
    let moved = digest_of(&fx, &image).await;
    assert_ne!(moved, first, "always takes the moved tag");
    let pulled = fx
        .driver
        .pull(&reference(&image), &PullOptions::default(), &|_| {})
        .await
        .expect("pull");
    assert_eq!(pulled.digest, moved, "what the registry serves now");
    assert!(pull_leftovers(&fx).is_empty(), "{:?}", pull_leftovers(&fx));
    fx.finish().await;
}

/// The TLS registry `registry.sh` runs: its address, its test CA and its
/// user's credentials.
fn tls_registry() -> Option<(String, RegistryCa, RegistryCredentials)> {
    let registry = runtime_endpoint("ZIXIAO_TEST_TLS_REGISTRY", "the loopback TLS registry")?;
    let read = |name: &str| {
        let path = std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let ca = RegistryCa::try_from(read("ZIXIAO_TEST_TLS_REGISTRY_CA")).expect("the test CA");
    let credentials = RegistryCredentials {
        username: std::env::var("ZIXIAO_TEST_TLS_REGISTRY_USER").expect("the registry's user"),
        password: read("ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE")
            .trim()
            .to_owned(),
    };
    Some((registry, ca, credentials))
}

/// A registry whose certificate a private CA issued and that wants basic
/// auth: refused, saying what to give, until both the CA and the right
/// credentials come; then the image pulls and runs. Refusals store nothing.
#[tokio::test]
async fn pulls_over_tls_with_a_private_ca_and_basic_auth() {
    let Some((registry, ca, credentials)) = tls_registry() else {
        return;
    };
    let Some(fx) = empty_fixture("pull-tls").await else {
        return;
    };
    let image = reference(&format!("{registry}/busybox:1"));
    let pull = |options: PullOptions| {
        let driver = &fx.driver;
        let image = &image;
        async move { driver.pull(image, &options, &|_| {}).await }
    };
    let untrusted = pull(PullOptions {
        credentials: Some(credentials.clone()),
        ..PullOptions::default()
    })
    .await
    .expect_err("a certificate of an unknown CA");
    assert_eq!(
        untrusted.kind(),
        ErrorKind::FailedPrecondition,
        "{untrusted}"
    );
    assert!(
        untrusted.to_string().contains(&registry)
            && untrusted.to_string().contains("--registry-ca"),
        "{untrusted}"
    );
    let anonymous = pull(PullOptions {
        registry_cas: vec![ca.clone()],
        ..PullOptions::default()
    })
    .await
    .expect_err("no credentials");
    assert_eq!(
        anonymous.kind(),
        ErrorKind::FailedPrecondition,
        "{anonymous}"
    );
    let wrong = pull(PullOptions {
        credentials: Some(RegistryCredentials {
            password: "not-the-password".to_owned(),
            ..credentials.clone()
        }),
        registry_cas: vec![ca.clone()],
        ..PullOptions::default()
    })
    .await
    .expect_err("a wrong password");
    assert_eq!(wrong.kind(), ErrorKind::FailedPrecondition, "{wrong}");
    assert!(!wrong.to_string().contains("not-the-password"), "{wrong}");
    let unusable = RegistryCa::try_from(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
            .to_owned(),
    )
    .expect("PEM-shaped");
    let bad_ca = pull(PullOptions {
        credentials: Some(credentials.clone()),
        registry_cas: vec![unusable],
        ..PullOptions::default()
    })
    .await
    .expect_err("a CA that is not a certificate");
    assert_eq!(bad_ca.kind(), ErrorKind::InvalidArgument, "{bad_ca}");
    assert!(bad_ca.to_string().contains("registry_ca"), "{bad_ca}");
    assert!(fx.image_names().await.is_empty());
    assert!(pull_leftovers(&fx).is_empty(), "{:?}", pull_leftovers(&fx));

    let pulled = pull(PullOptions {
        credentials: Some(credentials),
        registry_cas: vec![ca],
        ..PullOptions::default()
    })
    .await
    .expect("pull with the CA and the credentials");
    assert_eq!(pulled.name, image.to_string());
    run_echo(&fx, "tls", &pulled.name, "pulled over TLS").await;
    fx.finish().await;
}

/// A registry's view of the busybox OCI layout: `/v2/<repository>/…` for
/// its manifest (tag `1`) and blobs, each blob's bytes passed through `serve`.
fn routes_of_busybox(
    fx: &Fixture,
    repository: &str,
    serve: impl Fn(&str, Vec<u8>) -> CannedResponse,
) -> (HashMap<String, CannedResponse>, Vec<String>) {
    let files = tar_files(&fx.busybox);
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
    let blob = |digest: &str| files[&format!("blobs/sha256/{}", &digest[7..])].clone();
    let manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest_data = blob(manifest_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_data).expect("manifest");
    let mut digests = vec![manifest["config"]["digest"]
        .as_str()
        .expect("config")
        .to_owned()];
    for layer in manifest["layers"].as_array().expect("layers") {
        digests.push(layer["digest"].as_str().expect("layer").to_owned());
    }
    let mut routes = HashMap::from([
        (
            "/v2/".to_owned(),
            CannedResponse::ok("application/json", "{}"),
        ),
        (
            format!("/v2/{repository}/manifests/1"),
            CannedResponse::ok(OCI_MANIFEST, manifest_data),
        ),
    ]);
    for digest in &digests {
        routes.insert(
            format!("/v2/{repository}/blobs/{digest}"),
            serve(digest, blob(digest)),
        );
    }
    (routes, digests)
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_is_refused_and_nothing_is_stored() {
    let Some(fx) = empty_fixture("pull-corrupt").await else {
        return;
    };
    let (routes, digests) = routes_of_busybox(&fx, "evil", |_, mut bytes| {
        // Same length, one byte different: only the digest can tell.
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        CannedResponse::ok("application/octet-stream", bytes)
    });
    let server = CannedServer::start(routes).await.expect("canned registry");
    let evil = format!("{}/evil:1", server.address());
    let err = fx
        .driver
        .pull(&reference(&evil), &PullOptions::default(), &|_| {})
        .await
        .expect_err("a corrupt blob");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&digests[0]) && message.contains("hash to"),
        "{message}"
    );
    assert!(message.contains("nothing of it was stored"), "{message}");
    assert!(fx.driver.list().await.expect("list").is_empty());
    assert!(pull_leftovers(&fx).is_empty(), "{:?}", pull_leftovers(&fx));
    fx.finish().await;
}

#[tokio::test]
async fn a_redirect_to_plain_http_on_another_host_is_refused() {
    let Some(fx) = empty_fixture("pull-insecure").await else {
        return;
    };
    // 192.0.2.1 is TEST-NET-1: never this machine, and never dialled, since
    // the refusal comes before any connection.
    let (routes, _) = routes_of_busybox(&fx, "moved", |digest, _| {
        CannedResponse::redirect(&format!("http://192.0.2.1:5000/blobs/{digest}"))
    });
    let server = CannedServer::start(routes).await.expect("canned registry");
    let moved = format!("{}/moved:1", server.address());
    let started = std::time::Instant::now();
    let err = fx
        .driver
        .pull(&reference(&moved), &PullOptions::default(), &|_| {})
        .await
        .expect_err("plain HTTP to a remote host");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        err.to_string()
            .contains("--insecure-registry 192.0.2.1:5000"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "it dialled"
    );
    assert!(server
        .requests()
        .iter()
        .any(|p| p.starts_with("/v2/moved/blobs/")));
    assert!(fx.driver.list().await.expect("list").is_empty());
    assert!(pull_leftovers(&fx).is_empty(), "{:?}", pull_leftovers(&fx));
    fx.finish().await;
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256:<hex>` of `data`.
fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// `PUT`s `body` of `content_type` as manifest `reference` of `busybox`
/// in the loopback registry at `registry`.
fn put_manifest(registry: &str, reference: &str, content_type: &str, body: &str) {
    let answer = zixiao_testing::http::request(
        registry,
        "PUT",
        &format!("/v2/busybox/manifests/{reference}"),
        &[&format!("Content-Type: {content_type}")],
        body,
    );
    assert_eq!(answer.status, 201, "PUT manifest {reference}: {answer:?}");
}

/// Tags `busybox:two-platforms` in the loopback registry: an index of
/// busybox:1's manifest as linux/amd64 and a second manifest of the same
/// config and layers (told apart by an annotation) as linux/arm64/v8, as a
/// multi-platform image is pushed. The two manifests' digests.
fn push_two_platform_image(registry: &str) -> (String, String) {
    let answer = zixiao_testing::http::request(
        registry,
        "GET",
        "/v2/busybox/manifests/1",
        &[&format!("Accept: {OCI_MANIFEST}")],
        "",
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let amd64 = answer.body;
    let mut arm64: serde_json::Value = serde_json::from_str(&amd64).expect("a manifest");
    arm64["annotations"] = serde_json::json!({"org.zixiao.test.platform": "linux/arm64/v8"});
    let arm64 = arm64.to_string();
    let (amd64_digest, arm64_digest) = (
        sha256_digest(amd64.as_bytes()),
        sha256_digest(arm64.as_bytes()),
    );
    put_manifest(registry, &arm64_digest, OCI_MANIFEST, &arm64);
    let entry = |digest: &str, size: usize, platform: serde_json::Value| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": platform});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry(&arm64_digest, arm64.len(), serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
            entry(&amd64_digest, amd64.len(), serde_json::json!({"os": "linux", "architecture": "amd64"})),
        ],
    });
    put_manifest(registry, "two-platforms", OCI_INDEX, &index.to_string());
    (amd64_digest, arm64_digest)
}

#[tokio::test]
async fn a_platform_asked_for_picks_its_manifest_from_a_multi_platform_image() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(fx) = empty_fixture("pull-platform").await else {
        return;
    };
    let (amd64, arm64) = push_two_platform_image(&registry);
    let image = reference(&format!("{registry}/busybox:two-platforms"));
    let pull = |platform: Option<&str>| {
        let options = PullOptions {
            platform: platform.map(|p| ImagePlatform::try_from(p).expect("a platform")),
            ..PullOptions::default()
        };
        let driver = &fx.driver;
        let image = &image;
        async move { driver.pull(image, &options, &|_| {}).await }
    };
    assert_eq!(
        pull(Some("linux/arm64")).await.expect("arm64").digest,
        arm64
    );
    assert_eq!(
        pull(Some("linux/arm64/v8")).await.expect("arm64/v8").digest,
        arm64
    );
    // The node's own platform when none is asked for.
    assert_eq!(pull(None).await.expect("the node's").digest, amd64);
    for missing in ["linux/riscv64", "linux/arm64/v7"] {
        let err = pull(Some(missing)).await.expect_err("no such platform");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        let message = err.to_string();
        assert!(
            message.contains(missing) && message.contains("linux/arm64/v8, linux/amd64"),
            "{message}"
        );
    }
    assert!(pull_leftovers(&fx).is_empty(), "{:?}", pull_leftovers(&fx));
    fx.finish().await;
}
