//! The store data of a plugin instance, and safe access to the guest's linear memory.
//!
//! Every guest pointer is bounds-checked here: a pointer/length pair outside the memory is
//! [`Status::InvalidMemoryAccess`] for the guest, never a host panic.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use wasmtime::{Caller, Memory, TypedFunc};

use proxy_async_abi::{Hostcalls, LogLevel, Status};

/// How many critical log lines one callback keeps for a trap report.
const MAX_CAPTURED_LINES: usize = 16;
/// How many bytes of one captured line are kept.
const MAX_CAPTURED_LINE: usize = 4096;
/// How many bytes of unterminated stdout/stderr output are buffered before being logged anyway.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

/// What the store of a plugin instance holds: the [`Hostcalls`] and what the glue needs.
pub(crate) struct HostState<H> {
    /// The hostcall implementation, shared with whoever drives the plugin (an emulated proxy
    /// keeps the same state): borrowed for one hostcall at a time.
    pub(crate) hostcalls: Rc<RefCell<H>>,
    /// The guest's exported `memory` (set after instantiation).
    pub(crate) memory: Option<Memory>,
    /// The guest's `proxy_on_memory_allocate` or `malloc` (set after instantiation).
    pub(crate) allocate: Option<TypedFunc<u32, u32>>,
    /// Output of the current callback kept to explain a trap.
    pub(crate) captured: Captured,
    /// Unterminated stdout output (WASI `fd_write` to fd 1), logged line by line.
    pub(crate) stdout: Vec<u8>,
    /// Unterminated stderr output (WASI `fd_write` to fd 2), logged line by line.
    pub(crate) stderr: Vec<u8>,
}

/// The panic-looking output of the current callback: critical log lines and stderr lines.
#[derive(Default)]
pub(crate) struct Captured {
    critical: Vec<String>,
    stderr: Vec<String>,
}

fn push_capped(lines: &mut Vec<String>, line: &[u8]) {
    let line = &line[..line.len().min(MAX_CAPTURED_LINE)];
    if lines.len() == MAX_CAPTURED_LINES {
        lines.remove(0);
    }
    lines.push(String::from_utf8_lossy(line).into_owned());
}

impl Captured {
    /// Forgets what an earlier callback logged.
    pub(crate) fn clear(&mut self) {
        self.critical.clear();
        self.stderr.clear();
    }

