//! The init phase (contracts §1): extensions start and register, then the runtime; init ends when
//! every process has called next, or fails (and the environment is reset).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::config::{
    FunctionSpec, InitializationType, extension_env, runtime_command, runtime_env,
};
use super::process::{self, Role};
use super::records;
use super::state::{InitProgress, Phase, State};
use super::{Emulator, EmulatorError, InitRecord, ProcessExit, ShutdownReason};
use crate::trace::new_uuid;

/// Why an init failed: status, errorType, message.
type InitFailure = (&'static str, String, String);

impl Emulator {
    /// Initializes as provisioned concurrency (before any invoke; the next invoke is not cold).
    pub async fn prewarm(&mut self) -> Result<InitRecord, EmulatorError> {
        self.init(InitializationType::ProvisionedConcurrency).await
    }

    /// Performs an on-demand init now, ahead of the first invoke (a proactive initialization).
    pub async fn init_ahead(&mut self) -> Result<InitRecord, EmulatorError> {
        self.init(InitializationType::OnDemand).await
    }

    /// Initializes an environment of `init_type`; fails if one is already initialized.
    pub async fn init(
        &mut self,
        init_type: InitializationType,
    ) -> Result<InitRecord, EmulatorError> {
        if self.shared.read(|s| s.phase) != Phase::Uninitialized {
            return Err(EmulatorError::AlreadyInitialized);
        }
        self.run_init(init_type).await
    }

    pub(super) async fn run_init(
        &mut self,
        init_type: InitializationType,
    ) -> Result<InitRecord, EmulatorError> {
        let function = self
            .shared
            .config
            .function
            .clone()
            .ok_or(EmulatorError::NoFunction)?;
        let init_type = if self.shared.config.managed_instances {
            InitializationType::ManagedInstances
        } else {
            init_type
        };
        let started_at = Instant::now();
        let deadline = started_at + self.shared.config.init_timeout;
        let generation = self.begin_init(init_type, started_at);
        let steps = async {
            // Every extension starts in parallel; all must register before the runtime starts.
            self.launch_extensions(generation, init_type)?;
            self.await_registrations(deadline).await?;
            let runtime_name = self.launch_runtime(generation, init_type, &function)?;
            self.await_ready(deadline, &runtime_name).await
        };
        match steps.await {
            Ok(()) => Ok(self.complete_init(init_type)),
            Err(failure) => Err(self.fail_init(failure).await),
        }
    }

    /// Starts a generation and emits `platform.initStart`.
    fn begin_init(&self, init_type: InitializationType, started_at: Instant) -> u64 {
        let shared = &self.shared;
        let config = &shared.config;
        let instance_id = new_uuid();
        shared.update(|s| {
            let phase_label = if s.last_init_failed { "invoke" } else { "init" };
            let generation = s.begin_generation(instance_id.clone());
            s.phase = Phase::Initializing;
            s.external_names = config.extensions.iter().map(|e| e.name.clone()).collect();
            s.init = Some(InitProgress {
                init_type,
                phase_label,
                started_at,
                runtime_spawned_at: None,
                runtime_ready_at: None,
                spawned: BTreeMap::new(),
                runtime_done_emitted: false,
                failure: None,
            });
            let record = records::init_start(config, init_type, phase_label, &instance_id);
            shared.emit(s, started_at, "platform.initStart", record);
            generation
        })
    }

    fn launch_extensions(
        &mut self,
        generation: u64,
        init_type: InitializationType,
    ) -> Result<(), InitFailure> {
        let shared = std::sync::Arc::clone(&self.shared);
        for spec in &shared.config.extensions {
            let Some(program) = &spec.program else {
                continue;
            };
            let env = extension_env(&shared.config, spec, shared.api_addr, init_type, &host_env);
            let mut command = vec![program.clone().into_os_string()];
            command.extend(spec.args.iter().cloned());
            let handle = process::spawn(
                &shared,
                generation,
                Role::Extension,
                &spec.name,
                &command,
                &env,
            )
            .map_err(|e| ("failure", "Extension.LaunchError".to_owned(), e.to_string()))?;
            shared.update(|s| {
                if let Some(init) = s.init.as_mut() {
                    init.spawned.insert(spec.name.clone(), handle.spawned_at);
                }
            });
            self.extensions.push(handle);
        }
        Ok(())
    }

    /// The extension processes started (id, name).
    fn launched_extensions(&self) -> Vec<(u64, String)> {
        self.extensions
            .iter()
            .map(|h| (h.id, h.name.clone()))
            .collect()
    }

    /// Waits until every external extension has registered.
    async fn await_registrations(&self, deadline: Instant) -> Result<(), InitFailure> {
        let launched = self.launched_extensions();
        self.shared
            .wait_until(deadline, |s| {
                if let Some(failure) = init_failure(s) {
                    return Some(Err(failure));
                }
                for (id, name) in &launched {
                    if let Some(exit) = s.process_exit(*id)
                        && !s.extensions.iter().any(|e| &e.name == name)
                    {
                        return Some(Err(crash(
                            "Extension.Crash",
                            name,
                            "before registering",
                            exit,
                        )));
                    }
                }
                let all = s
                    .external_names
                    .iter()
                    .all(|n| s.extensions.iter().any(|e| &e.name == n));
                all.then_some(Ok(()))
            })
            .await
            .unwrap_or_else(|| {
                Err((
                    "timeout",
                    "Extension.InitTimeout".to_owned(),
                    "not every extension registered within the init timeout".to_owned(),
                ))
            })
    }

    /// Starts the runtime; returns its process name.
    fn launch_runtime(
        &mut self,
        generation: u64,
        init_type: InitializationType,
        function: &FunctionSpec,
    ) -> Result<String, InitFailure> {
        let shared = &self.shared;
        let command = runtime_command(function);
        let name = function
            .command
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map_or_else(
                || "runtime".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
        let env = runtime_env(&shared.config, shared.api_addr, init_type, &host_env);
        let runtime = process::spawn(shared, generation, Role::Runtime, &name, &command, &env)
            .map_err(|e| ("failure", "Runtime.LaunchError".to_owned(), e.to_string()))?;
        shared.update(|s| {
            if let Some(init) = s.init.as_mut() {
                init.runtime_spawned_at = Some(runtime.spawned_at);
            }
        });
        self.runtime = Some(runtime);
        if shared.config.managed_instances {
            // One process per concurrent request (Python's model on Managed Instances).
            for _ in 1..shared.config.max_concurrency {
                let more = process::spawn(shared, generation, Role::Runtime, &name, &command, &env)
                    .map_err(|e| ("failure", "Runtime.LaunchError".to_owned(), e.to_string()))?;
                self.more_runtimes.push(more);
            }
        }
        Ok(name)
    }

    /// Waits until the runtime and every registered extension have called next.
    async fn await_ready(&self, deadline: Instant, runtime_name: &str) -> Result<(), InitFailure> {
        let runtime_id = self.runtime.as_ref().map(|h| h.id);
        let launched = self.launched_extensions();
        self.shared
            .wait_until(deadline, |s| {
                if let Some(failure) = init_failure(s) {
                    return Some(Err(failure));
                }
                if let Some(exit) = runtime_id.and_then(|id| s.process_exit(id)) {
                    return Some(Err(crash(
                        "Runtime.ExitError",
                        runtime_name,
                        "during init",
                        exit,
                    )));
                }
                for (id, name) in &launched {
                    if let Some(exit) = s.process_exit(*id) {
                        return Some(Err(crash("Extension.Crash", name, "during init", exit)));
                    }
                }
                // On Managed Instances every runtime process must be waiting for work.
                let all_processes = !self.shared.config.managed_instances
                    || usize::try_from(s.runtime.waiting).unwrap_or(usize::MAX)
                        >= self.shared.config.max_concurrency;
                let runtime_ready = s
                    .init
                    .as_ref()
                    .is_some_and(|i| i.runtime_ready_at.is_some())
                    && all_processes;
                let extensions_ready = s
                    .extensions
                    .iter()
                    .all(|e| e.mailbox.first_next_at.is_some());
                (runtime_ready && extensions_ready).then_some(Ok(()))
            })
            .await
            .unwrap_or_else(|| {
                Err((
                    "timeout",
                    "Sandbox.Timedout".to_owned(),
                    "the runtime and every extension did not call next within the init timeout"
                        .to_owned(),
                ))
            })
    }

    /// Marks the environment ready and emits `platform.initReport`.
    fn complete_init(&mut self, init_type: InitializationType) -> InitRecord {
        let shared = &self.shared;
        let finished_at = Instant::now();
        let record = shared.update(|s| {
            let record = init_record(s, "success", None, None, finished_at);
            s.phase = Phase::Ready;
            s.last_init_failed = false;
            s.inits.push(record.clone());
            let report =
                records::init_report(init_type, record.phase, "success", None, record.duration());
            shared.emit(s, finished_at, "platform.initReport", report);
            record
        });
        self.pending_init_duration =
            (init_type == InitializationType::OnDemand).then(|| record.duration());
        record
    }

    /// Ends a failed init: reports it, resets the environment and returns the error.
    async fn fail_init(&mut self, (status, error_type, message): InitFailure) -> EmulatorError {
        let now = Instant::now();
        let shared = std::sync::Arc::clone(&self.shared);
        let record = shared.update(|s| {
            let record = init_record(
                s,
                status,
                Some(error_type.clone()),
                Some(message.clone()),
                now,
            );
            if let Some(init) = s.init.as_mut()
                && !init.runtime_done_emitted
            {
                init.runtime_done_emitted = true;
                let done = records::init_runtime_done(
                    init.init_type,
                    init.phase_label,
                    status,
                    Some(&error_type),
                );
                shared.emit(s, now, "platform.initRuntimeDone", done);
            }
            let report = records::init_report(
                record.initialization_type,
                record.phase,
                status,
                Some(&error_type),
                record.duration(),
            );
            shared.emit(s, now, "platform.initReport", report);
            s.inits.push(record.clone());
            s.last_init_failed = true;
            record
        });
        let reset = self.reset(ShutdownReason::Failure).await;
        EmulatorError::InitFailed {
            record: Box::new(record),
            reset: Box::new(reset),
        }
    }
}

fn host_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A failure recorded by an API handler during init.
fn init_failure(s: &State) -> Option<InitFailure> {
    let (error_type, message) = s.init.as_ref()?.failure.clone()?;
    let status = if error_type.starts_with("Runtime.") || error_type.starts_with("Extension.") {
        "error"
    } else {
        "failure"
    };
    Some((status, error_type, message))
}

pub(super) fn crash(error_type: &str, name: &str, when: &str, exit: &ProcessExit) -> InitFailure {
    let how = match (exit.code, exit.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "an unknown status".to_owned(),
    };
    (
        "failure",
        error_type.to_owned(),
        format!("{name} exited {when} with {how}"),
    )
}

fn init_record(
    s: &State,
    status: &str,
    error_type: Option<String>,
    message: Option<String>,
    finished_at: Instant,
) -> InitRecord {
    let init = s.init.as_ref();
    InitRecord {
        generation: s.generation,
        initialization_type: init.map_or(InitializationType::OnDemand, |i| i.init_type),
        phase: init.map_or("init", |i| i.phase_label),
        status: status.to_owned(),
        error_type,
        message,
        started_at: init.map_or(finished_at, |i| i.started_at),
        finished_at,
        runtime_spawned_at: init.and_then(|i| i.runtime_spawned_at),
        runtime_ready_at: init.and_then(|i| i.runtime_ready_at),
        extensions: s.extension_init_timings(),
    }
}
