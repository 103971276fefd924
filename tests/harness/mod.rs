//! Test harness of the integration tests: a directory per test, real
//! `conveyor` processes, and a namespace per test on the shared RabbitMQ.
//!
//! # Layout
//!
//! - [`workdir`]: the repository root and a fresh directory per test.
//! - [`processes`]: `conveyor node` and `conveyor run` child processes, with
//!   deadlines.
//! - [`configs`]: node config files for a test's broker and namespace.
//! - [`colors`]: the colors ETL flow and what "nothing lost" means for it.
//! - [`broker`]: admin of the shared broker: namespaces, queue depth, publish.
//! - [`private_broker`]: a RabbitMQ node of a test's own, to stop or kill.
//! - [`fault_proxy`]: a TCP proxy that delays, blackholes or resets links.
//! - [`postgres`]: a PostgreSQL database of a test's own.

pub mod broker;
pub mod colors;
pub mod configs;
pub mod fault_proxy;
pub mod postgres;
pub mod private_broker;
pub mod processes;
pub mod workdir;
