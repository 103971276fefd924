/*!
The `conveyor` node: the roles a config lists, composed ([`node::Node`]).

The binary (`src/main.rs`) parses the command line, loads the config, sets
up tracing and the HTTP listener, and calls [`node::Node::start`]. See
`ARCHITECTURE.md` at the repository root for the crates below it.
*/

pub mod node;
