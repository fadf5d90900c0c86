//! The init → invoke → shutdown lifecycle (contracts §1), driven by [`Emulator`]'s methods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::{Value, json};

use super::config::{
    FunctionSpec, InitializationType, extension_env, runtime_command, runtime_env,
};
use super::process::{self, ProcessHandle, Role};
use super::records::{self, Report, RuntimeDone};
use super::state::{
    ExtensionEvent, InitProgress, InvocationProgress, Phase, RuntimeAnswer, RuntimeInvoke, State,
};
use super::{
    Emulator, EmulatorError, ExtensionExit, FunctionError, InitRecord, Invocation,
    InvocationStatus, Invoke, ProcessExit, RuntimeExit, ShutdownReason, ShutdownReport,
};
use crate::trace::{TraceHeader, new_segment_id, new_uuid};

/// How long a process killed with SIGKILL may take to be reaped before the emulator stops waiting.
const KILL_REAP_LIMIT: Duration = Duration::from_secs(2);

/// How an invocation's wait ended.
enum Outcome {
    Finished,
    TimedOut,
    RuntimeCrashed(ProcessExit),
    ExtensionCrashed(String),
}

/// The `tracing` of the platform records of a sampled invocation, as AWS's emulator builds it:
/// `spanId` is the caller's `Parent`, and `value` carries the trace with `Parent` set to the
/// segment Lambda records for the invocation.
pub(crate) struct PlatformTracing {
    pub span_id: String,
    pub lambda_segment_id: String,
    pub value: String,
}

impl PlatformTracing {
    /// `None` unless the header has a root and says `Sampled=1`.
    pub(crate) fn of(header: &str) -> Option<Self> {
        let caller = TraceHeader::parse(header).filter(TraceHeader::is_sampled)?;
        let lambda_segment_id = new_segment_id();
        let value = TraceHeader {
            parent: Some(lambda_segment_id.clone()),
            ..caller.clone()
        }
        .to_string();
        Some(Self {
            span_id: caller.parent.unwrap_or_else(|| lambda_segment_id.clone()),
            lambda_segment_id,
            value,
        })
    }
}

/// Where the stale init records of a SnapStart snapshot are delivered, relative to the restore
/// records (Lambda does not document their order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleInit {
    /// All three before `platform.restoreStart`.
    BeforeRestore,
    /// All three between `restoreStart` and `restoreRuntimeDone`.
    BetweenRestore,
    /// All three after `restoreReport`.
    AfterRestore,
    /// `initStart` before, `initRuntimeDone` between, `initReport` after.
    Split,
}

