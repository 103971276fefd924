/*!
The HTTP connector's TOML options: `url = "https://..."` (or a
`${env:NAME}` secret) and the file options of a download's format,
`format`, `header`, `delimiter` and `schema`. A download is never
partitioned. They are read by the files connector's reader
([`crate::files::options::read_file_source`]), which knows both `path`
and `url`, so a task naming both gets one problem.
*/

pub use crate::files::options::read_file_source as read_source;
