//! [`Client`]: a typed method per operation over any [`Api`], the handle
//! every frontend holds. Each method builds one [`Request`], makes one
//! call and takes its documented [`Response`] variant; the request's
//! documentation says when it is idempotent and which errors it returns.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::BoxStream;

use super::access::{
    AuditQuery, AuditRecord, IssuedToken, ProjectInfo, Quota, Role, TokenInfo, TokenTerms, UserInfo,
};
use super::{
    Api, ImportAs, InstancePage, NodeUsageSample, OperationFilter, OperationPage, Page, Progress,
    Request, Response, StatsSample, Wait,
};
use crate::controller::{ClusterInfo, DrainReport, InstanceEvent, InstanceFilter, NodeEvent};
use crate::driver::{
    ConsoleStream, ImageInfo, InstanceStats, LogChunk, PullOptions, PullProgress, SnapshotInfo,
};
use crate::model::{
    typed_metadata, Aggregate, AggregateName, AllocationRatio, CarbonIntensity, CreateInstance,
    CreateNetwork, FromTemplate, ImageKind, ImageName, ImageRef, Instance, InstanceType,
    InstanceUpdate, LabelChanges, MigrationMode, Network, NetworkStatus, Node, NodeImageName,
    Operation, OperationId, SnapshotName, TemplateInfo, TemplateName, TemplateSpec, TraitChanges,
};
use crate::store::{Revision, StoreSummary};
use crate::{Error, Result};

/// How long [`Client::follow_operation`] keeps trying to reach a
/// deployment that went away (a server restarting) before it gives up.
pub const FOLLOW_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often [`Client::follow_operation`] tries again meanwhile.
pub const FOLLOW_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Zixiao's operations as typed methods, in-process or remote alike.
/// Cheap to clone; clones share the implementation.
#[derive(Debug, Clone)]
pub struct Client {
    api: Arc<dyn Api>,
}

/// Makes one call and takes the response variant `$variant`, whose value
/// the request documents; any other answer is an implementation's bug.
macro_rules! expect {
    ($client:expr, $request:expr, $variant:ident) => {{
        let request = $request;
        let operation = request.operation();
        match $client.api.call(request).await? {
            Response::$variant(value) => Ok(value),
            other => Err(unexpected(operation, stringify!($variant), &other)),
        }
    }};
}

fn unexpected(operation: &str, wanted: &str, got: &Response) -> Error {
    Error::Internal(format!("{operation} answered {}, not {wanted}", got.kind()))
}

impl Client {
    /// A client of `api`.
    pub fn new(api: Arc<dyn Api>) -> Self {
        Client { api }
    }

    /// The implementation behind it.
    pub fn api(&self) -> &Arc<dyn Api> {
        &self.api
    }

    /// Carries out any request, for callers that build requests themselves.
    pub async fn call(&self, request: Request) -> Result<Response> {
        self.api.call(request).await
    }

    /// See [`Request::CreateInstance`].
    pub async fn create_instance(&self, request: CreateInstance, wait: Wait) -> Result<Instance> {
        expect!(self, Request::CreateInstance { request, wait }, Instance)
    }

    /// See [`Request::GetInstance`].
    pub async fn get_instance(&self, instance: &str) -> Result<Instance> {
        expect!(
            self,
            Request::GetInstance {
                instance: instance.to_owned()
            },
            Instance
        )
    }

    /// Every instance `filter` accepts, in name order: each page of
    /// [`Request::ListInstances`] in turn.
    pub async fn list_instances(&self, filter: InstanceFilter) -> Result<Vec<Instance>> {
        list_all_instances(&*self.api, filter).await
    }

    /// One page of the instances `filter` accepts. See
    /// [`Request::ListInstances`].
    pub async fn list_instances_page(
        &self,
        filter: InstanceFilter,
        page: Page,
    ) -> Result<InstancePage> {
        expect!(self, Request::ListInstances { filter, page }, Instances)
    }

    /// See [`Request::StartInstance`].
    pub async fn start_instance(&self, instance: &str, wait: Wait) -> Result<Instance> {
        let instance = instance.to_owned();
        expect!(self, Request::StartInstance { instance, wait }, Instance)
    }

