//! The shutdown phase (contracts §1): SIGTERM to the runtime, SHUTDOWN to the extensions, SIGKILL
//! past the deadline; also the reset after a timeout, a crash or a failed init.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use super::process::ProcessHandle;
use super::state::{ExtensionEvent, Phase, State};
use super::{Emulator, EmulatorError, ExtensionExit, RuntimeExit, ShutdownReason, ShutdownReport};

/// How long a process killed with SIGKILL may take to be reaped before the emulator stops waiting.
const KILL_REAP_LIMIT: Duration = Duration::from_secs(2);

impl Emulator {
    /// Shuts the environment down (reason `spindown`): SIGTERM to the runtime, SHUTDOWN to the
    /// extensions, SIGKILL past the deadline. A later invoke starts a fresh environment.
    pub async fn shutdown(&mut self) -> Result<ShutdownReport, EmulatorError> {
        Ok(self.reset(ShutdownReason::Spindown).await)
    }

    /// Ends the environment for `reason`; always completes within the shutdown timeout plus
    /// the time the kernel takes to reap killed processes.
    pub(crate) async fn reset(&mut self, reason: ShutdownReason) -> ShutdownReport {
        let shared = std::sync::Arc::clone(&self.shared);
        let started_at = Instant::now();
        let deadline = started_at + shared.config.shutdown_timeout;
        let deadline_ms = shared.clock.epoch_millis(deadline);
        let generation = shared.update(|s| {
            s.phase = Phase::Resetting;
            s.generation
        });
        let runtime = match self.runtime.take() {
            Some(handle) => Some(
                self.stop_runtime(&handle, reason, started_at, deadline)
                    .await,
            ),
            None => None,
        };
        for handle in std::mem::take(&mut self.more_runtimes) {
            self.stop_runtime(&handle, reason, started_at, deadline)
                .await;
        }
        let shutdown_sent_at = Instant::now();
        let sent = self.send_shutdown(reason, deadline_ms);
        let killed = self
            .await_extension_exits(deadline, &sent, generation)
            .await;
        let extensions =
            self.extension_exits(&sent, &killed, generation, deadline, shutdown_sent_at);

        shared.telemetry.close_generation(generation);
        self.extensions.clear();
        shared.update(|s| {
            s.phase = Phase::Uninitialized;
            s.invocation = None;
            s.init = None;
            s.extensions.clear();
            // Dropping the mailboxes' senders ends any long-poll still open.
            s.runtime = super::state::Mailbox::new();
        });
        self.pending_init_duration = None;
        ShutdownReport {
            reason,
            started_at,
            deadline,
            deadline_ms,
            runtime,
            extensions,
            finished_at: Instant::now(),
        }
    }

    /// Queues SHUTDOWN for every external extension registered for it; returns their names.
    fn send_shutdown(&self, reason: ShutdownReason, deadline_ms: u64) -> BTreeSet<String> {
        self.shared.update(|s| {
            let mut sent = BTreeSet::new();
            for ext in s
                .extensions
                .iter()
                .filter(|e| e.external && e.wants("SHUTDOWN"))
            {
                let body = json!({
                    "eventType": "SHUTDOWN",
                    "deadlineMs": deadline_ms,
                    "shutdownReason": if self.shared.config.local_run {
                        reason.as_local_str()
                    } else {
                        reason.as_str()
                    },
                });
                if ext.mailbox.sender.try_send(ExtensionEvent { body }).is_ok() {
                    sent.insert(ext.name.clone());
                }
            }
            sent
        })
    }

    fn attached_names(&self) -> Vec<String> {
        self.shared
            .config
            .extensions
            .iter()
            .filter(|e| e.program.is_none())
            .map(|e| e.name.clone())
            .collect()
    }

