//! A hand-written fake runtime for the multi-process failure tests: its
//! instances are state files in the node's directory, and every start and
//! stop is appended, with the machine's monotonic time, to the node's
//! event log (zixiao-testing's `EventLog`, as the real runtimes' counting
//! wrapper does), so "never on two nodes at once" is checked from each
//! node's own records. Its console is an echo served by the fake instance
//! in the agent's process, after a first line naming the node and the
//! instance, so a console attach through a server can be checked end to
//! end. The same tests also run the real drivers (see `roles`).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zixiao_cluster::timing::monotonic_ms;
use zixiao_core::driver::{Console, ConsoleStream};
use zixiao_core::{Driver, DriverError, Instance, InstanceType, LogChunk, RuntimeState};
use zixiao_testing::counting_driver::CreateHold;
use zixiao_testing::runtime_events::{Event, EventLog};
use zixiao_testing::runtimes::{Held, Presence, RuntimeView};

#[derive(Debug)]
pub(crate) struct FileDriver {
    dir: PathBuf,
    node: String,
}

impl FileDriver {
    pub(crate) fn new(node_dir: &Path) -> Self {
        let dir = node_dir.join("runtime");
        let _ = std::fs::create_dir_all(&dir);
        let node = node_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        FileDriver { dir, node }
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.state"))
    }

    fn state(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.state_path(id)).ok()
    }

    fn set(&self, id: &str, state: &str) -> Result<(), DriverError> {
        std::fs::write(self.state_path(id), state).map_err(|e| DriverError::Runtime {
            operation: format!("write state of {id}"),
            source: Box::new(e),
        })
    }

    fn log(&self, event: Event, id: &str) -> Result<(), DriverError> {
        EventLog::in_dir(&self.dir)
            .append(event, id, monotonic_ms())
            .map_err(|e| DriverError::Runtime {
                operation: "log event".to_owned(),
                source: Box::new(e),
            })
    }
}

/// The fake runtime of the node whose runtime directory is `dir`, seen
/// from outside: its state files.
#[derive(Debug)]
pub(crate) struct FileRuntime {
    pub(crate) dir: PathBuf,
}

impl FileRuntime {
    fn states(&self) -> Vec<(String, PathBuf, String)> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let id = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".state")?
                    .to_owned();
                let state = std::fs::read_to_string(&path).ok()?;
                Some((id, path, state))
            })
            .collect()
    }
}

impl RuntimeView for FileRuntime {
    fn held(&self) -> Result<Vec<Held>, String> {
        Ok(self
            .states()
            .into_iter()
            .map(|(instance, _, state)| Held {
                instance,
                presence: if state == "running" {
                    Presence::Live
                } else {
                    Presence::Residue
                },
                what: format!("a fake instance ({state})"),
            })
            .collect())
    }

    fn power_off(&self) -> Result<(), String> {
        for (_, path, state) in self.states() {
            if state == "running" {
                std::fs::write(&path, "exited").map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for FileDriver {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Container
    }

    fn name(&self) -> &str {
        "files"
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        // While the test holds creates on this node, a create says it began
        // and waits: the test kills processes mid-create.
        CreateHold::in_dir(&self.dir).wait(&instance.id).await;
        if self.state(&instance.id).is_none() {
            self.set(&instance.id, "created")?;
        }
        Ok(())
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        match self.state(&instance.id).as_deref() {
            None => Err(DriverError::NotFound(format!("instance {}", instance.id))),
            Some("running") => Ok(()),
            Some(_) => {
                self.set(&instance.id, "running")?;
                self.log(Event::Start, &instance.id)
            }
        }
    }

    async fn stop(
        &self,
        instance: &Instance,
        _grace: std::time::Duration,
    ) -> Result<(), DriverError> {
        if self.state(&instance.id).as_deref() == Some("running") {
            self.set(&instance.id, "exited")?;
            self.log(Event::Stop, &instance.id)?;
        }
        Ok(())
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        self.stop(instance, std::time::Duration::ZERO).await?;
        match std::fs::remove_file(self.state_path(&instance.id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DriverError::Runtime {
                operation: "delete".to_owned(),
                source: Box::new(e),
            }),
            _ => Ok(()),
        }
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        Ok(match self.state(&instance.id).as_deref() {
            None => RuntimeState::Missing,
            Some("created") => RuntimeState::Created,
            Some("running") => RuntimeState::Running,
            Some(_) => RuntimeState::Exited {
                code: 137,
                oom_killed: false,
                at: None,
            },
        })
    }

    async fn read_log(
        &self,
        instance: &Instance,
        _: u64,
        _: usize,
    ) -> Result<LogChunk, DriverError> {
        Err(DriverError::NotFound(format!("log of {}", instance.id)))
    }

    fn console(&self) -> Option<&dyn Console> {
        Some(self)
    }
}

#[async_trait]
impl Console for FileDriver {
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError> {
        if self.state(&instance.id).as_deref() != Some("running") {
            return Err(DriverError::FailedPrecondition(format!(
                "instance {} is not running",
                instance.id
            )));
        }
        let (user, fake) = tokio::io::duplex(4096);
        let banner = format!("{} {}\n", self.node, instance.id);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut typed, mut shown) = tokio::io::split(fake);
            if shown.write_all(banner.as_bytes()).await.is_ok() {
                // Echoes until the user closes its side.
                let _ = tokio::io::copy(&mut typed, &mut shown).await;
            }
        });
        let (output, input) = tokio::io::split(user);
        Ok(ConsoleStream {
            output: Box::new(output),
            input: Box::new(input),
        })
    }
}
