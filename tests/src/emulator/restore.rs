//! SnapStart's restore phase: the snapshot's init, then the restore records with the stale init
//! records placed around them.

use std::time::Instant;

use super::config::InitializationType;
use super::records;
use super::state::Phase;
use super::{Emulator, EmulatorError, InitRecord};
use crate::trace::new_uuid;

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

impl Emulator {
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
}