    /// The panic message to attach to a trap: the critical log lines of the callback if there
    /// are any (our SDK's panic hook), else its stderr lines (Rust std's default panic hook).
    pub(crate) fn panic_message(&self) -> Option<String> {
        let lines = if self.critical.is_empty() {
            &self.stderr
        } else {
            &self.critical
        };
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

impl<H: Hostcalls> HostState<H> {
    pub(crate) fn new(hostcalls: Rc<RefCell<H>>) -> Self {
        HostState {
            hostcalls,
            memory: None,
            allocate: None,
            captured: Captured::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// The hostcall implementation, for one hostcall.
    pub(crate) fn host(&self) -> RefMut<'_, H> {
        self.hostcalls.borrow_mut()
    }

    /// `proxy_log`, keeping critical lines for a trap report.
    pub(crate) fn log(&mut self, level: LogLevel, message: &[u8]) -> Result<(), Status> {
        if level == LogLevel::Critical {
            push_capped(&mut self.captured.critical, message);
        }
        self.host().log(level, message)
    }

    /// Output written to stdout (`fd == 1`) or stderr (`fd == 2`): every complete line is
    /// logged (stdout at info, stderr at error) without its `\n`.
    pub(crate) fn write_output(&mut self, fd: u32, bytes: &[u8]) {
        let stderr = fd == 2;
        let pending = if stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let mut line: Vec<u8> = pending.drain(..=end).collect();
            line.pop();
            lines.push(line);
        }
        if pending.len() > MAX_PENDING_OUTPUT {
            lines.push(std::mem::take(pending));
        }
        for line in lines {
            self.emit_output(stderr, &line);
        }
    }

    /// Logs what is left of unterminated stdout/stderr output (at the end of each callback).
    pub(crate) fn flush_output(&mut self) {
        let stdout = std::mem::take(&mut self.stdout);
        if !stdout.is_empty() {
            self.emit_output(false, &stdout);
        }
        let stderr = std::mem::take(&mut self.stderr);
        if !stderr.is_empty() {
            self.emit_output(true, &stderr);
        }
    }

    fn emit_output(&mut self, stderr: bool, line: &[u8]) {
        if stderr {
            push_capped(&mut self.captured.stderr, line);
            // The guest cannot be told about a refused log line; ignoring it is what a proxy
            // does with WASI output too.
            let _ = self.host().log(LogLevel::Error, line);
        } else {
            let _ = self.host().log(LogLevel::Info, line);
        }
    }
}

/// The store data as seen from a hostcall.
pub(crate) type Ctx<'a, H> = Caller<'a, HostState<H>>;

/// Runs `f` with the guest's memory and the store data, both borrowed mutably.
pub(crate) fn with_memory<H: Hostcalls + 'static, R>(
    caller: &mut Ctx<'_, H>,
    f: impl FnOnce(&mut [u8], &mut HostState<H>) -> Result<R, Status>,
) -> Result<R, Status> {
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    f(bytes, state)
}

fn range(ptr: u32, len: usize) -> Result<std::ops::Range<usize>, Status> {
    let start = usize::try_from(ptr).map_err(|_| Status::InvalidMemoryAccess)?;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    Ok(start..end)
}

/// The guest bytes `[ptr, ptr + len)`.
pub(crate) fn slice(memory: &[u8], ptr: u32, len: u32) -> Result<&[u8], Status> {
    let len = usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
    memory
        .get(range(ptr, len)?)
        .ok_or(Status::InvalidMemoryAccess)
}

/// The guest bytes `[ptr, ptr + len)`, writable.
pub(crate) fn slice_mut(memory: &mut [u8], ptr: u32, len: usize) -> Result<&mut [u8], Status> {
    memory
        .get_mut(range(ptr, len)?)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Checks that an out-parameter of `size` bytes at `ptr` can be written.
pub(crate) fn check_out(memory: &[u8], ptr: u32, size: usize) -> Result<(), Status> {
    memory
        .get(range(ptr, size)?)
        .map(|_| ())
        .ok_or(Status::InvalidMemoryAccess)
}

/// Writes `value` as u32 LE at `ptr`.
pub(crate) fn write_u32(memory: &mut [u8], ptr: u32, value: u32) -> Result<(), Status> {
    slice_mut(memory, ptr, 4)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Writes `value` as u64 LE at `ptr`.
pub(crate) fn write_u64(memory: &mut [u8], ptr: u32, value: u64) -> Result<(), Status> {
    slice_mut(memory, ptr, 8)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Copies `data` into memory the guest allocates with its allocator, then writes the guest
/// pointer and length (u32 LE) at `ptr_out` and `len_out`. Empty data is written as a null
/// pointer and 0, without allocating (as cpp-host does).
///
/// The outer error is a trap (the allocator trapped or ran out of fuel); the inner one is the
/// status for the guest.
pub(crate) fn copy_out<H: Hostcalls + 'static>(
    caller: &mut Ctx<'_, H>,
    data: &[u8],
    ptr_out: u32,
    len_out: u32,
) -> wasmtime::Result<Result<(), Status>> {
    let Ok(len) = u32::try_from(data.len()) else {
        return Ok(Err(Status::InvalidMemoryAccess));
    };
    let mut guest_ptr = 0;
    if !data.is_empty() {
        let Some(allocate) = caller.data().allocate.clone() else {
            return Ok(Err(Status::InternalFailure));
        };
        guest_ptr = allocate.call(&mut *caller, len)?;
        if guest_ptr == 0 {
            return Ok(Err(Status::InvalidMemoryAccess));
        }
    }
    Ok(with_memory(caller, |memory, _| {
        if !data.is_empty() {
            slice_mut(memory, guest_ptr, data.len())?.copy_from_slice(data);
        }
        write_u32(memory, ptr_out, guest_ptr)?;
        write_u32(memory, len_out, len)
    }))
}

/// The status code for the guest.
pub(crate) fn code(result: Result<(), Status>) -> u32 {
    Status::code_of(&result)
}

/// The common shape of hostcalls that return bytes through `return_data**`/`return_size*`:
/// checks both out-parameters, runs `f` (which may read guest memory and write further
/// out-parameters), then copies its result into the guest.
pub(crate) fn out_bytes<H: Hostcalls + 'static>(
    caller: &mut Ctx<'_, H>,
    ptr_out: u32,
    len_out: u32,
    f: impl FnOnce(&mut [u8], &mut HostState<H>) -> Result<Vec<u8>, Status>,
) -> wasmtime::Result<u32> {
    let data = with_memory(caller, |memory, state| {
        check_out(memory, ptr_out, 4)?;
        check_out(memory, len_out, 4)?;
        f(memory, state)
    });
    Ok(match data {
        Ok(data) => code(copy_out(caller, &data, ptr_out, len_out)?),
        Err(status) => status.code(),
    })
}
