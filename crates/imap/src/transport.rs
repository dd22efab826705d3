//! The bytes of one IMAP connection: what the client sends is fed to imap-next's
//! `Server` (which frames commands, literals and continuations), and what it
//! answers is written back, over plain TCP or TLS alike.
//!
//! It exists to bound the memory a client can make the site hold. imap-next keeps
//! a command's bytes (its literals included) until the command is complete, up to
//! a size fixed when the connection opens; here every byte fed towards one
//! command is counted, before login against [`PRE_LOGIN_COMMAND_BYTES_MAX`] and
//! always against the site's memory budget (`maildr_frontend::memory`). A client
//! over either is told why (`BYE`) and disconnected: a command cannot be refused
//! halfway through its literal. Answers are written while input is read, so a
//! client that sends while it does not read cannot deadlock the session, and
//! [`Transport::drain_output`] lets a long answer (FETCH) be written in batches
//! without reading the next command.
//!
//! This module decides nothing about commands; it must never parse or answer one.

use std::collections::VecDeque;
use std::io;

use imap_next::server::{Error as ServerError, Event, Server};
use imap_next::{Interrupt, Io as Wanted, State};
use maildr_frontend::memory::{BudgetSpent, MemoryCharge, MessageMemory};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes a client may send towards one command before it has logged in: a
/// LOGIN or AUTHENTICATE with long literals fits many times over, a message
/// does not.
pub(crate) const PRE_LOGIN_COMMAND_BYTES_MAX: usize = 64 * 1024;

/// Bytes read from the connection at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Answer bytes gathered before they are written even if no input is wanted.
const OUTPUT_HIGH_WATER_BYTES: usize = 256 * 1024;

/// A byte stream a session runs over: TCP, or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why the connection cannot go on as it is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// imap-next could not frame what the client sent (the session answers BAD).
    #[error("{0:?}")]
    State(ServerError),
    #[error("{PRE_LOGIN_COMMAND_BYTES_MAX} bytes towards one command before login")]
    PreLoginCommandTooLong,
    #[error(transparent)]
    OverBudget(BudgetSpent),
    #[error("connection: {0}")]
    Io(#[from] io::Error),
}

pub(crate) struct Transport {
    io: Box<dyn Io>,
    read_buf: Vec<u8>,
    /// Answer bytes to write, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// Bytes fed since the last complete message (command, authentication data,
    /// DONE), and their charge to the budget.
    pending_bytes: usize,
    charge: MemoryCharge,
    /// Events met while only output was wanted, handed out first by `next`.
    stashed: VecDeque<Event>,
    /// Whether the client has logged in (set by the session).
    pub(crate) logged_in: bool,
}

impl Transport {
    pub(crate) fn new(io: Box<dyn Io>, memory: &'static MessageMemory) -> Transport {
        Transport {
            io,
            read_buf: vec![0; READ_CHUNK_BYTES],
            output: Vec::new(),
            written: 0,
            pending_bytes: 0,
            charge: memory.charge(),
            stashed: VecDeque::new(),
            logged_in: false,
        }
    }

    /// The next event of the session, reading and writing as needed.
    pub(crate) async fn next(&mut self, server: &mut Server) -> Result<Event, TransportError> {
        if let Some(event) = self.stashed.pop_front() {
            return Ok(event);
        }
        loop {
            match server.next() {
                Ok(event) => {
                    self.note_event(&event);
                    return Ok(event);
                }
                Err(Interrupt::Io(Wanted::Output(bytes))) => {
                    self.queue_output(bytes);
                    if self.output.len() - self.written >= OUTPUT_HIGH_WATER_BYTES {
                        self.pump(server, false).await?;
                    }
                }
                Err(Interrupt::Io(Wanted::NeedMoreInput)) => self.pump(server, true).await?,
                Err(Interrupt::Error(e)) => {
                    self.message_done();
                    return Err(TransportError::State(e));
                }
            }
        }
    }