/// Why an init failed: status, errorType, message.
type InitFailure = (&'static str, String, String);

fn host_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl Emulator {
    /// Initializes as provisioned concurrency (before any invoke; the next invoke is not cold).
    pub async fn prewarm(&mut self) -> Result<InitRecord, EmulatorError> {
        self.init(InitializationType::ProvisionedConcurrency).await
    }

    /// Performs an on-demand init now, ahead of the first invoke (a proactive initialization).
    pub async fn init_ahead(&mut self) -> Result<InitRecord, EmulatorError> {
        self.init(InitializationType::OnDemand).await
    }

    /// SnapStart: creates the snapshot (an init of type `snap-start` whose platform records are
    /// kept back), then restores the environment from it: the restore records now, and the
    /// snapshot's stale init records, dated [`EmulatorBuilder::snapshot_age`] in the past,
    /// placed as `stale` says. The next invoke is not an init.
    ///
    /// [`EmulatorBuilder::snapshot_age`]: super::EmulatorBuilder::snapshot_age
    pub async fn snap_start(&mut self, stale: StaleInit) -> Result<InitRecord, EmulatorError> {
        if self.shared.read(|s| s.phase) != Phase::Uninitialized {
            return Err(EmulatorError::AlreadyInitialized);
        }
        self.shared
            .update(|s| s.snapshot_records = Some(Vec::new()));
        let created = self.run_init(InitializationType::SnapStart).await;
        let held = self
            .shared
            .update(|s| s.snapshot_records.take())
            .unwrap_or_default();
        let created = created?;
        self.restore(held, stale).await;
        Ok(created)
    }

    /// Restores the environment: `platform.restoreStart`, the runtime's `/restore/next`
    /// returns, `restoreRuntimeDone` once it calls `/invocation/next` again, `restoreReport`;
    /// the snapshot's stale init records go where `stale` says, dated its age back.
    async fn restore(&self, held: Vec<super::state::HeldRecord>, stale: StaleInit) {
        let shared = &self.shared;
        let config = &shared.config;
        let started = Instant::now();
        let instance_id = new_uuid();
        let (generation, calls_before) = shared.update(|s| {
            s.restored = true;
            (s.generation, s.runtime.next_calls)
        });
        let emit_stale = |records: &[super::state::HeldRecord]| {
            for r in records {
                let then = shared
                    .clock
                    .system_time(r.at)
                    .checked_sub(config.snapshot_age)
                    .unwrap_or(std::time::UNIX_EPOCH);
                shared.telemetry.emit_dated(
                    generation,
                    Instant::now(),
                    crate::clock::iso8601_millis(then),
                    &r.event_type,
                    r.record.clone(),
                );
            }
        };
        let (before, between, after): (&[_], &[_], &[_]) = match stale {
            StaleInit::BeforeRestore => (&held, &[], &[]),
            StaleInit::BetweenRestore => (&[], &held, &[]),
            StaleInit::AfterRestore => (&[], &[], &held),
            StaleInit::Split => {
                let first = held.len().min(1);
                let second = held.len().min(2);
                (&held[..first], &held[first..second], &held[second..])
            }
        };
        emit_stale(before);
        shared.telemetry.emit(
            generation,
            started,
            "platform.restoreStart",
            records::restore_start(config, &instance_id),
        );
        emit_stale(between);
        // The runtime ran its after-restore hooks once it asks for an invocation again.
        let _ = shared
            .wait_until(started + config.init_timeout, |s| {
                (s.runtime.next_calls > calls_before || s.generation != generation).then_some(())
            })
            .await;
        let done = Instant::now();
        shared.telemetry.emit(
            generation,
            done,
            "platform.restoreRuntimeDone",
            records::restore_runtime_done(),
        );
        shared.telemetry.emit(
            generation,
            done,
            "platform.restoreReport",
            records::restore_report(done.saturating_duration_since(started)),
        );
        emit_stale(after);
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

    async fn run_init(
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

    /// Waits until every external extension has registered.
    async fn await_registrations(&self, deadline: Instant) -> Result<(), InitFailure> {
        let launched: Vec<(u64, String)> = self
            .extensions
            .iter()
            .map(|h| (h.id, h.name.clone()))
            .collect();
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
        let launched: Vec<(u64, String)> = self
            .extensions
            .iter()
            .map(|h| (h.id, h.name.clone()))
            .collect();
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

    /// Invokes the function; initializes first when no environment is ready (a cold start).
    ///
    /// Returns once the invocation is finished: the runtime and every extension called next,
    /// or the function timed out or crashed (then the environment was reset and
    /// [`Invocation::reset`] says how).
    pub async fn invoke(&mut self, invoke: Invoke) -> Result<Invocation, EmulatorError> {
        self.place_tenant(invoke.tenant.as_deref()).await?;
        let init = if self.shared.read(|s| s.phase) == Phase::Ready {
            None
        } else {
            Some(self.run_init(InitializationType::OnDemand).await?)
        };
        let shared = std::sync::Arc::clone(&self.shared);
        let config = &shared.config;
        let started_at = Instant::now();
        let deadline = started_at + config.function_timeout;
        let deadline_ms = shared.clock.epoch_millis(deadline);
        let request_id = invoke.request_id.clone().unwrap_or_else(new_uuid);
        let platform_tracing = invoke.trace.as_deref().and_then(PlatformTracing::of);
        let tracing = platform_tracing
            .as_ref()
            .map(|t| records::tracing(&t.span_id, &t.value));
        let function_arn = config.function_arn();

        shared.update(|s| {
            s.phase = Phase::Invoking;
            let start = records::start(
                &request_id,
                &config.function_version,
                tracing.as_ref(),
                invoke.tenant.as_deref(),
            );
            shared.emit(s, started_at, "platform.start", start);
            let _ = s.runtime.sender.try_send(RuntimeInvoke {
                request_id: request_id.clone(),
                deadline_ms,
                function_arn: function_arn.clone(),
                payload: invoke.payload.clone(),
                trace_header: invoke.trace.clone(),
                client_context: invoke.client_context.clone(),
                cognito_identity: invoke.cognito_identity.clone(),
                tenant_id: invoke.tenant.clone(),
            });
            let mut expected = BTreeMap::new();
            for ext in s.extensions.iter().filter(|e| e.wants("INVOKE")) {
                let mut body = json!({
                    "eventType": "INVOKE",
                    "deadlineMs": deadline_ms,
                    "requestId": request_id,
                    "invokedFunctionArn": function_arn,
                });
                // A local run's INVOKE never carries the trace.
                if let Some(header) = invoke.trace.as_ref().filter(|_| !config.local_run) {
                    body["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": header});
                }
                let _ = ext.mailbox.sender.try_send(ExtensionEvent { body });
                expected.insert(ext.id.clone(), ext.name.clone());
            }
            s.invocation = Some(InvocationProgress {
                request_id: request_id.clone(),
                started_at,
                trace_header: invoke.trace.clone(),
                tracing: tracing.clone(),
                runtime_received_at: None,
                answer: None,
                streamed: false,
                runtime_done_at: None,
                expected,
                taken: BTreeMap::new(),
                next_after: BTreeMap::new(),
                tenant_id: invoke.tenant.clone(),
            });
        });

        let runtime_id = self.runtime.as_ref().map(|h| h.id);
        let extension_processes: Vec<(u64, String)> = self
            .extensions
            .iter()
            .map(|h| (h.id, h.name.clone()))
            .collect();
        let outcome = shared
            .wait_until(deadline, |s| {
                let inv = s.invocation.as_ref()?;
                if inv.finished() {
                    return Some(Outcome::Finished);
                }
                if let Some(exit) = runtime_id.and_then(|id| s.process_exit(id)) {
                    return Some(Outcome::RuntimeCrashed(*exit));
                }
                extension_processes
                    .iter()
                    .find(|(id, name)| {
                        inv.expected.values().any(|n| n == name) && s.process_exit(*id).is_some()
                    })
                    .map(|(_, name)| Outcome::ExtensionCrashed(name.clone()))
            })
            .await
            .unwrap_or(Outcome::TimedOut);
        let progress = shared.update(|s| s.invocation.take()).ok_or_else(|| {
            EmulatorError::InvocationLost {
                request_id: request_id.clone(),
            }
        })?;
        Ok(self
            .finish_invocation(outcome, progress, init, platform_tracing)
            .await)
    }

    /// Tenant isolation: an invoke must name its tenant (and only then may name one), and an
    /// environment serves one tenant: an invoke for another ends this environment (`spindown`)
    /// so that it runs in a fresh one, as Lambda would run it in another.
    async fn place_tenant(&mut self, tenant: Option<&str>) -> Result<(), EmulatorError> {
        let isolated = self.shared.config.tenant_isolation;
        match tenant {
            None if isolated => return Err(EmulatorError::TenantRequired),
            Some(t) if !isolated || t.is_empty() => {
                return Err(EmulatorError::TenantNotAccepted {
                    tenant: t.to_owned(),
                });
            }
            _ => {}
        }
        let serving = self.shared.read(|s| s.tenant.clone());
        if let (Some(serving), Some(wanted)) = (serving, tenant)
            && serving != wanted
            && self.is_initialized()
        {
            self.reset(ShutdownReason::Spindown).await;
        }
        self.shared.update(|s| s.tenant = tenant.map(str::to_owned));
        Ok(())
    }

    async fn finish_invocation(
        &mut self,
        outcome: Outcome,
        progress: InvocationProgress,
        init: Option<InitRecord>,
        platform_tracing: Option<PlatformTracing>,
    ) -> Invocation {
        let now = Instant::now();
        let (status, error_type) =
            outcome_status(&outcome, progress.answer.as_ref().map(|(a, _)| a));
        let finished = matches!(outcome, Outcome::Finished);
        let extension_overhead =
            self.close_invocation(&progress, finished, status, error_type.as_deref(), now);
        let reset = match &outcome {
            Outcome::Finished => {
                self.shared.update(|s| s.phase = Phase::Ready);
                None
            }
            Outcome::TimedOut => Some(self.reset(ShutdownReason::Timeout).await),
            Outcome::RuntimeCrashed(_) | Outcome::ExtensionCrashed(_) => {
                Some(self.reset(ShutdownReason::Failure).await)
            }
        };
        let (response, error) = answer_parts(progress.answer.as_ref().map(|(a, _)| a));
        let names: BTreeMap<&String, &String> = progress.expected.iter().collect();
        Invocation {
            request_id: progress.request_id.clone(),
            trace: progress
                .trace_header
                .as_deref()
                .and_then(TraceHeader::parse),
            span_id: platform_tracing.as_ref().map(|t| t.span_id.clone()),
            lambda_segment_id: platform_tracing.map(|t| t.lambda_segment_id),
            cold: init.is_some(),
            init,
            status,
            response,
            error,
            started_at: progress.started_at,
            response_at: progress.answer.as_ref().map(|(_, t)| t.body_done_at),
            runtime_done_at: progress.runtime_done_at,
            extension_next_at: progress
                .next_after
                .iter()
                .filter_map(|(id, at)| names.get(id).map(|n| ((*n).clone(), *at)))
                .collect(),
            post_runtime: extension_overhead
                .map(|(_, d)| d)
                .or_else(|| (finished && progress.expected.is_empty()).then_some(Duration::ZERO)),
            finished_at: now,
            timed_out: status == InvocationStatus::Timeout,
            failure: failure_message(&outcome),
            reset,
            streamed: progress.streamed,
            response_started_at: progress.answer.as_ref().map(|(_, t)| t.head_at),
            runtime_received_at: progress.runtime_received_at,
        }
    }

    /// Emits the invocation's closing records: `platform.runtimeDone` when the runtime never
    /// called next, then `platform.report` (only now: every extension has called next, or the
    /// invocation failed). Returns the extensions' overhead (runtime done, duration).
    fn close_invocation(
        &mut self,
        progress: &InvocationProgress,
        finished: bool,
        status: InvocationStatus,
        error_type: Option<&str>,
        now: Instant,
    ) -> Option<(Instant, Duration)> {
        let shared = &self.shared;
        let config = &shared.config;
        if progress.runtime_done_at.is_none() {
            let record = records::runtime_done(
                &shared.clock,
                &RuntimeDone {
                    request_id: &progress.request_id,
                    status: status.as_str(),
                    error_type,
                    tracing: progress.tracing.as_ref(),
                    started_at: progress.started_at,
                    response: progress.answer.as_ref().map(|(_, t)| *t),
                    done_at: now,
                    produced_bytes: 0,
                    tenant_id: progress.tenant_id.as_deref(),
                },
            );
            shared.update(|s| {
                shared.emit(s, now, "platform.runtimeDone", record);
                shared.emit(s, now, "platform.end", records::end(&progress.request_id));
            });
        }
        if !finished {
            let fault = records::fault(&progress.request_id, status.as_str(), error_type);
            shared.update(|s| shared.emit(s, now, "platform.fault", fault));
        }
        let last_next = progress.next_after.values().max().copied();
        let frozen_at = if finished {
            last_next
                .into_iter()
                .chain(progress.runtime_done_at)
                .max()
                .unwrap_or(now)
        } else {
            now
        };
        let extension_overhead = match (finished, progress.runtime_done_at, last_next) {
            (true, Some(done), Some(last)) => Some((done, last.saturating_duration_since(done))),
            _ => None,
        };
        let max_memory_used_mb = self
            .runtime
            .as_ref()
            .and_then(|h| h.pid)
            .and_then(process::peak_rss_mb)
            .unwrap_or(config.memory_mb / 2)
            .min(config.memory_mb);
        let report = records::report(
            &shared.clock,
            &Report {
                request_id: &progress.request_id,
                status: status.as_str(),
                error_type: error_type.filter(|_| status != InvocationStatus::Success),
                tracing: progress.tracing.as_ref(),
                duration: frozen_at.saturating_duration_since(progress.started_at),
                memory_mb: config.memory_mb,
                max_memory_used_mb,
                init_duration: self.pending_init_duration.take(),
                extension_overhead,
                tenant_id: progress.tenant_id.as_deref(),
            },
        );
        shared.update(|s| shared.emit(s, frozen_at.max(now), "platform.report", report));
        extension_overhead
    }

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

fn crash(error_type: &str, name: &str, when: &str, exit: &ProcessExit) -> InitFailure {
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

fn shutdown_taken(s: &State, name: &str, generation: u64) -> bool {
    s.generation == generation
        && s.extensions
            .iter()
            .find(|e| e.name == name)
            .is_some_and(|e| e.delivered.iter().any(|d| d.event_type() == "SHUTDOWN"))
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

/// The invocation's `status` and `errorType`: the outcome decides, else the runtime's answer.
fn outcome_status(
    outcome: &Outcome,
    answer: Option<&RuntimeAnswer>,
) -> (InvocationStatus, Option<String>) {
    match (outcome, answer) {
        (Outcome::TimedOut, _) => (
            InvocationStatus::Timeout,
            Some("Sandbox.Timedout".to_owned()),
        ),
        (Outcome::RuntimeCrashed(_), _) => (
            InvocationStatus::Failure,
            Some("Runtime.ExitError".to_owned()),
        ),
        (Outcome::ExtensionCrashed(_), _) => (
            InvocationStatus::Failure,
            Some("Extension.Crash".to_owned()),
        ),
        (Outcome::Finished, Some(RuntimeAnswer::Response(_))) => (InvocationStatus::Success, None),
        (Outcome::Finished, Some(RuntimeAnswer::Error { error_type, .. })) => (
            InvocationStatus::Error,
            Some(error_type.clone().unwrap_or_else(|| "Unknown".to_owned())),
        ),
        // The runtime called next without answering.
        (Outcome::Finished, None) => (
            InvocationStatus::Failure,
            Some("Runtime.NoResponse".to_owned()),
        ),
    }
}

fn failure_message(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::RuntimeCrashed(exit) => Some(
            crash(
                "Runtime.ExitError",
                "the runtime",
                "during the invoke",
                exit,
            )
            .2,
        ),
        Outcome::ExtensionCrashed(name) => {
            Some(format!("extension {name} exited during the invoke"))
        }
        Outcome::Finished | Outcome::TimedOut => None,
    }
}

/// The response payload or the error, from the runtime's answer.
pub(crate) fn answer_parts(
    answer: Option<&RuntimeAnswer>,
) -> (Option<Bytes>, Option<FunctionError>) {
    match answer {
        Some(RuntimeAnswer::Response(body)) => (Some(body.clone()), None),
        Some(RuntimeAnswer::Error {
            error_type,
            body,
            xray_cause,
        }) => {
            let parsed: Option<Value> = serde_json::from_slice(body).ok();
            let field = |name: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let error = FunctionError {
                header_type: error_type.clone(),
                body_type: field("errorType"),
                message: field("errorMessage"),
                body: body.clone(),
                xray_cause: xray_cause.clone(),
            };
            (None, Some(error))
        }
        None => (None, None),
    }
}
