//! iproute2 behind a trait: the agent changes links, addresses and routes
//! by feeding `ip -batch` a script, one process per namespace touched, and
//! unit tests record the scripts instead of running them.

use std::sync::Mutex;

use async_trait::async_trait;

use super::NetworkError;

/// One `ip -batch` run: the commands, in the namespace named (None: the
/// agent's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCommand {
    pub netns: Option<String>,
    pub script: Vec<String>,
}

#[async_trait]
pub trait IpRunner: Send + Sync + std::fmt::Debug {
    async fn run(&self, command: IpCommand) -> Result<(), NetworkError>;
}

/// The real `ip`, from iproute2.
#[derive(Debug, Default)]
pub struct Iproute2;

#[async_trait]
impl IpRunner for Iproute2 {
    async fn run(&self, command: IpCommand) -> Result<(), NetworkError> {
        let mut args = Vec::new();
        if let Some(netns) = &command.netns {
            args.extend(["-n", netns.as_str()]);
        }
        args.extend(["-batch", "-"]);
        let script = command.script.join("\n") + "\n";
        super::script::run("ip", &args, &script)
            .await?
            .map_err(|message| NetworkError::Ip {
                args: format!(
                    "{}-batch: {}",
                    command
                        .netns
                        .as_ref()
                        .map(|n| format!("-n {n} "))
                        .unwrap_or_default(),
                    command.script.join("; ")
                ),
                message,
            })
    }
}

/// Records every command and succeeds, for unit tests.
#[derive(Debug, Default)]
pub struct RecordingIp {
    pub commands: Mutex<Vec<IpCommand>>,
}

#[async_trait]
impl IpRunner for RecordingIp {
    async fn run(&self, command: IpCommand) -> Result<(), NetworkError> {
        if let Ok(mut commands) = self.commands.lock() {
            commands.push(command);
        }
        Ok(())
    }
}
