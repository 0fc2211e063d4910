//! `connect` and the GrpcClient against a server over any `Api` (here an
//! in-process controller on fake drivers): the streams (watches, a followed
//! log), the node operations and the cluster summary cross the wire; the
//! health and reflection services answer; an unreachable server is
//! `Unavailable` naming the address and the operating system's error; and
//! requests for the caller's files are answered by the client itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use zixiao_core::controller::EventKind;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, ErrorKind, InstanceSpec, InstanceStatus, InstanceType, NodeStatus,
    Resources, Wait,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::fake_agent;

fn host() -> HostFacts {
    HostFacts {
        hostname: "node-a-host".into(),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(8),
            memory_mib: 8192,
            disk_gib: 100,
            instances: 32,
        },
    }
}

/// A controller over fake runtimes with one node, served on loopback.
async fn serve() -> (SocketAddr, Controller, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("store");
    let agent = fake_agent(host());
    let registration = agent.registration("node-a");
    let controller = Controller::builder(Arc::new(store), Arc::new(PluginScheduler::default()))
        .agent("node-a", Arc::new(agent))
        .build();
    controller
        .register_node(registration)
        .await
        .expect("register");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = Arc::new(controller.clone());
    tokio::spawn(zixiao_api::server::serve(
        api,
        listener,
        std::future::pending(),
    ));
    (addr, controller, dir)
}

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 10 s"))
}

#[tokio::test]
async fn watches_a_followed_log_and_node_operations_cross_the_wire() {
    let (addr, controller, _dir) = serve().await;
    let client = zixiao_api::connect(&format!("http://{addr}")).expect("client");
    let mut instances = client.watch_instances(0).await.expect("watch instances");
    let mut nodes = client.watch_nodes(0).await.expect("watch nodes");

    let web = client
        .create_instance(
            CreateInstance::new("web", InstanceSpec::container("busybox")),
            Wait::Settled,
        )
        .await
        .expect("create");
    assert_eq!(web.status, InstanceStatus::Running);
    let first = within("an instance event", instances.next())
        .await
        .expect("an event")
        .expect("a valid event");
    assert_eq!(first.kind, EventKind::Added);
    assert_eq!(first.id, web.id);
    assert_eq!(first.instance.expect("the instance").name, "web");

    // What the fake runtime logged at start, then the end of the stream
    // once the instance stops.
    let mut log = client.follow_log("web", 0).await.expect("follow");
    let written = within("the log", log.next())
        .await
        .expect("a piece")
        .expect("bytes");
    assert!(!written.is_empty());
    client
        .stop_instance("web", Wait::Settled)
        .await
        .expect("stop");
    let rest: Vec<_> = within("the end of the log", log.collect()).await;
    assert!(rest.iter().all(Result::is_ok), "{rest:?}");

    let cordoned = client.cordon_node("node-a").await.expect("cordon");
    assert_eq!(cordoned.status, NodeStatus::Cordoned);
    // The node changed before (its allocation, as the instance came and
    // went): the cordon is among the changes that followed.
    let cordon = within("the cordon's node event", async {
        loop {
            let event = nodes
                .next()
                .await
                .expect("an event")
                .expect("a valid event");
            assert_eq!(event.kind, EventKind::Modified);
            let node = event.node.expect("the node");
            if node.status == NodeStatus::Cordoned {
                return node;
            }
        }
    })
    .await;
    assert_eq!(cordon.id, "node-a");
    let uncordoned = client.uncordon_node("node-a").await.expect("uncordon");
    assert_eq!(uncordoned.status, NodeStatus::Ready);
    let report = client.drain_node("node-a").await.expect("drain");
    assert_eq!(report.node, "node-a");
    assert_eq!(report.stopped, ["web"], "{report:?}");
    client.uncordon_node("node-a").await.expect("uncordon");
    let on = client
        .set_maintenance("node-a", true)
        .await
        .expect("maintenance on");
    assert_eq!(on.status, Some(NodeStatus::Maintenance));
    let off = client
        .set_maintenance("node-a", false)
        .await
        .expect("maintenance off");
    assert_eq!(off.status, Some(NodeStatus::Ready));

    let info = client.cluster_info().await.expect("info");
    assert_eq!(info, controller.cluster_info().await.expect("info"));
    assert_eq!(info.nodes, 1);
    assert_eq!(info.leader, None, "an in-process controller has no leader");

    let error = client.list_images(None, InstanceType::Container).await;
    assert_eq!(
        error.expect_err("fake runtimes keep no images").kind(),
        ErrorKind::Unsupported
    );
    let gone = client
        .delete_instance("web", Wait::Settled)
        .await
        .expect("delete");
    assert!(gone.is_none());
}

