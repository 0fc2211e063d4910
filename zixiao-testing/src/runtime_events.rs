//! A node's log of the runtime calls that make and run workloads, shared by
//! every process of the node (its agent, its watchdog, the test that kills
//! them): one line per event, `<event> <instance id> <monotonic ms>`,
//! appended with `O_APPEND`, so writers in several processes never
//! interleave a line. From it a test counts the creates and starts that
//! reached a node's runtime, and computes the intervals in which the node
//! ran each instance; [`never_twice`] compares those intervals across nodes.
//!
//! The times must come from one clock for every process of the machine
//! (`CLOCK_MONOTONIC`): the writers take it as an argument.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What happened to an instance on a node's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    /// A create reached the runtime (logged as it is asked).
    Create,
    /// The workload may run from now (logged as the start is asked).
    Start,
    /// The workload no longer runs (logged once the runtime said so).
    Stop,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Create => "create",
            Event::Start => "start",
            Event::Stop => "stop",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "create" => Some(Event::Create),
            "start" => Some(Event::Start),
            "stop" => Some(Event::Stop),
            _ => None,
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// What happened.
    pub event: Event,
    /// To which instance.
    pub instance: String,
    /// When, in monotonic ms.
    pub at_ms: u64,
}

/// An interval in which a node ran an instance, in monotonic ms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Run {
    /// From its start.
    pub from_ms: u64,
    /// To its stop (or "now", for a run not stopped yet).
    pub to_ms: u64,
    /// The instance.
    pub instance: String,
}

/// The event log of one node.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    /// The log `events.log` in the node's runtime directory `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        EventLog {
            path: dir.join("events.log"),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` of instance `id` at `at_ms`; durable when it returns.
    pub fn append(&self, event: Event, id: &str, at_ms: u64) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        log.write_all(format!("{} {id} {at_ms}\n", event.as_str()).as_bytes())?;
        log.sync_data()
    }

    /// Every event so far, in the order logged (unreadable lines skipped).
    pub fn events(&self) -> Vec<Logged> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut words = line.split(' ');
                let event = Event::parse(words.next()?)?;
                let instance = words.next()?.to_owned();
                let at_ms = words.next()?.parse().ok()?;
                Some(Logged {
                    event,
                    instance,
                    at_ms,
                })
            })
            .collect()
    }

    /// How many times `event` was logged, per instance.
    pub fn counts(&self, event: Event) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for logged in self.events().into_iter().filter(|l| l.event == event) {
            *counts.entry(logged.instance).or_default() += 1;
        }
        counts
    }

    /// The intervals in which the node ran each instance; a run not
    /// stopped yet ends at `now_ms`. A start logged while a run is open
    /// (an idempotent start of a running workload) extends nothing: the run
    /// keeps its first start, so an overlap is never hidden.
    pub fn runs(&self, now_ms: u64) -> Vec<Run> {
        let mut open: BTreeMap<String, u64> = BTreeMap::new();
        let mut runs = Vec::new();
        for logged in self.events() {
            match logged.event {
                Event::Create => {}
                Event::Start => {
                    open.entry(logged.instance).or_insert(logged.at_ms);
                }
                Event::Stop => {
                    if let Some(from_ms) = open.remove(&logged.instance) {
                        runs.push(Run {
                            from_ms,
                            to_ms: logged.at_ms,
                            instance: logged.instance,
                        });
                    }
                }
            }
        }
        runs.extend(open.into_iter().map(|(instance, from_ms)| Run {
            from_ms,
            to_ms: now_ms,
            instance,
        }));
        runs
    }

    /// Closes every open run at `at_ms`: the node lost its power then, so
    /// whatever it ran stopped. Returns the instances whose runs it closed.
    pub fn stop_all(&self, at_ms: u64) -> std::io::Result<Vec<String>> {
        let open: Vec<String> = self
            .runs(at_ms)
            .into_iter()
            .filter(|run| run.to_ms == at_ms)
            .map(|run| run.instance)
            .collect();
        for id in &open {
            self.append(Event::Stop, id, at_ms)?;
        }
        Ok(open)
    }
}

/// Checks that no instance ran on two nodes at once, from each node's own
/// runs (`(node, runs)`). Returns how many instances it checked, or the
/// first overlap found.
pub fn never_twice(nodes: &[(String, Vec<Run>)]) -> Result<usize, String> {
    let mut per_instance: BTreeMap<&str, Vec<(&Run, &str)>> = BTreeMap::new();
    for (node, runs) in nodes {
        for run in runs {
            per_instance
                .entry(run.instance.as_str())
                .or_default()
                .push((run, node.as_str()));
        }
    }
    for (id, runs) in &mut per_instance {
        runs.sort();
        for pair in runs.windows(2) {
            let ((a, a_node), (b, b_node)) = (pair[0], pair[1]);
            if a.to_ms > b.from_ms && a_node != b_node {
                return Err(format!(
                    "instance {id} ran on {a_node} [{}, {}] and on {b_node} [{}, {}] at once",
                    a.from_ms, a.to_ms, b.from_ms, b.to_ms
                ));
            }
        }
    }
    Ok(per_instance.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_keep_their_first_start_and_power_loss_closes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::in_dir(dir.path());
        log.append(Event::Create, "a", 1).expect("log");
        log.append(Event::Start, "a", 2).expect("log");
        log.append(Event::Start, "a", 5).expect("log");
        log.append(Event::Start, "b", 3).expect("log");
        log.append(Event::Stop, "b", 4).expect("log");
        assert_eq!(log.counts(Event::Start)["a"], 2);
        assert_eq!(log.stop_all(9).expect("power off"), vec!["a".to_owned()]);
        let runs = log.runs(20);
        assert!(runs.contains(&Run {
            from_ms: 2,
            to_ms: 9,
            instance: "a".into()
        }));
        assert!(runs.contains(&Run {
            from_ms: 3,
            to_ms: 4,
            instance: "b".into()
        }));
    }

    #[test]
    fn an_instance_on_two_nodes_at_once_is_an_overlap() {
        let run = |from_ms, to_ms| Run {
            from_ms,
            to_ms,
            instance: "a".into(),
        };
        let apart = [
            ("n1".to_owned(), vec![run(1, 5)]),
            ("n2".to_owned(), vec![run(5, 9)]),
        ];
        assert_eq!(never_twice(&apart), Ok(1));
        let overlapping = [
            ("n1".to_owned(), vec![run(1, 6)]),
            ("n2".to_owned(), vec![run(5, 9)]),
        ];
        let error = never_twice(&overlapping).expect_err("overlap");
        assert!(error.contains("on n1 [1, 6] and on n2 [5, 9]"), "{error}");
    }
}
