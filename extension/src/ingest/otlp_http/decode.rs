//! Decoding one OTLP/HTTP request, synchronously, on a thread of its own (never the lifecycle
//! loop's): inflate, JSON → protobuf, checks, documents. Every byte it allocates is reserved from
//! the budget first, on top of the body's own reservation: the inflated body as it grows, the
//! JSON decoder's output and its longest string, the parsed request's lists, each document. When
//! the budget has no room it waits for some (polling) until the request's room deadline; past
//! the whole budget it stops at once. The decode also stops at its own deadline, so the time it
//! takes is bounded too, whatever the body.
//!
//! Decodes run on [`Workers`]: a fixed set of threads of our own, not tokio's blocking pool,
//! whose threads also resolve the X-Ray endpoint's name (a decode must never delay a send) and
//! come and go (each new thread a new allocator arena keeping its own freed memory).

use std::cell::RefCell;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::warn;

use super::{Encoding, MAX_DECODED_BYTES, ReceiverError};
use crate::document::Document;
use crate::export::budget::ROOM_POLL;
use crate::export::budget::{Admitted, BudgetError, Reservation};
use crate::ingest::udp::Ingested;
use crate::otlp::{self, OtlpError, Packed, Packing, Sampling, json};

/// What one request needs to be decoded.
#[derive(Debug)]
pub struct Job {
    /// How the body is encoded.
    pub encoding: Encoding,
    /// Whether it is gzip'd.
    pub gzip: bool,
    /// The body as read.
    pub body: Vec<u8>,
    /// How its spans become documents.
    pub packing: &'static Packing,
    /// The reservation holding the body's bytes, grown for everything the decode allocates.
    pub reservation: Reservation,
    /// Until when the decode may wait for room.
    pub room_deadline: Instant,
    /// When the decode gives up.
    pub deadline: Instant,
    /// Where to say that it waits for room.
    pub wake: tokio::sync::mpsc::Sender<Ingested>,
}

/// A decoded request: its documents, each with its permits, and the spans left out.
#[derive(Debug)]
pub struct Decoded {
    /// The documents, each holding its bytes in the budget until its send settles.
    pub documents: Vec<Admitted>,
    /// Spans too large for a document of their own.
    pub rejected_spans: usize,
}

/// A decode's outcome.
pub type Outcome = Result<Decoded, ReceiverError>;

type Task = (Job, oneshot::Sender<Outcome>);

/// A fixed set of decode threads, started on first use. A job is taken only by an idle thread
/// (a rendezvous): at most as many decodes run as there are threads, and none waits in a queue.
#[derive(Debug)]
pub struct Workers {
    jobs: mpsc::SyncSender<Task>,
}

impl Workers {
    /// Starts `count` threads; `None` (logged) when not one could start.
    pub fn start(count: usize) -> Option<Self> {
        let (jobs, tasks) = mpsc::sync_channel::<Task>(0);
        let tasks = Arc::new(Mutex::new(tasks));
        let mut started = 0;
        for i in 0..count {
            let tasks = tasks.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("otlp-decode-{i}"))
                .spawn(move || work(&tasks));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => warn!(error = %e, "could not start an OTLP decode thread"),
            }
        }
        (started > 0).then_some(Self { jobs })
    }

    /// Hands `job` to an idle thread, or gives it back when every thread is busy.
    pub fn try_run(&self, job: Job) -> Result<oneshot::Receiver<Outcome>, Job> {
        let (reply, outcome) = oneshot::channel();
        match self.jobs.try_send((job, reply)) {
            Ok(()) => Ok(outcome),
            Err(
                mpsc::TrySendError::Full((job, _)) | mpsc::TrySendError::Disconnected((job, _)),
            ) => Err(job),
        }
    }
}

/// One decode thread: takes a job when idle, until the receiver is gone.
fn work(tasks: &Mutex<mpsc::Receiver<Task>>) {
    loop {
        let task = tasks.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((job, reply)) = task else {
            return;
        };
        // A panic ends this decode, not the thread: the request gets 503.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(job)))
            .unwrap_or_else(|_| {
                warn!("OTLP request decoding panicked");
                Err(ReceiverError::Timeout)
            });
        // The request may have gone (its client closed): nobody to answer then.
        let _ = reply.send(outcome);
    }
}

/// Why a decode stopped, beyond the request's own faults.
fn refusal(e: BudgetError) -> ReceiverError {
    match e {
        BudgetError::TooLarge => ReceiverError::TooLarge,
        BudgetError::NoRoom => ReceiverError::Busy,
    }
}

