//! The client against a canned registry whose manifest lies about sizes:
//! refused before any blob is fetched, with no panic on absurd numbers.

use std::collections::HashMap;

use zixiao_core::driver::PullOptions;
use zixiao_core::model::ImageRef;
use zixiao_core::ErrorKind;
use zixiao_testing::canned_http::{CannedResponse, CannedServer};

#[tokio::test]
async fn a_manifest_of_absurd_sizes_is_refused_before_any_blob_is_fetched() {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest('a'),
            "size": 10,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest('b'),
            "size": u64::MAX,
        }],
    });
    let routes = HashMap::from([(
        "/v2/huge/manifests/1".to_owned(),
        CannedResponse::ok(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string(),
        ),
    )]);
    let server = CannedServer::start(routes).await.expect("canned registry");
    let reference = ImageRef::try_from(format!("{}/huge:1", server.address())).expect("ref");
    let dir = tempfile::tempdir().expect("tempdir");
    let err = zixiao_registry::pull(&reference, &PullOptions::default(), dir.path(), &|_| {})
        .await
        .expect_err("absurd sizes");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("more than the"), "{err}");
    assert!(
        !server.requests().iter().any(|p| p.contains("/blobs/")),
        "{:?}",
        server.requests()
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing kept"
    );
}
