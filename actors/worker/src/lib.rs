/*!
Conveyor's worker role: the runtime that runs tasks. The only runtime crate
that uses the data plane (`conveyor-etl`).

# Layout
- [`supervisor`]: one [`worker::Worker`] actor per kind, restarted with
  backoff when it stops; it also publishes the node's heartbeats.
- [`worker`]: consumes a kind's queue; each attempt runs off the actix
  thread, fenced and committed by the data plane, and ends in one
  `Settle` value that one place turns into the update, the log flush and
  the ack.
- [`cancel`]: the cancel flags of a node's attempts, raised when their run
  ends; [`tasklog`]: captures and ships each attempt's log lines.
- [`housekeeping`]: a finished run's artifacts on this node, and the sweep
  of expired runs.
- [`metrics`]: the task metrics; [`start`](mod@start): the role's start.
*/

pub mod cancel;
pub mod housekeeping;
pub mod metrics;
pub mod start;
pub mod supervisor;
pub mod tasklog;
pub mod worker;

pub use start::{start, Setup, StartError};