/// The budget as the decode sees it: grown with waiting, and what its documents hold counted
/// against the whole budget too.
struct Budget {
    reservation: RefCell<Reservation>,
    /// Bytes of the documents admitted so far (their permits left the reservation).
    admitted: std::cell::Cell<usize>,
    room_deadline: Instant,
    deadline: Instant,
    wake: tokio::sync::mpsc::Sender<Ingested>,
}

impl Budget {
    /// Takes `bytes` more, waiting for room until the room deadline.
    fn grow(&self, bytes: usize) -> Result<(), ReceiverError> {
        let mut reservation = self.reservation.borrow_mut();
        let whole = reservation.bytes() + self.admitted.get() + bytes;
        if whole > reservation.capacity() {
            return Err(ReceiverError::TooLarge);
        }
        let mut asked = false;
        loop {
            match reservation.try_grow(bytes) {
                Ok(()) => return Ok(()),
                Err(BudgetError::NoRoom) if Instant::now() + ROOM_POLL <= self.room_deadline => {
                    if !asked {
                        // Best effort: a full queue is busy enough.
                        let _ = self.wake.try_send(Ingested::RoomWanted);
                        asked = true;
                    }
                    std::thread::sleep(ROOM_POLL);
                }
                Err(e) => return Err(refusal(e)),
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.reservation.borrow_mut().release(bytes);
    }

    fn admit(&self, doc: Document) -> Result<Admitted, ReceiverError> {
        let weight = doc.weight();
        self.grow(weight)?;
        let admitted = self
            .reservation
            .borrow_mut()
            .admit(doc)
            .map_err(|(_, e)| refusal(e))?;
        self.admitted.set(self.admitted.get() + weight);
        Ok(admitted)
    }

    fn check_time(&self) -> Result<(), ReceiverError> {
        if Instant::now() > self.deadline {
            Err(ReceiverError::Timeout)
        } else {
            Ok(())
        }
    }
}

/// Decodes `job` into documents. Synchronous and long: run it off the async runtime.
pub fn decode(job: Job) -> Result<Decoded, ReceiverError> {
    let Job {
        encoding,
        gzip,
        body,
        packing,
        reservation,
        room_deadline,
        deadline,
        wake,
    } = job;
    let budget = Budget {
        reservation: RefCell::new(reservation),
        admitted: std::cell::Cell::new(0),
        room_deadline,
        deadline,
        wake,
    };
    let body_bytes = body.capacity();
    let protobuf = match (encoding, gzip) {
        (Encoding::Protobuf, false) => body,
        (Encoding::Protobuf, true) => {
            let inflated = inflate(&body, &budget)?;
            drop(body);
            budget.release(body_bytes);
            inflated
        }
        (Encoding::Json, _) => {
            let converted = from_json(&body, gzip, &budget)?;
            drop(body);
            budget.release(body_bytes);
            converted
        }
    };
    budget.check_time()?;
    budget.grow(otlp::parse_cost(&protobuf))?;
    let request = otlp::parse_request(&protobuf)?;
    let mut documents = Vec::new();
    let mut scratch = 0;
    let rejected_spans = otlp::each_document(&request, Sampling::Sampled, *packing, |packed| {
        budget.check_time()?;
        match packed {
            Packed::Scratch(bytes) => {
                budget.grow(bytes)?;
                scratch += bytes;
            }
            Packed::Document(doc) => {
                budget.release(std::mem::take(&mut scratch));
                documents.push(budget.admit(doc)?);
            }
        }
        Ok::<(), ReceiverError>(())
    })?;
    Ok(Decoded {
        documents,
        rejected_spans,
    })
}

/// The size gzip's trailer announces (of its last member, modulo 4 GiB): a first guess at the
/// inflated size, so a truthful body is inflated into one allocation.
fn announced_size(body: &[u8]) -> Option<usize> {
    let trailer: [u8; 4] = body.get(body.len().checked_sub(4)?..)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(trailer)).ok()
}

/// The gzip'd `body`, inflated into a buffer grown only with room reserved, up to
/// [`MAX_DECODED_BYTES`]. A body announcing more than that is refused before it is inflated.
fn inflate(body: &[u8], budget: &Budget) -> Result<Vec<u8>, ReceiverError> {
    let announced = announced_size(body).unwrap_or(0);
    if announced > MAX_DECODED_BYTES {
        return Err(ReceiverError::TooLarge);
    }
    let mut input = Input::new(flate2::read::MultiGzDecoder::new(body), budget, false);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let room = if out.capacity() == 0 {
            announced + 1
        } else {
            (out.capacity() * 2)
                .clamp(64 * 1024, MAX_DECODED_BYTES + 1)
                .saturating_sub(out.capacity())
        };
        if room == 0 {
            return Err(ReceiverError::TooLarge);
        }
        // The old buffer is held until its contents move into the new one.
        let old = out.capacity();
        budget.grow(old + room)?;
        out.reserve_exact(old + room - out.len());
        budget.release(old);
        let spare = (out.capacity() - out.len()) as u64;
        let read = (&mut input)
            .take(spare)
            .read_to_end(&mut out)
            .map_err(|_| input.failure())?;
        if (read as u64) < spare {
            return Ok(out);
        }
    }
}