    /// See [`Request::StopInstance`].
    pub async fn stop_instance(&self, instance: &str, wait: Wait) -> Result<Instance> {
        let instance = instance.to_owned();
        expect!(self, Request::StopInstance { instance, wait }, Instance)
    }

    /// See [`Request::RestartInstance`].
    pub async fn restart_instance(&self, instance: &str, wait: Wait) -> Result<Instance> {
        let instance = instance.to_owned();
        expect!(self, Request::RestartInstance { instance, wait }, Instance)
    }

    /// See [`Request::UpdateInstance`].
    pub async fn update_instance(
        &self,
        instance: &str,
        update: InstanceUpdate,
        wait: Wait,
    ) -> Result<Instance> {
        let instance = instance.to_owned();
        expect!(
            self,
            Request::UpdateInstance {
                instance,
                update,
                wait
            },
            Instance
        )
    }

    /// See [`Request::DeleteInstance`]: `None` once it is gone.
    pub async fn delete_instance(&self, instance: &str, wait: Wait) -> Result<Option<Instance>> {
        let instance = instance.to_owned();
        expect!(
            self,
            Request::DeleteInstance { instance, wait },
            MaybeInstance
        )
    }

    /// See [`Request::PauseInstance`].
    pub async fn pause_instance(&self, instance: &str) -> Result<Instance> {
        let instance = instance.to_owned();
        expect!(self, Request::PauseInstance { instance }, Instance)
    }

    /// See [`Request::ResumeInstance`].
    pub async fn resume_instance(&self, instance: &str) -> Result<Instance> {
        let instance = instance.to_owned();
        expect!(self, Request::ResumeInstance { instance }, Instance)
    }

    /// See [`Request::InstanceStats`].
    pub async fn instance_stats(&self, instance: &str) -> Result<InstanceStats> {
        let instance = instance.to_owned();
        expect!(self, Request::InstanceStats { instance }, Stats)
    }

    /// See [`Request::InstanceStatsHistory`].
    pub async fn instance_stats_history(&self, instance: &str) -> Result<Vec<StatsSample>> {
        let instance = instance.to_owned();
        expect!(
            self,
            Request::InstanceStatsHistory { instance },
            StatsHistory
        )
    }

    /// See [`Request::ReadLog`].
    pub async fn read_log(&self, instance: &str, offset: u64, max: u64) -> Result<LogChunk> {
        let instance = instance.to_owned();
        expect!(
            self,
            Request::ReadLog {
                instance,
                offset,
                max
            },
            Log
        )
    }

    /// See [`Request::FollowLog`].
    pub async fn follow_log(
        &self,
        instance: &str,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<Vec<u8>>>> {
        let instance = instance.to_owned();
        expect!(self, Request::FollowLog { instance, offset }, LogStream)
    }

    /// See [`Request::AttachConsole`].
    pub async fn attach_console(&self, instance: &str) -> Result<ConsoleStream> {
        let instance = instance.to_owned();
        expect!(self, Request::AttachConsole { instance }, Console)
    }

    /// See [`Request::WatchInstances`].
    pub async fn watch_instances(
        &self,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<InstanceEvent>>> {
        expect!(self, Request::WatchInstances { after }, InstanceEvents)
    }

    /// See [`Request::CreateSnapshot`].
    pub async fn create_snapshot(&self, instance: &str, name: &str) -> Result<SnapshotInfo> {
        let (instance, name) = (instance.to_owned(), name.to_owned());
        let to = None;
        expect!(
            self,
            Request::CreateSnapshot { instance, name, to },
            Snapshot
        )
    }

    /// See [`Request::CreateSnapshot`]: takes the snapshot and copies it to
    /// the new directory `to`, or does neither.
    pub async fn create_snapshot_to(
        &self,
        instance: &str,
        name: &str,
        to: PathBuf,
    ) -> Result<SnapshotInfo> {
        let (instance, name, to) = (instance.to_owned(), name.to_owned(), Some(to));
        expect!(
            self,
            Request::CreateSnapshot { instance, name, to },
            Snapshot
        )
    }

    /// See [`Request::ListSnapshots`].
    pub async fn list_snapshots(&self, instance: &str) -> Result<Vec<SnapshotInfo>> {
        let instance = instance.to_owned();
        expect!(self, Request::ListSnapshots { instance }, Snapshots)
    }

    /// See [`Request::RevertSnapshot`].
    pub async fn revert_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let (instance, name) = (instance.to_owned(), name.to_owned());
        self.done(Request::RevertSnapshot { instance, name }).await
    }

    /// See [`Request::DeleteSnapshot`].
    pub async fn delete_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let (instance, name) = (instance.to_owned(), name.to_owned());
        self.done(Request::DeleteSnapshot { instance, name }).await
    }

