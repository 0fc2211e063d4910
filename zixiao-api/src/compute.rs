//! The ComputeService server: the instance API of a [`Controller`] over gRPC.
//! Calls write intent and return; with `wait` they also wait until the
//! instance has settled ([`Controller::settle`]) before answering. Networks are created and
//! deleted synchronously, on every node that sets them up.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use zixiao_core::model::CreateNetwork;
use zixiao_core::{Controller, CreateInstance, Instance, InstanceFilter};

use crate::console::{self, OutputStream};
use crate::json;
use crate::pb::compute_service_server::{ComputeService, ComputeServiceServer};
use crate::pb::{
    console_input, ConsoleInput, CreateInstanceRequest, Empty, InstanceAction, InstanceRef,
    JsonList, JsonObject, LogChunk, NetworkRef, ReadLogRequest, SnapshotRef, WatchRequest,
};
use crate::status::from_error;

/// The ComputeService over a controller.
#[derive(Debug, Clone)]
pub struct ComputeServer {
    controller: Controller,
}

impl ComputeServer {
    /// Serves `controller`'s instance API.
    pub fn new(controller: Controller) -> Self {
        ComputeServer { controller }
    }

    /// The tonic service, with the protocol's message size limits.
    pub fn into_service(self) -> ComputeServiceServer<Self> {
        ComputeServiceServer::new(self)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    }

    /// Runs one instance action (start, stop, restart, delete) named by
    /// `request`, and answers with the instance, converged if asked.
    async fn act<F, Fut>(
        &self,
        request: Request<InstanceAction>,
        action: F,
    ) -> Result<Response<JsonObject>, Status>
    where
        F: FnOnce(Controller, String) -> Fut,
        Fut: std::future::Future<Output = zixiao_core::Result<Instance>>,
    {
        let request = request.into_inner();
        required("instance", &request.instance)?;
        let instance = action(self.controller.clone(), request.instance)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(self.settle(instance, request.wait).await?.as_ref()))
    }

    async fn settle(&self, instance: Instance, wait: bool) -> Result<Option<Instance>, Status> {
        if !wait {
            return Ok(Some(instance));
        }
        match self.controller.settle(&instance.id).await {
            Ok(after) => Ok(after),
            Err(e) if e.kind() == zixiao_core::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(from_error(&e)),
        }
    }
}

fn object<T: serde::Serialize>(value: Option<&T>) -> Response<JsonObject> {
    Response::new(JsonObject {
        json: value.map(json::encode).unwrap_or_default(),
    })
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(from_error(&zixiao_core::Error::invalid(field, "missing")));
    }
    Ok(())
}