#[tokio::test]
async fn health_and_reflection_answer_for_every_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (addr, _controller, _dir) = serve().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in zixiao_api::server::SERVICES.into_iter().chain([""]) {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let answer = health.check(request).await.expect("check").into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service}");
    }
    let unknown = HealthCheckRequest {
        service: "zixiao.v1.NoSuchService".to_owned(),
    };
    let status = health.check(unknown).await.expect_err("unknown");
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Reflection v1, as grpcurl asks it (v1alpha: the Python test).
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([ask]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.message().await.expect("an answer").expect("one");
    let Some(MessageResponse::ListServicesResponse(listed)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let listed: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    for service in zixiao_api::server::SERVICES {
        assert!(
            listed.iter().any(|s| s == service),
            "{service} in {listed:?}"
        );
    }
    assert!(
        listed.iter().any(|s| s == "grpc.health.v1.Health"),
        "{listed:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_naming_the_address_and_the_os_error() {
    // A port nothing listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let client = zixiao_api::connect(&addr.to_string()).expect("a lazy client");
    let error = client.list_nodes().await.expect_err("nobody listens");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", error.chain());
    let chain = error.chain();
    assert!(chain.contains(&addr.to_string()), "{chain}");
    assert!(chain.contains("os error"), "{chain}");
}

#[tokio::test]
async fn requests_for_the_callers_files_are_unsupported_by_the_client_itself() {
    // Nothing listens: the client answers without a call.
    let client = zixiao_api::connect("127.0.0.1:9").expect("a lazy client");
    let restore = client
        .restore_instance("web", "/tmp/snap".into(), Wait::No)
        .await;
    let export = client.export_snapshot("web", "s1", "/tmp/out".into()).await;
    let import = client
        .import_images(
            None,
            InstanceType::Container,
            "/tmp/busybox.tar".into(),
            None,
            Default::default(),
        )
        .await;
    for error in [
        restore.expect_err("restore"),
        export.expect_err("export"),
        import.expect_err("import"),
    ] {
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{}", error.chain());
        assert!(
            error.chain().contains("127.0.0.1:9") && error.chain().contains("/tmp/"),
            "{}",
            error.chain()
        );
    }
}

#[tokio::test]
async fn a_long_list_comes_in_pages_and_the_client_follows_them_to_the_end() {
    let (addr, controller, _dir) = serve().await;
    // More than a server answers in one page, most of them pending (the
    // node holds 32): listed all the same.
    let total = zixiao_core::api::MAX_PAGE_SIZE as usize + 1;
    for i in 0..total {
        controller
            .create_instance(CreateInstance::new(
                format!("i-{i:04}"),
                InstanceSpec::container("busybox").with_size(1, 64),
            ))
            .await
            .expect("create");
    }
    let client = zixiao_api::connect(&format!("http://{addr}")).expect("client");
    let names = |listed: &[zixiao_core::Instance]| -> Vec<String> {
        listed.iter().map(|i| i.name.clone()).collect()
    };

    let all = within("list", client.list_instances(Default::default()))
        .await
        .expect("list every page");
    let expected: Vec<String> = (0..total).map(|i| format!("i-{i:04}")).collect();
    assert_eq!(names(&all), expected);

    let first = client
        .list_instances_page(Default::default(), zixiao_core::api::Page::first(2))
        .await
        .expect("first page");
    assert_eq!(names(&first.instances), ["i-0000", "i-0001"]);
    let token = first.next_page.expect("a token to the next page");
    // The token crosses the wire as text, as a user passes it back.
    let token = zixiao_core::api::PageToken::try_from(token.to_string().as_str()).expect("token");
    let second = client
        .list_instances_page(
            Default::default(),
            zixiao_core::api::Page {
                size: 2,
                token: Some(token),
            },
        )
        .await
        .expect("second page");
    assert_eq!(names(&second.instances), ["i-0002", "i-0003"]);

    let capped = client
        .list_instances_page(Default::default(), zixiao_core::api::Page::first(1_000_000))
        .await
        .expect("a page larger than the server answers");
    assert_eq!(
        capped.instances.len(),
        zixiao_core::api::MAX_PAGE_SIZE as usize
    );
    assert!(capped.next_page.is_some(), "the rest is one more page away");
}

#[tokio::test]
async fn a_page_token_that_no_list_made_is_refused_naming_it() {
    let (addr, _controller, _dir) = serve().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut raw = zixiao_api::pb::instance_service_client::InstanceServiceClient::new(channel);
    let refused = raw
        .list_instances(zixiao_api::pb::ListInstancesRequest {
            filter: None,
            page_size: 10,
            page_token: "../../etc".to_owned(),
        })
        .await
        .expect_err("a forged token");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("page_token"),
        "{}",
        refused.message()
    );
}

/// Templates over gRPC: create, update, get, list, a create from each
/// version, counts, a refused delete and the refusals of bad input, each
/// with the kind and message the in-process API gives. What a server
/// decodes is checked again: a raw request with a bad override or version
/// 0 is refused naming the field.
#[tokio::test]
async fn templates_and_creates_from_them_round_trip_over_grpc() {
    use zixiao_core::model::{FromTemplate, TemplateSpec};

    let (addr, _controller, _dir) = serve().await;
    let client = zixiao_api::connect(&format!("http://{addr}")).expect("client");
    let spec = |memory_mib| TemplateSpec {
        labels: [("app".to_owned(), "web".to_owned())].into(),
        spec: InstanceSpec::container("busybox").with_size(1, memory_mib),
    };
    client
        .create_template("web", spec(64))
        .await
        .expect("create");
    let both = client
        .update_template("web", spec(96))
        .await
        .expect("update");
    assert_eq!(both.versions.len(), 2);
    let from = |name: &str, template: &str, set: &[&str]| {
        FromTemplate::parse(name, template, set).expect("parse")
    };
    let a = client
        .create_from_template(from("a", "web@1", &["cpus=2"]), Wait::Settled)
        .await
        .expect("a");
    assert_eq!(a.status, InstanceStatus::Running);
    assert_eq!(a.spec.cpus, zixiao_core::Cpus::cores(2));
    assert_eq!(a.template.as_ref().map(|o| o.version), Some(1));
    let got = client.get_instance("a").await.expect("get a");
    assert_eq!(got.template, a.template, "the origin crosses the wire");
    client
        .create_from_template(from("b", "web", &[]), Wait::No)
        .await
        .expect("b");

    let info = client.get_template("web", None).await.expect("get");
    let counts: Vec<(u32, usize)> = info
        .versions
        .iter()
        .map(|v| (v.version.version, v.in_use))
        .collect();
    assert_eq!(counts, [(1, 1), (2, 1)]);
    assert_eq!(info.versions[0].version.spec.memory_mib, 64);
    assert_eq!(
        client.list_templates().await.expect("list"),
        std::slice::from_ref(&info)
    );
    assert_eq!(
        client
            .get_template("web", Some(2))
            .await
            .expect("v2")
            .versions[0]
            .instances,
        ["b"]
    );

    let busy = client.delete_template("web", Some(1)).await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::FailedPrecondition);
    assert!(busy.to_string().contains("in use by a"), "{busy}");
    let mut invalid = spec(64);
    invalid.spec.cpus = zixiao_core::Cpus::cores(0);
    let err = client.update_template("web", invalid).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spec.cpus: must be more than 0 (a container may ask for as little as 1m)"
    );
    let gone = client
        .create_from_template(from("c", "web@9", &[]), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert_eq!(client.get_template("web", None).await.expect("get"), info);

    // What the server decodes, it checks again.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut instances =
        zixiao_api::pb::instance_service_client::InstanceServiceClient::new(channel.clone());
    let status = instances
        .create_from_template(zixiao_api::pb::CreateFromTemplateRequest {
            name: "c".into(),
            template: "web".into(),
            set: vec!["colour=red".into()],
            wait: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("unknown field `colour`"),
        "{status:?}"
    );
    let mut templates =
        zixiao_api::pb::template_service_client::TemplateServiceClient::new(channel);
    let status = templates
        .get_template(zixiao_api::pb::TemplateRef {
            name: "web".into(),
            version: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("version"), "{status:?}");
    let names: Vec<String> = client
        .list_instances(Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["a", "b"], "nothing else was created");
}

/// Node labels, traits and aggregates over gRPC: each call answers as the
/// in-process API does (the placed instance, the refusals' kinds and
/// fields), and what a server decodes is checked again: a raw request with
/// an invalid label key or aggregate name is refused naming the field.
#[tokio::test]
async fn node_metadata_and_aggregates_round_trip_over_grpc() {
    let (addr, _controller, _dir) = serve().await;
    let client = zixiao_api::connect(&format!("http://{addr}")).expect("client");
    let mut request = CreateInstance::new("db", InstanceSpec::container("busybox"));
    request.spec.placement.required_traits.insert("ssd".into());
    request.spec.placement.aggregates.insert("fast".into());
    let db = client
        .create_instance(request, Wait::Settled)
        .await
        .expect("create");
    assert_eq!(db.status, InstanceStatus::Pending);
    assert!(
        db.problem()
            .unwrap_or_default()
            .contains("missing trait `ssd`"),
        "{db:?}"
    );

    let node = client
        .label_node("node-a", &["disk=nvme", "old-"])
        .await
        .expect("label");
    assert_eq!(
        node.operator.labels.get("disk").map(String::as_str),
        Some("nvme")
    );
    assert_eq!(node.labels.get("disk").map(String::as_str), Some("nvme"));
    let node = client
        .add_node_traits("node-a-host", &["ssd"])
        .await
        .expect("trait, by hostname");
    assert!(node.traits.contains("ssd"));
    let db = client.get_instance("db").await.expect("get");
    assert!(
        db.problem()
            .unwrap_or_default()
            .contains("aggregate `fast` does not exist"),
        "{db:?}"
    );

    let metadata = [("tier".to_owned(), "gold".to_owned())].into();
    let fast = client
        .create_aggregate("fast", metadata)
        .await
        .expect("create aggregate");
    assert_eq!(fast.metadata.len(), 1);
    let fast = client
        .add_aggregate_node("fast", "node-a")
        .await
        .expect("add node");
    assert!(fast.nodes.contains("node-a"));
    let db = client.get_instance("db").await.expect("get");
    assert_eq!(db.status, InstanceStatus::Running, "{db:?}");
    let listed = client.list_aggregates().await.expect("list");
    assert_eq!(
        listed,
        vec![client.get_aggregate("fast").await.expect("get")]
    );

    let refused = client
        .create_aggregate("fast", Default::default())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AlreadyExists, "{refused}");
    let refused = client.delete_aggregate("fast").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::FailedPrecondition, "{refused}");
    let refused = client.get_aggregate("nope").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::NotFound, "{refused}");
    client
        .remove_aggregate_node("fast", "node-a")
        .await
        .expect("remove node");
    client.delete_aggregate("fast").await.expect("delete");
    let node = client
        .remove_node_traits("node-a", &["ssd"])
        .await
        .expect("remove trait");
    assert!(!node.traits.contains("ssd"));

    // What a server decodes is checked again.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut nodes = zixiao_api::pb::node_service_client::NodeServiceClient::new(channel.clone());
    let refused = nodes
        .label_node(zixiao_api::pb::LabelNodeRequest {
            node: "node-a".into(),
            set: [("bad key".to_owned(), "v".to_owned())].into(),
            remove: vec![],
        })
        .await
        .expect_err("a bad key");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("labels"),
        "{}",
        refused.message()
    );
    let mut aggregates =
        zixiao_api::pb::aggregate_service_client::AggregateServiceClient::new(channel);
    let refused = aggregates
        .create_aggregate(zixiao_api::pb::CreateAggregateRequest {
            name: "Not A Label".into(),
            metadata: Default::default(),
        })
        .await
        .expect_err("a bad name");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("name"), "{}", refused.message());
}
