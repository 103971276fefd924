/*!
Files in the load formats: a file under the output root, replaced at
commit under the task run's fence; or one part of a partitioned load, put
into the store for the gather (the first attempt to commit it wins). Both
are the one writer ([`super::writer`]) with a [`FileFormat`] encoder.
*/

use conveyor_schemas::FileTarget;

use super::format::FileFormat;
use super::writer::{Destination, EncodingSink};
use crate::attempt::{Attempt, Workspace};
use crate::error::Result;
use crate::paths;
use crate::store::part_key;

/// A file under the output root.
pub fn output<'a>(
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &FileTarget,
) -> Result<EncodingSink<'a, FileFormat>> {
    let final_path = paths::confine(&ws.output_root, "load path", &target.path)?;
    paths::check_not_a_directory(&final_path, &target.path)?;
    let destination = Destination::output(ws, at, final_path)?;
    Ok(EncodingSink::new(at, FileFormat::of(target), destination))
}

/// One partition of a partitioned load, in the load's format, into the
/// artifact store for the gather.
pub fn part<'a>(
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
