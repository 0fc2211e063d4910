//! The permission rules, as a table over every request and role, and the
//! properties that must hold for any request: admins may, nodes and
//! servers may not, viewers never change anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use zixiao_auth::{
    authorize, authorize_agent_call, authorize_node_call, permission::project_ref, Credential,
    Identity, NodeName, ProjectName, Requirement, Role, Scope, UserName, PROJECT_LABEL,
};
use zixiao_core::api::{Progress, Request, Wait};
use zixiao_core::model::{
    typed_metadata, AggregateName, FromTemplate, LabelChanges, TemplateName, TemplateSpec,
    TraitChanges,
};
use zixiao_core::{CreateInstance, InstanceSpec, InstanceType};

fn project(name: &str) -> ProjectName {
    ProjectName::try_from(name).unwrap()
}

fn user(role: Role, projects: &[&str]) -> Identity {
    Identity::User {
        name: UserName::try_from(format!("{role}-user")).unwrap(),
        role,
        projects: projects.iter().map(|p| project(p)).collect(),
        via: Credential::Certificate,
    }
}

fn create_in(project: &str) -> Request {
    let mut request = CreateInstance::new("web-1", InstanceSpec::container("busybox"));
    request
        .labels
        .insert(PROJECT_LABEL.to_owned(), project.to_owned());
    Request::CreateInstance {
        request,
        wait: Wait::No,
    }
}

/// One request of every kind there is.
fn every_request() -> Vec<Request> {
    let i = || "web-1".to_owned();
    let n = || "worker-1".to_owned();
    let network: zixiao_core::model::CreateNetwork =
        serde_json::from_value(serde_json::json!({"name": "net", "subnets": ["10.0.0.0/24"]}))
            .unwrap();
    vec![
        create_in("web"),
        Request::GetInstance { instance: i() },
        Request::ListInstances {
            filter: Default::default(),
            page: Default::default(),
        },
        Request::StartInstance {
            instance: i(),
            wait: Wait::No,
        },
        Request::StopInstance {
            instance: i(),
            wait: Wait::No,
        },
        Request::RestartInstance {
            instance: i(),
            wait: Wait::No,
        },
        Request::UpdateInstance {
            instance: i(),
            update: zixiao_core::InstanceUpdate {
                cpus: Some(zixiao_core::Cpus::cores(2)),
                ..Default::default()
            },
            wait: Wait::No,
        },
        Request::DeleteInstance {
            instance: i(),
            wait: Wait::No,
        },
        Request::PauseInstance { instance: i() },
        Request::ResumeInstance { instance: i() },
        Request::InstanceStats { instance: i() },
        Request::ReadLog {
            instance: i(),
            offset: 0,
            max: 10,
        },
        Request::FollowLog {
            instance: i(),
            offset: 0,
        },
        Request::AttachConsole { instance: i() },
        Request::WatchInstances { after: 0 },
        Request::CreateSnapshot {
            instance: i(),
            name: "s".into(),
            to: None,
        },
        Request::ListSnapshots { instance: i() },
        Request::RevertSnapshot {
            instance: i(),
            name: "s".into(),
        },
        Request::DeleteSnapshot {
            instance: i(),
            name: "s".into(),
        },
        Request::ExportSnapshot {
            instance: i(),
            name: "s".into(),
            to: PathBuf::from("/tmp/x"),
        },
        Request::RestoreInstance {
            name: "r".into(),
            from: PathBuf::from("/tmp/x"),
            wait: Wait::No,
        },
        Request::CloneInstance {
            source: i(),
            name: "c".into(),
            linked: false,
            snapshot: None,
            wait: Wait::No,
        },
        Request::ImportImages {
            node: None,
            instance_type: InstanceType::Container,
            archive: PathBuf::from("/etc/shadow"),
            import_as: zixiao_core::api::ImportAs::Container { name: None },
            progress: Progress::ignore(),
        },
        Request::PullImage {
            node: None,
            instance_type: InstanceType::Container,
            reference: "127.0.0.1:5000/busybox:1".try_into().unwrap(),
            options: Default::default(),
            progress: Progress::ignore(),
        },
        Request::ListImages {
            node: None,
            instance_type: InstanceType::Container,
        },
        Request::RemoveImage {
            node: None,
            instance_type: InstanceType::Container,
            kind: zixiao_core::model::ImageKind::Container,
            name: "busybox".into(),
        },
        Request::ListNodes,
        Request::GetNode { node: n() },
        Request::CordonNode { node: n() },
        Request::UncordonNode { node: n() },
        Request::DrainNode { node: n() },
        Request::SetMaintenance {
            node: n(),
            on: true,
        },
        Request::DecommissionNode { node: n() },
        Request::DeregisterNode { node: n() },
        Request::LabelNode {
            node: n(),
            changes: LabelChanges::parse(&["disk=ssd", "old-"]).unwrap(),
        },
        Request::ChangeNodeTraits {
            node: n(),
            changes: TraitChanges::adding(&["ssd"]).unwrap(),
        },
        Request::SetNodeCarbon {
            node: n(),
            intensity: Some(zixiao_core::model::CarbonIntensity::try_from(120u32).unwrap()),
        },
        Request::CreateAggregate {
            name: aggregate(),
            metadata: typed_metadata(
                "metadata",
                BTreeMap::from([("ssd".to_owned(), "true".to_owned())]),
            )
            .unwrap(),
        },
        Request::DeleteAggregate { name: aggregate() },
        Request::ListAggregates,
        Request::GetAggregate { name: aggregate() },
        Request::SetAggregateMetadata {
            name: aggregate(),
            changes: LabelChanges::parse(&["tier=gold", "old-"]).unwrap(),
        },
        Request::AddAggregateNode {
            name: aggregate(),
            node: n(),
        },
        Request::RemoveAggregateNode {
            name: aggregate(),
            node: n(),
        },
        Request::WatchNodes { after: 0 },
        Request::ClusterInfo,
        Request::CreateNetwork { request: network },
        Request::GetNetwork { name: "net".into() },
        Request::ListNetworks,
        Request::NetworkStatus { name: "net".into() },
        Request::RepairNetwork { name: "net".into() },
        Request::DeleteNetwork { name: "net".into() },
        Request::CreateTemplate {
            name: template(),
            spec: template_spec(),
        },
        Request::UpdateTemplate {
            name: template(),
            spec: template_spec(),
        },
        Request::GetTemplate {
            name: template(),
            version: None,
        },
        Request::ListTemplates,
        Request::DeleteTemplate {
            name: template(),
            version: Some(1),
        },
        Request::CreateFromTemplate {
            request: FromTemplate::parse("web-2", "web@1", &["cpus=2"]).unwrap(),
            wait: Wait::No,
        },
        Request::ListOperations {
            filter: Default::default(),
            page: Default::default(),
        },
        Request::GetOperation {
            id: zixiao_core::OperationId::new(),
        },
        Request::WatchOperation {
            id: zixiao_core::OperationId::new(),
        },
        Request::CancelOperation {
            id: zixiao_core::OperationId::new(),
        },
    ]
}