    /// Waits until every extension process has exited (and every attached one has taken its
    /// SHUTDOWN) by `deadline`, killing those that were not told and those still running at
    /// the deadline; returns the names killed.
    async fn await_extension_exits(
        &self,
        deadline: Instant,
        sent: &BTreeSet<String>,
        generation: u64,
    ) -> BTreeSet<String> {
        let shared = &self.shared;
        // Extensions that cannot be told (not registered for SHUTDOWN) are stopped right away.
        let mut killed = BTreeSet::new();
        for handle in self.extensions.iter().filter(|h| !sent.contains(&h.name)) {
            handle.kill();
            killed.insert(handle.name.clone());
        }
        let processes: Vec<u64> = self.extensions.iter().map(|h| h.id).collect();
        let attached: Vec<String> = self
            .attached_names()
            .into_iter()
            .filter(|n| sent.contains(n))
            .collect();
        let _ = shared
            .wait_until(deadline, |s| {
                let exited = processes.iter().all(|id| s.process_exit(*id).is_some());
                let attached_done = attached.iter().all(|n| shutdown_taken(s, n, generation));
                (exited && attached_done).then_some(())
            })
            .await;
        for handle in &self.extensions {
            if shared.read(|s| s.process_exit(handle.id).is_none()) {
                handle.kill();
                killed.insert(handle.name.clone());
            }
        }
        let _ = shared
            .wait_until(Instant::now() + KILL_REAP_LIMIT, |s| {
                processes
                    .iter()
                    .all(|id| s.process_exit(*id).is_some())
                    .then_some(())
            })
            .await;
        killed
    }

    fn extension_exits(
        &self,
        sent: &BTreeSet<String>,
        killed: &BTreeSet<String>,
        generation: u64,
        deadline: Instant,
        shutdown_sent_at: Instant,
    ) -> Vec<ExtensionExit> {
        self.shared.read(|s| {
            let launched = self.extensions.iter().map(|handle| {
                let exit = s.process_exit(handle.id).copied();
                let was_killed = killed.contains(&handle.name);
                ExtensionExit {
                    name: handle.name.clone(),
                    attached: false,
                    shutdown_sent: sent.contains(&handle.name),
                    shutdown_delivered: shutdown_taken(s, &handle.name, generation),
                    exit,
                    exited_before_deadline: exit.is_some_and(|e| e.at <= deadline) && !was_killed,
                    killed: was_killed,
                    took: exit.map(|e| e.at.saturating_duration_since(shutdown_sent_at)),
                }
            });
            let attached = self.attached_names().into_iter().map(|name| {
                let delivered_at = s
                    .extensions
                    .iter()
                    .find(|e| e.name == name)
                    .and_then(|e| e.delivered.iter().find(|d| d.event_type() == "SHUTDOWN"))
                    .map(|d| d.at);
                ExtensionExit {
                    shutdown_sent: sent.contains(&name),
                    name,
                    attached: true,
                    shutdown_delivered: delivered_at.is_some(),
                    exit: None,
                    exited_before_deadline: delivered_at.is_some_and(|at| at <= deadline),
                    killed: false,
                    took: delivered_at.map(|at| at.saturating_duration_since(shutdown_sent_at)),
                }
            });
            launched.chain(attached).collect()
        })
    }

    /// SIGTERM then SIGKILL after the grace at spindown; SIGKILL at once otherwise.
    async fn stop_runtime(
        &self,
        handle: &ProcessHandle,
        reason: ShutdownReason,
        started_at: Instant,
        deadline: Instant,
    ) -> RuntimeExit {
        let shared = &self.shared;
        let exited = |id: u64| move |s: &State| s.process_exit(id).copied();
        let mut killed = false;
        if shared.read(|s| s.process_exit(handle.id).is_none()) {
            if reason == ShutdownReason::Spindown {
                handle.terminate();
                let grace_end = (started_at + shared.config.runtime_shutdown_grace).min(deadline);
                if shared
                    .wait_until(grace_end, exited(handle.id))
                    .await
                    .is_none()
                {
                    handle.kill();
                    killed = true;
                }
            } else {
                handle.kill();
                killed = true;
            }
        }
        let exit = shared
            .wait_until(Instant::now() + KILL_REAP_LIMIT, exited(handle.id))
            .await;
        RuntimeExit { exit, killed }
    }
}

fn shutdown_taken(s: &State, name: &str, generation: u64) -> bool {
    s.generation == generation
        && s.extensions
            .iter()
            .find(|e| e.name == name)
            .is_some_and(|e| e.delivered.iter().any(|d| d.event_type() == "SHUTDOWN"))
}
