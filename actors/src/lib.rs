pub mod coordinator;
pub mod failpoint;
pub mod node;
pub mod runstore;
pub mod state;
pub mod supervisor;
pub mod transport;
pub mod worker;