/// A boxed stream of JSON objects.
pub type JsonStream = Pin<Box<dyn Stream<Item = Result<JsonObject, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ComputeService for ComputeServer {
    async fn create_instance(
        &self,
        request: Request<CreateInstanceRequest>,
    ) -> Result<Response<JsonObject>, Status> {
        let request = request.into_inner();
        let create: CreateInstance =
            json::decode("request_json", &request.request_json).map_err(|e| from_error(&e))?;
        let created = self
            .controller
            .create_instance(create)
            .await
            .map_err(|e| from_error(&e))?;
        let after = self.settle(created, request.wait).await?;
        Ok(object(after.as_ref()))
    }

    async fn get_instance(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<JsonObject>, Status> {
        let name = &request.get_ref().instance;
        required("instance", name)?;
        let instance = self
            .controller
            .get_instance(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&instance)))
    }

    async fn list_instances(
        &self,
        request: Request<JsonObject>,
    ) -> Result<Response<JsonList>, Status> {
        let bytes = &request.get_ref().json;
        let filter: InstanceFilter = if bytes.is_empty() {
            InstanceFilter::default()
        } else {
            json::decode("json", bytes).map_err(|e| from_error(&e))?
        };
        let instances = self
            .controller
            .list_instances(&filter)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(JsonList {
            items: instances.iter().map(json::encode).collect(),
        }))
    }

    async fn start_instance(
        &self,
        request: Request<InstanceAction>,
    ) -> Result<Response<JsonObject>, Status> {
        self.act(request, |c, id| async move { c.start_instance(&id).await })
            .await
    }

    async fn stop_instance(
        &self,
        request: Request<InstanceAction>,
    ) -> Result<Response<JsonObject>, Status> {
        self.act(request, |c, id| async move { c.stop_instance(&id).await })
            .await
    }

    async fn restart_instance(
        &self,
        request: Request<InstanceAction>,
    ) -> Result<Response<JsonObject>, Status> {
        self.act(
            request,
            |c, id| async move { c.restart_instance(&id).await },
        )
        .await
    }

    async fn delete_instance(
        &self,
        request: Request<InstanceAction>,
    ) -> Result<Response<JsonObject>, Status> {
        self.act(request, |c, id| async move { c.delete_instance(&id).await })
            .await
    }

    async fn get_instance_stats(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<JsonObject>, Status> {
        let name = &request.get_ref().instance;
        required("instance", name)?;
        let stats = self
            .controller
            .instance_stats(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&stats)))
    }

    async fn read_log(
        &self,
        request: Request<ReadLogRequest>,
    ) -> Result<Response<LogChunk>, Status> {
        let request = request.into_inner();
        required("instance", &request.instance)?;
        let reader = self
            .controller
            .logs(&request.instance)
            .await
            .map_err(|e| from_error(&e))?;
        let max = usize::try_from(request.max)
            .unwrap_or(usize::MAX)
            .min(crate::MAX_MESSAGE_BYTES / 2);
        let chunk = reader
            .read(request.offset, max)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(LogChunk {
            data: chunk.data,
            next_offset: chunk.next_offset,
        }))
    }

    type WatchInstancesStream = JsonStream;

    async fn watch_instances(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchInstancesStream>, Status> {
        let after = match request.get_ref().after_revision {
            0 => self
                .controller
                .current_revision()
                .await
                .map_err(|e| from_error(&e))?,
            after => after,
        };
        let stream = self
            .controller
            .watch_instances(after)
            .await
            .map_err(|e| from_error(&e))?;
        let stream = stream.map(|event| match event {
            Ok(event) => Ok(JsonObject {
                json: json::encode(&event),
            }),
            Err(e) => Err(from_error(&e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type AttachConsoleStream = OutputStream;

    async fn attach_console(
        &self,
        request: Request<Streaming<ConsoleInput>>,
    ) -> Result<Response<Self::AttachConsoleStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the console session sent nothing"))?;
        let Some(console_input::Input::Instance(name)) = first.input else {
            return Err(Status::invalid_argument(
                "the first console message must name the instance",
            ));
        };
        let console = self
            .controller
            .attach_console(&name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(console::serve(console, input)))
    }

    async fn create_network(
        &self,
        request: Request<JsonObject>,
    ) -> Result<Response<JsonObject>, Status> {
        let create: CreateNetwork =
            json::decode("json", &request.get_ref().json).map_err(|e| from_error(&e))?;
        let network = self
            .controller
            .create_network(create)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&network)))
    }

    async fn get_network(
        &self,
        request: Request<NetworkRef>,
    ) -> Result<Response<JsonObject>, Status> {
        let name = &request.get_ref().network;
        required("network", name)?;
        let network = self
            .controller
            .get_network(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&network)))
    }

    async fn list_networks(&self, _request: Request<Empty>) -> Result<Response<JsonList>, Status> {
        let networks = self
            .controller
            .list_networks()
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(JsonList {
            items: networks.iter().map(json::encode).collect(),
        }))
    }

    async fn delete_network(
        &self,
        request: Request<NetworkRef>,
    ) -> Result<Response<Empty>, Status> {
        let name = &request.get_ref().network;
        required("network", name)?;
        self.controller
            .delete_network(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn snapshot_instance(
        &self,
        request: Request<SnapshotRef>,
    ) -> Result<Response<JsonObject>, Status> {
        let request = request.into_inner();
        required("instance", &request.instance)?;
        let taken = self
            .controller
            .snapshot_instance(&request.instance, &request.snapshot)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&taken)))
    }

    async fn list_snapshots(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<JsonList>, Status> {
        let name = &request.get_ref().instance;
        required("instance", name)?;
        let all = self
            .controller
            .list_snapshots(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(JsonList {
            items: all.iter().map(json::encode).collect(),
        }))
    }

    async fn revert_snapshot(
        &self,
        request: Request<SnapshotRef>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        required("instance", &request.instance)?;
        self.controller
            .revert_snapshot(&request.instance, &request.snapshot)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn delete_snapshot(
        &self,
        request: Request<SnapshotRef>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        required("instance", &request.instance)?;
        self.controller
            .delete_snapshot(&request.instance, &request.snapshot)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn pause_instance(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<JsonObject>, Status> {
        let name = &request.get_ref().instance;
        required("instance", name)?;
        let paused = self
            .controller
            .pause_instance(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&paused)))
    }

    async fn resume_instance(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<JsonObject>, Status> {
        let name = &request.get_ref().instance;
        required("instance", name)?;
        let resumed = self
            .controller
            .resume_instance(name)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(object(Some(&resumed)))
    }
}