    /// See [`Request::ExportSnapshot`].
    pub async fn export_snapshot(&self, instance: &str, name: &str, to: PathBuf) -> Result<()> {
        let (instance, name) = (instance.to_owned(), name.to_owned());
        self.done(Request::ExportSnapshot { instance, name, to })
            .await
    }

    /// See [`Request::CloneInstance`].
    pub async fn clone_instance(
        &self,
        source: &str,
        name: &str,
        linked: bool,
        snapshot: Option<SnapshotName>,
        wait: Wait,
    ) -> Result<Instance> {
        let (source, name) = (source.to_owned(), name.to_owned());
        expect!(
            self,
            Request::CloneInstance {
                source,
                name,
                linked,
                snapshot,
                wait
            },
            Instance
        )
    }

    /// See [`Request::MigrateInstance`].
    pub async fn migrate_instance(
        &self,
        instance: &str,
        to: Option<&str>,
        mode: MigrationMode,
    ) -> Result<Instance> {
        let (instance, to) = (instance.to_owned(), to.map(str::to_owned));
        expect!(
            self,
            Request::MigrateInstance { instance, to, mode },
            Instance
        )
    }

    /// See [`Request::RestoreInstance`].
    pub async fn restore_instance(
        &self,
        name: &str,
        from: PathBuf,
        wait: Wait,
    ) -> Result<Instance> {
        let name = name.to_owned();
        expect!(
            self,
            Request::RestoreInstance { name, from, wait },
            Instance
        )
    }

    /// See [`Request::ImportImages`].
    pub async fn import_images(
        &self,
        node: Option<&str>,
        instance_type: InstanceType,
        archive: PathBuf,
        name: Option<ImageName>,
        progress: Progress,
    ) -> Result<Vec<ImageInfo>> {
        let request = Request::ImportImages {
            node: node.map(str::to_owned),
            instance_type,
            archive,
            import_as: ImportAs::Container { name },
            progress,
        };
        expect!(self, request, Images)
    }

    /// See [`Request::ImportImages`] with [`ImportAs::NodeImage`]: `file`
    /// into the node's image store as image `name` of `kind`.
    pub async fn import_node_image(
        &self,
        node: Option<&str>,
        file: PathBuf,
        kind: ImageKind,
        name: NodeImageName,
    ) -> Result<ImageInfo> {
        let request = Request::ImportImages {
            node: node.map(str::to_owned),
            instance_type: InstanceType::Container,
            archive: file,
            import_as: ImportAs::NodeImage { kind, name },
            progress: Progress::ignore(),
        };
        let images: Vec<ImageInfo> = expect!(self, request, Images)?;
        images.into_iter().next().ok_or_else(|| {
            Error::Internal("an import answered without the image it imported".to_owned())
        })
    }

    /// See [`Request::PullImage`]; the image pulled.
    pub async fn pull_image(
        &self,
        node: Option<&str>,
        instance_type: InstanceType,
        reference: ImageRef,
        options: PullOptions,
        progress: Progress<PullProgress>,
    ) -> Result<ImageInfo> {
        let request = Request::PullImage {
            node: node.map(str::to_owned),
            instance_type,
            reference,
            options,
            progress,
        };
        let images: Vec<ImageInfo> = expect!(self, request, Images)?;
        images.into_iter().next().ok_or_else(|| {
            Error::Internal("a pull answered without the image it pulled".to_owned())
        })
    }