fn template() -> TemplateName {
    TemplateName::try_from("small").unwrap()
}

fn aggregate() -> AggregateName {
    AggregateName::try_from("gpu").unwrap()
}

fn template_spec() -> TemplateSpec {
    TemplateSpec {
        labels: Default::default(),
        spec: InstanceSpec::container("busybox"),
    }
}

/// The project `authorize` is given for a request about web-1 in `web`.
fn web_project(request: &Request) -> Option<ProjectName> {
    match project_ref(request).unwrap() {
        zixiao_auth::permission::ProjectRef::Known(p) => Some(p),
        zixiao_auth::permission::ProjectRef::Instance(_) => Some(project("web")),
        zixiao_auth::permission::ProjectRef::None => None,
    }
}

#[test]
fn admins_may_everything_and_machines_nothing_but_a_node_draining_itself() {
    let admin = user(Role::Admin, &[]);
    let node = Identity::Node(NodeName::try_from("worker-1").unwrap());
    for request in every_request() {
        let project = web_project(&request);
        let grant = authorize(&admin, &request, project.as_ref()).unwrap();
        assert_eq!(grant.scope, Scope::All);
        for machine in [&node, &Identity::Server] {
            // An agent leaving the cluster drains its own node.
            if machine == &node
                && matches!(&request, Request::DrainNode { node } if node == "worker-1")
            {
                assert!(authorize(machine, &request, project.as_ref()).is_ok());
                continue;
            }
            let denial = authorize(machine, &request, project.as_ref()).unwrap_err();
            assert_eq!(
                denial.requirement,
                Requirement::User,
                "{}",
                request.operation()
            );
        }
    }
}

