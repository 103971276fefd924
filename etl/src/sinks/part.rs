/*!
One part of a partitioned load, in the load's format, put into the store
for the gather (the first attempt to commit it wins): the one writer
([`super::writer`]) with a [`FileFormat`] encoder. The gather is the
sink's connector's.
*/

use conveyor_schemas::FileTarget;

use super::format::FileFormat;
use super::writer::{Destination, EncodingSink};
use crate::attempt::Attempt;
use crate::error::Result;
use crate::paths;
use crate::store::part_key;
use crate::workspace::Workspace;

/// One partition of a partitioned load, in the load's format, into the
/// artifact store for the gather.
pub fn sink<'a>(
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &FileTarget,
) -> Result<EncodingSink<'a, FileFormat>> {
    // The part checks the load's path too: fail before the gather would.
    paths::confine(&ws.output_root, "load path", &target.path)?;
    let key = part_key(at.flow_run, at.task, target.format.as_str())?;
    let destination = Destination::store(ws, at, "Part", key)?;
    Ok(EncodingSink::new(at, FileFormat::of(target), destination))
}
