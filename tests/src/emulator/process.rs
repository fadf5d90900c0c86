//! Child processes: spawned with a cleared environment, watched by a task that owns the child
//! (so signals never reach a reaped pid), output read line by line, killed when dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::config::ChildOutput;
use super::state::{ProcessStatus, Shared};
use super::{EmulatorError, ProcessExit};

static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(1);

/// Spawn attempts when the executable is busy (ETXTBSY).
const SPAWN_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
const SPAWN_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// What a process is to Lambda; decides the telemetry type of its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Runtime,
    Extension,
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Terminate,
    Kill,
}

/// A running (or exited) child. Dropping it kills the child.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pub id: u64,
    pub name: String,
    pub pid: Option<u32>,
    pub spawned_at: Instant,
    control: mpsc::Sender<Control>,
}

impl ProcessHandle {
    /// Sends SIGTERM (a no-op once the child has exited).
    pub fn terminate(&self) {
        let _ = self.control.try_send(Control::Terminate);
    }

    /// Sends SIGKILL (a no-op once the child has exited).
    pub fn kill(&self) {
        let _ = self.control.try_send(Control::Kill);
    }
}

/// Starts `command` with exactly `env` (plus nothing from the host).
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    generation: u64,
    role: Role,
    name: &str,
    command: &[OsString],
    env: &BTreeMap<String, String>,
) -> Result<ProcessHandle, EmulatorError> {
    let Some((program, args)) = command.split_first() else {
        return Err(EmulatorError::Spawn {
            name: name.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some((uid, gid)) = shared.config.run_as {
        cmd.uid(uid).gid(gid);
    }
    let output = shared.config.output.clone();
    if output == ChildOutput::Inherit {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let spawned_at = Instant::now();
    let mut child = spawn_retrying_busy(&mut cmd).map_err(|source| EmulatorError::Spawn {
        name: name.to_owned(),
        source,
    })?;
    let id = NEXT_PROCESS_ID.fetch_add(1, Ordering::Relaxed);
    let pid = child.id();
    shared.update(|s| {
        s.processes.insert(id, ProcessStatus { exit: None });
    });

    let sink = match &output {
        ChildOutput::File(path) => match File::options().create(true).append(true).open(path) {
            Ok(file) => LineSink::File(Arc::new(Mutex::new(file))),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot open the output file; echoing to stderr");
                LineSink::Stderr
            }
        },
        ChildOutput::Quiet => LineSink::Discard,
        ChildOutput::Capture | ChildOutput::Inherit => LineSink::Stderr,
    };
    let event_type = match role {
        Role::Runtime => "function",
        Role::Extension => "extension",
    };
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(read_lines(
            Arc::clone(shared),
            generation,
            name.to_owned(),
            event_type,
            sink.clone(),
            stdout,
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(read_lines(
            Arc::clone(shared),
            generation,
            name.to_owned(),
            event_type,
            sink,
            stderr,
        ));
    }

    let (control, commands) = mpsc::channel(4);
    tokio::spawn(watch(Arc::clone(shared), id, child, commands));
    Ok(ProcessHandle {
        id,
        name: name.to_owned(),
        pid,
        spawned_at,
        control,
    })
}

/// Spawns, retrying briefly on ETXTBSY: an executable written just before (a test's wrapper
/// script) can still be open for writing in a child that another thread forked at that moment.
fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<Child> {
    let mut attempt = 1;
    loop {
        match cmd.spawn() {
            Err(error)
                if error.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempt < SPAWN_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(SPAWN_RETRY_DELAY);
            }
            result => return result,
        }
    }
}

/// Owns the child: forwards signals until it exits, then records the exit.
async fn watch(
    shared: Arc<Shared>,
    id: u64,
    mut child: Child,
    mut commands: mpsc::Receiver<Control>,
) {
    let mut handle_alive = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            command = commands.recv(), if handle_alive => match command {
                Some(Control::Terminate) => {
                    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                }
                Some(Control::Kill) => {
                    let _ = child.start_kill();
                }
                None => {
                    // The handle is gone: nobody will ever stop this child, so stop it now.
                    handle_alive = false;
                    let _ = child.start_kill();
                }
            },
        }
    };
    let at = Instant::now();
    let exit = match status {
        Ok(status) => ProcessExit {
            code: status.code(),
            signal: status.signal(),
            at,
        },
        Err(error) => {
            tracing::warn!(%error, "waiting for a child failed");
            ProcessExit {
                code: None,
                signal: None,
                at,
            }
        }
    };
    shared.update(|s| {
        if let Some(process) = s.processes.get_mut(&id) {
            process.exit = Some(exit);
        }
    });
}

#[derive(Clone)]
enum LineSink {
    Stderr,
    File(Arc<Mutex<File>>),
    Discard,
}

async fn read_lines(
    shared: Arc<Shared>,
    generation: u64,
    name: String,
    event_type: &'static str,
    sink: LineSink,
    stream: impl AsyncRead + Unpin,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match &sink {
            // Echoed through the std print machinery so the test harness captures it per test.
            LineSink::Stderr => eprintln!("[{name}] {line}"),
            LineSink::File(file) => {
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = writeln!(file, "[{name}] {line}");
            }
            LineSink::Discard => {}
        }
        shared.telemetry.emit(
            generation,
            Instant::now(),
            event_type,
            Value::String(line.clone()),
        );
        shared.push_output(&name, line);
    }
}

/// The peak resident set of `pid` in MB (rounded up), from `/proc/<pid>/status` (`VmHWM`).
pub(crate) fn peak_rss_mb(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    u32::try_from(kb.div_ceil(1024)).ok()
}