#[test]
fn viewers_never_change_anything() {
    let viewer = user(Role::Viewer, &["web", "default"]);
    for request in every_request() {
        let project = web_project(&request);
        let result = authorize(&viewer, &request, project.as_ref());
        if request.is_mutating() {
            assert!(result.is_err(), "a viewer may {}", request.operation());
        }
    }
}

#[test]
fn the_rules_by_role_and_project() {
    let viewer = user(Role::Viewer, &["web"]);
    let operator = user(Role::Operator, &["web"]);
    let outsider = user(Role::Operator, &["api"]);
    let default_operator = user(Role::Operator, &["default"]);
    // (operation, viewer of web, operator of web, operator of api, operator of default)
    let table: BTreeMap<&str, [bool; 4]> = BTreeMap::from([
        ("instance.create", [false, true, false, false]),
        ("instance.get", [true, true, false, false]),
        ("instance.list", [true, true, true, true]),
        ("instance.start", [false, true, false, false]),
        ("instance.stop", [false, true, false, false]),
        ("instance.restart", [false, true, false, false]),
        ("instance.update", [false, true, false, false]),
        ("instance.delete", [false, true, false, false]),
        ("instance.pause", [false, true, false, false]),
        ("instance.resume", [false, true, false, false]),
        ("instance.stats", [true, true, false, false]),
        ("instance.logs", [true, true, false, false]),
        ("instance.console", [false, true, false, false]),
        ("instance.watch", [true, true, true, true]),
        ("snapshot.create", [false, true, false, false]),
        ("snapshot.list", [true, true, false, false]),
        ("snapshot.revert", [false, true, false, false]),
        ("snapshot.delete", [false, true, false, false]),
        ("snapshot.export", [false, false, false, false]),
        ("instance.restore", [false, false, false, false]),
        // A clone is made in its source's project (it keeps the labels).
        ("instance.clone", [false, true, false, false]),
        ("image.import", [false, false, false, false]),
        ("image.pull", [false, false, false, true]),
        ("image.list", [true, true, true, true]),
        ("image.remove", [false, false, false, true]),
        // Judged alone, as an image's operation is: read by everyone,
        // cancelled by operators of `default` (and admins). `Authorized`
        // judges an instance's or a node's operation as a call on its
        // target (controller.rs), and filters lists.
        ("operation.list", [true, true, true, true]),
        ("operation.get", [true, true, true, true]),
        ("operation.watch", [true, true, true, true]),
        ("operation.cancel", [false, false, false, true]),
        ("node.list", [false, true, true, true]),
        ("node.get", [false, true, true, true]),
        ("node.cordon", [false, false, false, false]),
        ("node.uncordon", [false, false, false, false]),
        ("node.drain", [false, false, false, false]),
        ("node.maintenance", [false, false, false, false]),
        ("node.decommission", [false, false, false, false]),
        ("node.deregister", [false, false, false, false]),
        ("node.watch", [false, true, true, true]),
        // What operators declare of nodes steers every project's
        // placements: admins change it, as they cordon and drain.
        ("node.label", [false, false, false, false]),
        ("node.trait", [false, false, false, false]),
        ("node.carbon", [false, false, false, false]),
        // Aggregates are read and changed as nodes are.
        ("aggregate.create", [false, false, false, false]),
        ("aggregate.delete", [false, false, false, false]),
        ("aggregate.list", [false, true, true, true]),
        ("aggregate.get", [false, true, true, true]),
        ("aggregate.set_metadata", [false, false, false, false]),
        ("aggregate.add_node", [false, false, false, false]),
        ("aggregate.remove_node", [false, false, false, false]),
        ("cluster.info", [false, true, true, true]),
        ("network.create", [false, false, false, true]),
        ("network.get", [true, true, true, true]),
        ("network.list", [true, true, true, true]),
        ("network.status", [true, true, true, true]),
        ("network.repair", [false, false, false, true]),
        ("network.delete", [false, false, false, true]),
        // Templates are shared, as networks are: every user reads them,
        // operators of `default` write them.
        ("template.create", [false, false, false, true]),
        ("template.update", [false, false, false, true]),
        ("template.get", [true, true, true, true]),
        ("template.list", [true, true, true, true]),
        ("template.delete", [false, false, false, true]),
        // Its project is only known once the template is read: admins only.
        (
            "instance.create_from_template",
            [false, false, false, false],
        ),
    ]);
    let mut seen = BTreeSet::new();
    for request in every_request() {
        let op = request.operation();
        seen.insert(op);
        let want = table
            .get(op)
            .unwrap_or_else(|| panic!("{op} is not in the table"));
        let project = web_project(&request);
        for (who, (identity, allowed)) in [&viewer, &operator, &outsider, &default_operator]
            .into_iter()
            .zip(want)
            .enumerate()
        {
            let got = authorize(identity, &request, project.as_ref());
            assert_eq!(got.is_ok(), *allowed, "{op} by #{who}: {got:?}");
        }
    }
    assert_eq!(seen.len(), table.len(), "every row is exercised");
}

