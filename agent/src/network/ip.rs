//! iproute2 behind a trait: the agent changes links, addresses, routes
//! and forwarding entries by feeding `ip -batch` (or `bridge -batch`) a
//! script, one process per namespace touched, and unit tests record the
//! scripts instead of running them.

use std::sync::Mutex;

use async_trait::async_trait;

use super::NetworkError;

/// One `ip -batch` (or `bridge -batch`) run: the commands, in the
/// namespace named (None: the agent's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCommand {
    pub tool: Tool,
    pub netns: Option<String>,
    pub script: Vec<String>,
}

/// Which iproute2 program runs a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Ip,
    /// `bridge`: the forwarding database, which `ip` cannot change.
    Bridge,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Bridge => "bridge",
        }
    }
}

impl IpCommand {
    /// `ip` commands in the agent's own namespace.
    pub fn host(script: Vec<String>) -> Self {
        Self {
            tool: Tool::Ip,
            netns: None,
            script,
        }
    }

    /// `ip` commands in the namespace named.
    pub fn in_netns(netns: &str, script: Vec<String>) -> Self {
        Self {
            tool: Tool::Ip,
            netns: Some(netns.to_owned()),
            script,
        }
    }

    /// `bridge` commands in the agent's own namespace.
    pub fn bridge(script: Vec<String>) -> Self {
        Self {
            tool: Tool::Bridge,
            netns: None,
            script,
        }
    }
}

#[async_trait]
pub trait IpRunner: Send + Sync + std::fmt::Debug {
    async fn run(&self, command: IpCommand) -> Result<(), NetworkError>;
}

/// The real `ip` and `bridge`, from iproute2.
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
        let program = command.tool.program();
        super::script::run(program, &args, &script)
            .await?
            .map_err(|message| NetworkError::Ip {
                args: format!(
                    "{program} {}-batch: {}",
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