    /// See [`Request::ListImages`].
    pub async fn list_images(
        &self,
        node: Option<&str>,
        instance_type: InstanceType,
    ) -> Result<Vec<ImageInfo>> {
        let node = node.map(str::to_owned);
        expect!(
            self,
            Request::ListImages {
                node,
                instance_type
            },
            Images
        )
    }

    /// See [`Request::RemoveImage`].
    pub async fn remove_image(
        &self,
        node: Option<&str>,
        instance_type: InstanceType,
        name: &str,
    ) -> Result<()> {
        self.remove_image_of_kind(node, instance_type, ImageKind::Container, name)
            .await
    }

    /// See [`Request::RemoveImage`], for an image of any kind.
    pub async fn remove_image_of_kind(
        &self,
        node: Option<&str>,
        instance_type: InstanceType,
        kind: ImageKind,
        name: &str,
    ) -> Result<()> {
        self.done(Request::RemoveImage {
            node: node.map(str::to_owned),
            instance_type,
            kind,
            name: name.to_owned(),
        })
        .await
    }

    /// See [`Request::BackupState`].
    pub async fn backup_state(&self, to: PathBuf) -> Result<StoreSummary> {
        expect!(self, Request::BackupState { to }, StoreSummary)
    }

    /// See [`Request::ListNodes`].
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        expect!(self, Request::ListNodes, Nodes)
    }

    /// See [`Request::GetNode`].
    pub async fn get_node(&self, node: &str) -> Result<Node> {
        let node = node.to_owned();
        expect!(self, Request::GetNode { node }, Node)
    }

    /// See [`Request::NodeStatsHistory`].
    pub async fn node_stats_history(&self, node: &str) -> Result<Vec<NodeUsageSample>> {
        let node = node.to_owned();
        expect!(self, Request::NodeStatsHistory { node }, NodeStatsHistory)
    }

    /// See [`Request::CordonNode`].
    pub async fn cordon_node(&self, node: &str) -> Result<Node> {
        let node = node.to_owned();
        expect!(self, Request::CordonNode { node }, Node)
    }

    /// See [`Request::UncordonNode`].
    pub async fn uncordon_node(&self, node: &str) -> Result<Node> {
        let node = node.to_owned();
        expect!(self, Request::UncordonNode { node }, Node)
    }

    /// See [`Request::DrainNode`].
    pub async fn drain_node(&self, node: &str) -> Result<DrainReport> {
        let node = node.to_owned();
        expect!(self, Request::DrainNode { node }, Drain)
    }

    /// See [`Request::SetMaintenance`].
    pub async fn set_maintenance(&self, node: &str, on: bool) -> Result<DrainReport> {
        let node = node.to_owned();
        expect!(self, Request::SetMaintenance { node, on }, Drain)
    }

    /// See [`Request::DecommissionNode`].
    pub async fn decommission_node(&self, node: &str) -> Result<DrainReport> {
        let node = node.to_owned();
        expect!(self, Request::DecommissionNode { node }, Drain)
    }

    /// See [`Request::DeregisterNode`].
    pub async fn deregister_node(&self, node: &str) -> Result<()> {
        let node = node.to_owned();
        self.done(Request::DeregisterNode { node }).await
    }

    /// See [`Request::LabelNode`]: `labels` as `kubectl label` takes them,
    /// `KEY=VALUE` to set one, `KEY-` to remove one. Errors also:
    /// `InvalidArgument` on `labels` (see [`LabelChanges::parse`]).
    pub async fn label_node<S: AsRef<str>>(&self, node: &str, labels: &[S]) -> Result<Node> {
        let changes = LabelChanges::parse(labels)?;
        self.change_node_labels(node, changes).await
    }

    /// See [`Request::LabelNode`].
    pub async fn change_node_labels(&self, node: &str, changes: LabelChanges) -> Result<Node> {
        let node = node.to_owned();
        expect!(self, Request::LabelNode { node, changes }, Node)
    }

    /// See [`Request::ChangeNodeTraits`]: declares `traits` on the node.
    /// Errors also: `InvalidArgument` on `traits`.
    pub async fn add_node_traits<S: AsRef<str>>(&self, node: &str, traits: &[S]) -> Result<Node> {
        let changes = TraitChanges::adding(traits)?;
        self.change_node_traits(node, changes).await
    }

    /// See [`Request::ChangeNodeTraits`]: takes `traits` back. Errors also:
    /// `InvalidArgument` on `traits`.
    pub async fn remove_node_traits<S: AsRef<str>>(
        &self,
        node: &str,
        traits: &[S],
    ) -> Result<Node> {
        let changes = TraitChanges::removing(traits)?;
        self.change_node_traits(node, changes).await
    }

    /// See [`Request::ChangeNodeTraits`].
    pub async fn change_node_traits(&self, node: &str, changes: TraitChanges) -> Result<Node> {
        let node = node.to_owned();
        expect!(self, Request::ChangeNodeTraits { node, changes }, Node)
    }

    /// See [`Request::SetAllocationRatios`].
    pub async fn set_allocation_ratios(
        &self,
        node: &str,
        cpu: Option<AllocationRatio>,
        memory: Option<AllocationRatio>,
    ) -> Result<Node> {
        let node = node.to_owned();
        expect!(
            self,
            Request::SetAllocationRatios { node, cpu, memory },
            Node
        )
    }

    /// See [`Request::SetNodeCarbon`].
    pub async fn set_node_carbon(
        &self,
        node: &str,
        intensity: Option<CarbonIntensity>,
    ) -> Result<Node> {
        let node = node.to_owned();
        expect!(self, Request::SetNodeCarbon { node, intensity }, Node)
    }

    /// See [`Request::WatchNodes`].
    pub async fn watch_nodes(
        &self,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<NodeEvent>>> {
        expect!(self, Request::WatchNodes { after }, NodeEvents)
    }

    /// See [`Request::ClusterInfo`].
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        expect!(self, Request::ClusterInfo, ClusterInfo)
    }

    /// See [`Request::CreateNetwork`].
    pub async fn create_network(&self, request: CreateNetwork) -> Result<Network> {
        expect!(self, Request::CreateNetwork { request }, Network)
    }

    /// See [`Request::GetNetwork`].
    pub async fn get_network(&self, name: &str) -> Result<Network> {
        let name = name.to_owned();
        expect!(self, Request::GetNetwork { name }, Network)
    }

    /// See [`Request::NetworkStatus`].
    pub async fn network_status(&self, name: &str) -> Result<NetworkStatus> {
        let name = name.to_owned();
        expect!(self, Request::NetworkStatus { name }, NetworkStatus)
    }

    /// See [`Request::RepairNetwork`].
    pub async fn repair_network(&self, name: &str) -> Result<NetworkStatus> {
        let name = name.to_owned();
        expect!(self, Request::RepairNetwork { name }, NetworkStatus)
    }

    /// See [`Request::ListNetworks`].
    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        expect!(self, Request::ListNetworks, Networks)
    }

    /// See [`Request::DeleteNetwork`].
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.done(Request::DeleteNetwork { name }).await
    }

    /// See [`Request::CreateAggregate`]. Errors also: `InvalidArgument` on
    /// `name` or `metadata` (a key or value that is not one).
    pub async fn create_aggregate(
        &self,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Aggregate> {
        let name = aggregate_name(name)?;
        let metadata = typed_metadata("metadata", metadata)?;
        expect!(self, Request::CreateAggregate { name, metadata }, Aggregate)
    }

    /// See [`Request::DeleteAggregate`]. Errors also: `InvalidArgument` on `name`.
    pub async fn delete_aggregate(&self, name: &str) -> Result<()> {
        let name = aggregate_name(name)?;
        self.done(Request::DeleteAggregate { name }).await
    }

    /// See [`Request::ListAggregates`].
    pub async fn list_aggregates(&self) -> Result<Vec<Aggregate>> {
        expect!(self, Request::ListAggregates, Aggregates)
    }

    /// See [`Request::GetAggregate`]. Errors also: `InvalidArgument` on `name`.
    pub async fn get_aggregate(&self, name: &str) -> Result<Aggregate> {
        let name = aggregate_name(name)?;
        expect!(self, Request::GetAggregate { name }, Aggregate)
    }

    /// See [`Request::SetAggregateMetadata`]: `metadata` as `node label`
    /// takes labels, `KEY=VALUE` to set one, `KEY-` to remove one. Errors
    /// also: `InvalidArgument` on `name` or `metadata`.
    pub async fn set_aggregate_metadata<S: AsRef<str>>(
        &self,
        name: &str,
        metadata: &[S],
    ) -> Result<Aggregate> {
        let name = aggregate_name(name)?;
        let changes = LabelChanges::parse(metadata).map_err(|e| e.on_field("metadata"))?;
        self.change_aggregate_metadata(&name, changes).await
    }

    /// See [`Request::SetAggregateMetadata`].
    pub async fn change_aggregate_metadata(
        &self,
        name: &AggregateName,
        changes: LabelChanges,
    ) -> Result<Aggregate> {
        let name = name.clone();
        expect!(
            self,
            Request::SetAggregateMetadata { name, changes },
            Aggregate
        )
    }

    /// See [`Request::AddAggregateNode`]. Errors also: `InvalidArgument` on `name`.
    pub async fn add_aggregate_node(&self, name: &str, node: &str) -> Result<Aggregate> {
        let name = aggregate_name(name)?;
        let node = node.to_owned();
        expect!(self, Request::AddAggregateNode { name, node }, Aggregate)
    }

    /// See [`Request::RemoveAggregateNode`]. Errors also: `InvalidArgument` on `name`.
    pub async fn remove_aggregate_node(&self, name: &str, node: &str) -> Result<Aggregate> {
        let name = aggregate_name(name)?;
        let node = node.to_owned();
        expect!(self, Request::RemoveAggregateNode { name, node }, Aggregate)
    }

    /// See [`Request::CreateTemplate`]. Errors also: `InvalidArgument` on
    /// `name` (not a template name).
    pub async fn create_template(&self, name: &str, spec: TemplateSpec) -> Result<TemplateInfo> {
        let name = template_name(name)?;
        expect!(self, Request::CreateTemplate { name, spec }, Template)
    }

    /// See [`Request::UpdateTemplate`]: the template with its new version.
    pub async fn update_template(&self, name: &str, spec: TemplateSpec) -> Result<TemplateInfo> {
        let name = template_name(name)?;
        expect!(self, Request::UpdateTemplate { name, spec }, Template)
    }

    /// See [`Request::GetTemplate`].
    pub async fn get_template(&self, name: &str, version: Option<u32>) -> Result<TemplateInfo> {
        let name = template_name(name)?;
        expect!(self, Request::GetTemplate { name, version }, Template)
    }

    /// See [`Request::ListTemplates`].
    pub async fn list_templates(&self) -> Result<Vec<TemplateInfo>> {
        expect!(self, Request::ListTemplates, Templates)
    }

    /// See [`Request::DeleteTemplate`].
    pub async fn delete_template(&self, name: &str, version: Option<u32>) -> Result<()> {
        let name = template_name(name)?;
        self.done(Request::DeleteTemplate { name, version }).await
    }

    /// See [`Request::CreateFromTemplate`].
    pub async fn create_from_template(
        &self,
        request: FromTemplate,
        wait: Wait,
    ) -> Result<Instance> {
        expect!(
            self,
            Request::CreateFromTemplate { request, wait },
            Instance
        )
    }

    /// See [`Request::CreateUser`]: the user and its first token.
    pub async fn create_user(
        &self,
        name: &str,
        role: Role,
        projects: Vec<String>,
        token_ttl: Option<std::time::Duration>,
    ) -> Result<(UserInfo, IssuedToken)> {
        let request = Request::CreateUser {
            name: name.to_owned(),
            role,
            projects,
            token_ttl,
        };
        let operation = request.operation();
        match self.api.call(request).await? {
            Response::NewUser(user, token) => Ok((user, token)),
            other => Err(unexpected(operation, "NewUser", &other)),
        }
    }

    /// See [`Request::ListUsers`].
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        expect!(self, Request::ListUsers, Users)
    }

    /// See [`Request::DeleteUser`].
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.done(Request::DeleteUser { name }).await
    }

    /// See [`Request::CreateToken`].
    pub async fn create_token(
        &self,
        owner: Option<&str>,
        terms: TokenTerms,
    ) -> Result<IssuedToken> {
        let owner = owner.map(str::to_owned);
        expect!(self, Request::CreateToken { owner, terms }, Token)
    }

    /// See [`Request::ListTokens`].
    pub async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>> {
        let owner = owner.map(str::to_owned);
        expect!(self, Request::ListTokens { owner }, Tokens)
    }

    /// See [`Request::RevokeToken`].
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let id = id.to_owned();
        expect!(self, Request::RevokeToken { id }, TokenInfo)
    }

    /// See [`Request::CreateProject`].
    pub async fn create_project(&self, name: &str, quota: Quota) -> Result<ProjectInfo> {
        let name = name.to_owned();
        expect!(self, Request::CreateProject { name, quota }, Project)
    }

    /// See [`Request::ListProjects`].
    pub async fn list_projects(&self) -> Result<Vec<ProjectInfo>> {
        expect!(self, Request::ListProjects, Projects)
    }

    /// See [`Request::GetProject`].
    pub async fn get_project(&self, name: &str) -> Result<ProjectInfo> {
        let name = name.to_owned();
        expect!(self, Request::GetProject { name }, Project)
    }

    /// See [`Request::UpdateProject`].
    pub async fn update_project(&self, name: &str, quota: Quota) -> Result<ProjectInfo> {
        let name = name.to_owned();
        expect!(self, Request::UpdateProject { name, quota }, Project)
    }

    /// See [`Request::DeleteProject`].
    pub async fn delete_project(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.done(Request::DeleteProject { name }).await
    }

    /// See [`Request::ListAudit`].
    pub async fn list_audit(&self, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        expect!(self, Request::ListAudit { query }, AuditRecords)
    }

    /// See [`Request::ListOperations`].
    pub async fn list_operations(
        &self,
        filter: OperationFilter,
        page: Page,
    ) -> Result<OperationPage> {
        expect!(self, Request::ListOperations { filter, page }, Operations)
    }

    /// Every operation `filter` accepts, oldest first (by start, then
    /// id), following the pages a server answers. Errors: those of
    /// [`Request::ListOperations`].
    pub async fn list_all_operations(&self, filter: OperationFilter) -> Result<Vec<Operation>> {
        let mut all = Vec::new();
        let mut page = Page::all();
        loop {
            let listed = self.list_operations(filter.clone(), page).await?;
            all.extend(listed.operations);
            match listed.next_page {
                Some(token) => {
                    page = Page {
                        size: 0,
                        token: Some(token),
                    }
                }
                None => break,
            }
        }
        all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(all)
    }

    /// See [`Request::GetOperation`].
    pub async fn get_operation(&self, id: &OperationId) -> Result<Operation> {
        let id = id.clone();
        expect!(self, Request::GetOperation { id }, Operation)
    }

    /// See [`Request::WatchOperation`].
    pub async fn watch_operation(
        &self,
        id: &OperationId,
    ) -> Result<BoxStream<'static, Result<Operation>>> {
        let id = id.clone();
        expect!(self, Request::WatchOperation { id }, OperationUpdates)
    }

    /// See [`Request::CancelOperation`].
    pub async fn cancel_operation(&self, id: &OperationId) -> Result<Operation> {
        let id = id.clone();
        expect!(self, Request::CancelOperation { id }, Operation)
    }

    /// Follows operation `id` ([`Client::watch_operation`]) until it has
    /// finished, and returns it as it ended, whatever its phase (the
    /// caller tells success from failure by it). Errors: those of
    /// [`Client::follow_operation`].
    pub async fn wait_operation(&self, id: &OperationId) -> Result<Operation> {
        self.follow_operation(id, |_| Ok(())).await
    }

    /// Follows operation `id` until it has finished, handing each update
    /// to `seen` (the same state may come twice after a reconnect), and
    /// returns it as it ended. A watch that breaks because the deployment
    /// cannot be reached (a server restarting) is opened again, every
    /// [`FOLLOW_RETRY`] while the server stays unreachable for less than
    /// [`FOLLOW_PATIENCE`]: the operation is kept in the store and goes on
    /// meanwhile. Errors: `NotFound`, `seen`'s, the watch's other errors,
    /// and `Unavailable` once the patience ran out.
    pub async fn follow_operation(
        &self,
        id: &OperationId,
        mut seen: impl FnMut(&Operation) -> Result<()> + Send,
    ) -> Result<Operation> {
        use futures::StreamExt;
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        loop {
            let broken = match self.watch_operation(id).await {
                Ok(mut updates) => loop {
                    match updates.next().await {
                        Some(Ok(update)) => {
                            unreachable_since = None;
                            seen(&update)?;
                            if update.phase.is_finished() {
                                return Ok(update);
                            }
                        }
                        Some(Err(e)) => break e,
                        None => {
                            break Error::Unavailable {
                                what: format!(
                                    "the watch of operation `{id}` (it ended before the \
                                     operation did)"
                                ),
                                source: None,
                            }
                        }
                    }
                },
                Err(e) => e,
            };
            if broken.kind() != crate::ErrorKind::Unavailable {
                return Err(broken);
            }
            let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= FOLLOW_PATIENCE {
                return Err(broken);
            }
            tokio::time::sleep(FOLLOW_RETRY).await;
        }
    }

    /// [`Client::wait_operation`], for at most `timeout` (`None`: as long
    /// as it takes), for the bindings' `wait_operation(id, timeout)`.
    /// Errors: those of `wait_operation`, and `Unavailable` once the
    /// timeout passed (the operation goes on).
    pub async fn wait_operation_within(
        &self,
        id: &OperationId,
        timeout: Option<std::time::Duration>,
    ) -> Result<Operation> {
        let Some(timeout) = timeout else {
            return self.wait_operation(id).await;
        };
        tokio::time::timeout(timeout, self.wait_operation(id))
            .await
            .map_err(|_| Error::Unavailable {
                what: format!(
                    "the end of operation `{id}` (it did not finish within {timeout:?}; it goes on)"
                ),
                source: None,
            })?
    }

    async fn done(&self, request: Request) -> Result<()> {
        let operation = request.operation();
        match self.api.call(request).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(operation, "Done", &other)),
        }
    }
}