#[test]
fn denials_name_the_missing_permission() {
    let viewer = user(Role::Viewer, &["web"]);
    let operator = user(Role::Operator, &["web"]);
    let cases = [
        (&viewer, create_in("web"), "instance.create in project web"),
        (&operator, create_in("db"), "instance.create in project db"),
        (
            &operator,
            Request::DrainNode {
                node: "worker-1".into(),
            },
            "node.drain (admin only)",
        ),
        (&viewer, Request::ListNodes, "node.list (operator or admin)"),
        (
            &operator,
            Request::LabelNode {
                node: "worker-1".into(),
                changes: LabelChanges::parse(&["disk=ssd"]).unwrap(),
            },
            "node.label (admin only)",
        ),
        (
            &operator,
            Request::AddAggregateNode {
                name: aggregate(),
                node: "worker-1".into(),
            },
            "aggregate.add_node (admin only)",
        ),
        (
            &viewer,
            Request::ListAggregates,
            "aggregate.list (operator or admin)",
        ),
    ];
    for (identity, request, permission) in cases {
        let project = web_project(&request);
        let denial = authorize(identity, &request, project.as_ref()).unwrap_err();
        assert_eq!(denial.permission(), permission);
        assert!(denial.to_string().starts_with(permission), "{denial}");
    }
}

#[test]
fn an_instance_whose_project_cannot_be_told_is_for_admins_only() {
    let operator = user(Role::Operator, &["web"]);
    let stop = Request::StopInstance {
        instance: "x".into(),
        wait: Wait::No,
    };
    let denial = authorize(&operator, &stop, None).unwrap_err();
    assert_eq!(denial.requirement, Requirement::AdminOnly);
    assert!(authorize(&user(Role::Admin, &[]), &stop, None).is_ok());
}

#[test]
fn lists_of_instances_are_scoped_to_the_callers_projects() {
    let operator = user(Role::Operator, &["web", "api"]);
    let grant = authorize(
        &operator,
        &Request::ListInstances {
            filter: Default::default(),
            page: Default::default(),
        },
        None,
    )
    .unwrap();
    assert_eq!(
        grant.scope,
        Scope::Projects(BTreeSet::from([project("web"), project("api")]))
    );
}

#[test]
fn a_create_with_a_bad_project_label_is_refused_before_judging() {
    let mut request = CreateInstance::new("x", InstanceSpec::container("busybox"));
    request
        .labels
        .insert(PROJECT_LABEL.to_owned(), "Not A Project".to_owned());
    let request = Request::CreateInstance {
        request,
        wait: Wait::No,
    };
    assert!(project_ref(&request).is_err());
}

#[test]
fn only_a_node_acts_as_itself_and_only_servers_call_agents() {
    let a = NodeName::try_from("node-a").unwrap();
    let b = NodeName::try_from("node-b").unwrap();
    assert!(authorize_node_call(&Identity::Node(a.clone()), &a).is_ok());
    let denial = authorize_node_call(&Identity::Node(a.clone()), &b).unwrap_err();
    assert_eq!(denial.permission(), "node.membership as node node-b");
    assert!(denial.reason.contains("node-a"));
    assert!(authorize_node_call(&Identity::Server, &b).is_err());
    assert!(authorize_node_call(&user(Role::Admin, &[]), &b).is_err());
    assert!(authorize_agent_call(&Identity::Server).is_ok());
    assert!(authorize_agent_call(&Identity::Node(a.clone())).is_err());
    // The one user call a node makes: draining itself, never another.
    let drain = |node: &NodeName| Request::DrainNode {
        node: node.as_str().into(),
    };
    assert!(authorize(&Identity::Node(a.clone()), &drain(&a), None).is_ok());
    let denial = authorize(&Identity::Node(a), &drain(&b), None).unwrap_err();
    assert_eq!(denial.requirement, Requirement::User);
    assert!(authorize_agent_call(&user(Role::Admin, &[])).is_err());
}