    /// Write every answer enqueued so far without waiting for input; an event met
    /// on the way (a command the client pipelined) is kept for `next`.
    pub(crate) async fn drain_output(&mut self, server: &mut Server) -> Result<(), TransportError> {
        loop {
            match server.next() {
                Ok(Event::ResponseSent { .. } | Event::GreetingSent { .. }) => {}
                Ok(event) => {
                    self.note_event(&event);
                    self.stashed.push_back(event);
                    break;
                }
                Err(Interrupt::Io(Wanted::Output(bytes))) => {
                    self.queue_output(bytes);
                    if self.output.len() - self.written >= OUTPUT_HIGH_WATER_BYTES {
                        self.pump(server, false).await?;
                    }
                }
                Err(Interrupt::Io(Wanted::NeedMoreInput)) => break,
                // A framing error of a pipelined command: answered when `next` meets it again.
                Err(Interrupt::Error(_)) => break,
            }
        }
        self.pump(server, false).await
    }

    /// Write what is enqueued (the last answers before closing), ignoring input.
    pub(crate) async fn flush(&mut self, server: &mut Server) {
        loop {
            match server.next() {
                Err(Interrupt::Io(Wanted::Output(bytes))) => self.queue_output(bytes),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = self.io.write_all(&self.output[self.written..]).await;
        let _ = self.io.flush().await;
        self.output.clear();
        self.written = 0;
    }

    /// Queue answer bytes; an answer that finds nothing queued is kept as it is
    /// (a large FETCH answer is never copied here).
    fn queue_output(&mut self, bytes: Vec<u8>) {
        if self.written == self.output.len() {
            self.output = bytes;
            self.written = 0;
        } else {
            self.output.extend_from_slice(&bytes);
        }
    }

    fn note_event(&mut self, event: &Event) {
        if !matches!(event, Event::ResponseSent { .. } | Event::GreetingSent { .. }) {
            self.message_done();
        }
    }

    fn message_done(&mut self) {
        self.pending_bytes = 0;
        self.charge.release();
    }

    /// Write pending output while reading input; returns once input arrived (when
    /// `want_input`) or once the output is written (otherwise).
    async fn pump(&mut self, server: &mut Server, want_input: bool) -> Result<(), TransportError> {
        let mut got_input = false;
        loop {
            if self.written == self.output.len() {
                self.output = Vec::new();
                self.written = 0;
                if !want_input || got_input {
                    return Ok(());
                }
                let n = self.io.read(&mut self.read_buf).await?;
                return self.take_input(server, n);
            }
            let Transport { io, read_buf, output, written, .. } = self;
            let (mut reader, mut writer) = tokio::io::split(io);
            let progress = tokio::select! {
                sent = writer.write(&output[*written..]) => Progress::Wrote(sent?),
                read = reader.read(read_buf) => Progress::Read(read?),
            };
            match progress {
                Progress::Wrote(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Progress::Wrote(n) => {
                    self.written += n;
                    if self.written == self.output.len() {
                        self.io.flush().await?;
                    }
                }
                // Pending output is still written before returning.
                Progress::Read(n) => {
                    self.take_input(server, n)?;
                    got_input = true;
                }
            }
        }
    }

    /// Count `n` bytes just read towards the command they belong to and feed them.
    fn take_input(&mut self, server: &mut Server, n: usize) -> Result<(), TransportError> {
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        self.pending_bytes += n;
        if !self.logged_in && self.pending_bytes > PRE_LOGIN_COMMAND_BYTES_MAX {
            return Err(TransportError::PreLoginCommandTooLong);
        }
        self.charge.cover(self.pending_bytes).map_err(TransportError::OverBudget)?;
        server.enqueue_input(&self.read_buf[..n]);
        Ok(())
    }
}

enum Progress {
    Wrote(usize),
    Read(usize),
}