/// `name` as an aggregate name. Errors: `InvalidArgument` on `name`.
fn aggregate_name(name: &str) -> Result<AggregateName> {
    AggregateName::try_from(name).map_err(|e| e.at("name"))
}

/// `name` as a template name. Errors: `InvalidArgument` on `name`.
fn template_name(name: &str) -> Result<TemplateName> {
    TemplateName::try_from(name).map_err(|e| e.at("name"))
}

/// Every instance `filter` accepts, in name order, from `api`: each page of
/// [`Request::ListInstances`] in turn. What [`Client::list_instances`]
/// does, for a wrapper that holds an `Api` rather than a `Client`.
pub async fn list_all_instances<A: Api + ?Sized>(
    api: &A,
    filter: InstanceFilter,
) -> Result<Vec<Instance>> {
    let mut page = Page::all();
    let mut instances = Vec::new();
    loop {
        let request = Request::ListInstances {
            filter: filter.clone(),
            page: page.clone(),
        };
        let operation = request.operation();
        let listed = match api.call(request).await? {
            Response::Instances(listed) => listed,
            other => return Err(unexpected(operation, "Instances", &other)),
        };
        instances.extend(listed.instances);
        match listed.next_page {
            Some(next) => page.token = Some(next),
            None => return Ok(instances),
        }
    }
}
