/*!
What an ad-hoc flow may ask of a worker, checked at submit: every
`${env:NAME}` it names must be in the node's `[secrets] allow`, so that
whoever starts a run cannot make a worker read its environment. (Workers
check again against their own list before they read a variable.)
*/

use conveyor_config::AllowList;

use crate::error::ApiError;

/// 422 naming the variables of `text` that `allow` does not allow.
pub fn check_secrets(allow: &AllowList, text: &str) -> Result<(), ApiError> {
    let refused = allow.refused_in(text);
    if refused.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = refused.iter().map(|n| format!("`{n}`")).collect();
    Err(ApiError::invalid(format!(
        "the flow names the environment variable{} {} (as `${{env:NAME}}`), not in this node's [secrets] allow; only the variables listed there may be read",
        if refused.len() > 1 { "s" } else { "" },
        names.join(", ")
    )))
}
