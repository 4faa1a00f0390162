//! Running a network tool on a script fed to its standard input (`ip
//! -batch -`, `nft -f -`): the one place the agent spawns them.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::NetworkError;

/// Runs `program args` with `script` on stdin. The outer error is the
/// tool not running at all; the inner one is its refusal, as it printed it.
pub(super) async fn run(
    program: &'static str,
    args: &[&str],
    script: &str,
) -> Result<Result<(), String>, NetworkError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetworkError::io("running", program))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(NetworkError::io("writing to", program))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(NetworkError::io("waiting for", program))?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(String::from_utf8_lossy(&output.stderr)
        .trim()
        .to_owned()))
}