/// The JSON `body` (inflated as it is read when `gzip`) converted into protobuf.
fn from_json(body: &[u8], gzip: bool, budget: &Budget) -> Result<Vec<u8>, ReceiverError> {
    let mut room = Room {
        budget,
        refused: None,
    };
    let result = if gzip {
        let mut input = Input::new(flate2::read::MultiGzDecoder::new(body), budget, true);
        let result = json::decode_reader(BufReader::new(&mut input), &mut room);
        result.map_err(|e| input.failure.take().unwrap_or(ReceiverError::Decode(e)))
    } else {
        let mut input = Input::new(body, budget, true);
        let result = json::decode_reader(BufReader::new(&mut input), &mut room);
        result.map_err(|e| input.failure.take().unwrap_or(ReceiverError::Decode(e)))
    };
    result.map_err(|e| match (e, room.refused) {
        (ReceiverError::Decode(OtlpError::NoRoom), Some(refused)) => refused,
        (e, _) => e,
    })
}

/// The JSON decoder's output room, from the budget.
struct Room<'b> {
    budget: &'b Budget,
    refused: Option<ReceiverError>,
}

impl json::Room for Room<'_> {
    fn release(&mut self, bytes: usize) {
        self.budget.release(bytes);
    }

    fn grow(&mut self, additional: usize) -> bool {
        match self.budget.grow(additional) {
            Ok(()) => true,
            Err(e) => {
                // The last refusal is the one that stops the decoder.
                self.refused = Some(e);
                false
            }
        }
    }
}

/// The body as the decoders read it: at most [`MAX_DECODED_BYTES`], within the deadline, and for
/// JSON its longest string reserved (the JSON reader copies each string whole before it is
/// looked at).
struct Input<'b, R> {
    inner: R,
    budget: &'b Budget,
    read: usize,
    /// Tracking JSON strings.
    json: bool,
    in_string: bool,
    escaped: bool,
    string_len: usize,
    /// The longest string reserved so far.
    reserved_string: usize,
    failure: Option<ReceiverError>,
}

impl<'b, R: Read> Input<'b, R> {
    fn new(inner: R, budget: &'b Budget, json: bool) -> Self {
        Self {
            inner,
            budget,
            read: 0,
            json,
            in_string: false,
            escaped: false,
            string_len: 0,
            reserved_string: 0,
            failure: None,
        }
    }

    fn failure(&mut self) -> ReceiverError {
        self.failure.take().unwrap_or(ReceiverError::Gzip)
    }

    fn fail(&mut self, e: ReceiverError) -> std::io::Error {
        self.failure = Some(e);
        std::io::Error::other("decode stopped")
    }

    /// Follows strings through `bytes`, reserving the longest one seen.
    fn scan(&mut self, bytes: &[u8]) -> Result<(), ReceiverError> {
        for &b in bytes {
            if !self.in_string {
                if b == b'"' {
                    self.in_string = true;
                    self.string_len = 0;
                }
                continue;
            }
            self.string_len += 1;
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
        }
        if self.string_len > self.reserved_string {
            let more = (self.string_len - self.reserved_string).max(4096);
            self.budget.grow(more)?;
            self.reserved_string += more;
        }
        Ok(())
    }
}

impl<R: Read> Read for Input<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Err(e) = self.budget.check_time() {
            return Err(self.fail(e));
        }
        let Ok(n) = self.inner.read(buf) else {
            return Err(self.fail(ReceiverError::Gzip));
        };
        self.read += n;
        if self.read > MAX_DECODED_BYTES {
            return Err(self.fail(ReceiverError::TooLarge));
        }
        if self.json
            && let Err(e) = self.scan(&buf[..n])
        {
            return Err(self.fail(e));
        }
        Ok(n)
    }
}
