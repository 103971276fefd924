/*!
The flow model: what a parsed flow is, before the coordinator runs it.
*/

use std::time::Duration;

use conveyor_schemas::{DataFormat, ExtractSpec, Step, TaskKind};

pub use conveyor_schemas::names::partition_name;

#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpec {
    pub name: String,
    /// Tasks in a topological order: every task comes after its dependencies.
    pub tasks: Vec<TaskDef>,
    /// Overrides the coordinator's wait for a live worker.
    pub worker_wait: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Delay before attempt 2; doubles each attempt, with jitter, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskDef {
    pub name: String,
    pub kind: TaskKind,
    /// The task whose output this one reads (transform and load).
    pub input: Option<String>,
    /// Tasks that must succeed first; includes `input`.
    pub after: Vec<String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub body: TaskBody,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TaskBody {
    Extract(ExtractSpec),
    Transform {
        steps: Vec<Step>,
    },
    Load {
        format: DataFormat,
        path: String,
        header: bool,
        /// Write a directory of part files (partitioned input only).
        parts: bool,
        /// Set on one partition of a partitioned load: writes part `N` into
        /// the artifact store for the gather.
        part: Option<u32>,
    },
    /// Puts the parts of a partitioned load in place. Made by the flow
    /// parser, never written by users; it keeps the load's name.
    Gather {
        format: DataFormat,
        path: String,
        parts: bool,
        /// The part tasks, in partition order.
        inputs: Vec<String>,
    },
}

/// Most partitions one task may be split into.
pub const MAX_PARTITIONS: u32 = 1024;

/// The flow a run was started from, kept so that it can be parsed again
/// (after a coordinator restart, or on another node).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSource {
    pub file: String,
    pub text: String,
    /// Directory that relative paths of the flow resolve against.
    pub base: String,
}

impl FlowSpec {
    pub fn task(&self, name: &str) -> Option<&TaskDef> {
        self.tasks.iter().find(|t| t.name == name)
    }
}
