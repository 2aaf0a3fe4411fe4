//! A minimal WASI preview1 (`wasi_snapshot_preview1`) for proxy-wasm plugins, in the spirit of
//! Envoy's cpp-host (`FOR_ALL_WASI_FUNCTIONS`): no files, no sockets, no arguments, no
//! environment.
//!
//! * `fd_write` to stdout (1) logs at info, to stderr (2) at error, through [`Hostcalls::log`], one
//!   log line per output line (an unterminated line is logged at the end of the callback).
//! * `clock_time_get`: realtime through [`Hostcalls::get_current_time_nanoseconds`], monotonic
//!   (and the CPU-time clocks) through [`Hostcalls::get_monotonic_time_nanoseconds`].
//! * `random_get` fills the buffer from a randomly keyed SipHash stream (no extra crate).
//! * `args_*` and `environ_*` report nothing; `sched_yield` succeeds; `fd_read` on stdin reads
//!   end-of-file; `fd_fdstat_get` describes fds 0-2 as character devices; `fd_prestat_get`
//!   answers `BADF` (no preopened directories, which ends wasi-libc's preopen scan).
//! * `proc_exit(code)` traps; the trap message names the code.
//! * Everything else answers `NOTSUP` (58) for the standard fds and path/socket calls, `BADF`
//!   (8) for other fds.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use wasmtime::Linker;

use crate::guest::{
    Ctx, HostState, check_out, slice, slice_mut, with_memory, write_u32, write_u64,
};
use proxy_async_abi::{Hostcalls, Status};

/// The WASI preview1 module name.
const WASI: &str = "wasi_snapshot_preview1";

/// `errno`: success.
const SUCCESS: u32 = 0;
/// `errno`: bad file descriptor.
const BADF: u32 = 8;
/// `errno`: bad address.
const FAULT: u32 = 21;
/// `errno`: invalid argument.
const INVAL: u32 = 28;
/// `errno`: not supported.
const NOTSUP: u32 = 58;

/// The trap a guest's `proc_exit` raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcExit(pub i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the plugin called proc_exit({})", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// A WASI errno for a failed memory access or hostcall.
fn errno(result: Result<(), Status>) -> u32 {
    match result {
        Ok(()) => SUCCESS,
        Err(Status::InvalidMemoryAccess) => FAULT,
        Err(_) => INVAL,
    }
}

/// `NOTSUP` for the standard fds, `BADF` for the others.
fn unsupported_fd(fd: u32) -> u32 {
    if fd <= 2 { NOTSUP } else { BADF }
}

/// Gathers the bytes of `count` iovecs (`{u32 ptr, u32 len}`) at `iovs`.
fn gather(memory: &[u8], iovs: u32, count: u32) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    for index in 0..count {
        let at = index
            .checked_mul(8)
            .and_then(|offset| iovs.checked_add(offset))
            .ok_or(Status::InvalidMemoryAccess)?;
        let iovec = slice(memory, at, 8)?;
        let ptr = u32::from_le_bytes([iovec[0], iovec[1], iovec[2], iovec[3]]);
        let len = u32::from_le_bytes([iovec[4], iovec[5], iovec[6], iovec[7]]);
        out.extend_from_slice(slice(memory, ptr, len)?);
    }
    Ok(out)
}

/// Defines the `wasi_snapshot_preview1` imports in `linker`.
#[allow(
    clippy::too_many_lines,
    reason = "one short definition per WASI function"
)]
pub(crate) fn add_to_linker<H: Hostcalls + 'static>(
    linker: &mut Linker<HostState<H>>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Ctx<'_, H>, fd: u32, iovs: u32, iovs_len: u32, ret_written: u32| -> u32 {
            if fd != 1 && fd != 2 {
                return BADF;
            }
            errno(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_written, 4)?;
                let bytes = gather(memory, iovs, iovs_len)?;
                let written = u32::try_from(bytes.len()).map_err(|_| Status::BadArgument)?;
                write_u32(memory, ret_written, written)?;
                state.write_output(fd, &bytes);
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |mut c: Ctx<'_, H>, fd: u32, _iovs: u32, _iovs_len: u32, ret_read: u32| -> u32 {
            if fd != 0 {
                return unsupported_fd(fd);
            }
            // stdin is empty: end of file.
            errno(with_memory(&mut c, |memory, _| {
                write_u32(memory, ret_read, 0)
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Ctx<'_, H>, fd: u32, ret_stat: u32| -> u32 {
            if fd > 2 {
                return BADF;
            }
            errno(with_memory(&mut c, |memory, _| {
                // struct fdstat { u8 filetype; u16 flags; u64 rights_base; u64 inheriting }
                let stat = slice_mut(memory, ret_stat, 24)?;
                stat.fill(0);
                stat[0] = 2; // CHARACTER_DEVICE
                let (flags, rights): (u16, u64) = if fd == 0 {
                    (0, 1 << 1) // FD_READ
                } else {
                    (1, 1 << 6) // APPEND, FD_WRITE
                };
                stat[2..4].copy_from_slice(&flags.to_le_bytes());
                stat[8..16].copy_from_slice(&rights.to_le_bytes());
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Ctx<'_, H>, _fd: u32, _ret: u32| -> u32 { BADF },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Ctx<'_, H>, _fd: u32, _path: u32, _len: u32| -> u32 { BADF },
    )?;
    linker.func_wrap(WASI, "fd_close", |_: Ctx<'_, H>, fd: u32| -> u32 {
        if fd <= 2 { SUCCESS } else { BADF }
    })?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Ctx<'_, H>, fd: u32, _offset: i64, _whence: u32, _ret: u32| -> u32 {
            unsupported_fd(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_tell",
        |_: Ctx<'_, H>, fd: u32, _ret: u32| -> u32 { unsupported_fd(fd) },
    )?;
    linker.func_wrap(WASI, "fd_sync", |_: Ctx<'_, H>, fd: u32| -> u32 {
        unsupported_fd(fd)
    })?;
    linker.func_wrap(WASI, "fd_datasync", |_: Ctx<'_, H>, fd: u32| -> u32 {
        unsupported_fd(fd)
    })?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_set_flags",
        |_: Ctx<'_, H>, fd: u32, _flags: u32| -> u32 { unsupported_fd(fd) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_set_rights",
        |_: Ctx<'_, H>, fd: u32, _base: i64, _inheriting: i64| -> u32 { unsupported_fd(fd) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        |_: Ctx<'_, H>, fd: u32, _ret: u32| -> u32 { unsupported_fd(fd) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_set_size",
        |_: Ctx<'_, H>, fd: u32, _size: i64| -> u32 { unsupported_fd(fd) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_set_times",
        |_: Ctx<'_, H>, fd: u32, _atime: i64, _mtime: i64, _flags: u32| -> u32 {
            unsupported_fd(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_advise",
        |_: Ctx<'_, H>, fd: u32, _offset: i64, _len: i64, _advice: u32| -> u32 {
            unsupported_fd(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_allocate",
        |_: Ctx<'_, H>, fd: u32, _offset: i64, _len: i64| -> u32 { unsupported_fd(fd) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pread",
        |_: Ctx<'_, H>, fd: u32, _iovs: u32, _len: u32, _offset: i64, _ret: u32| -> u32 {
            unsupported_fd(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pwrite",
        |_: Ctx<'_, H>, fd: u32, _iovs: u32, _len: u32, _offset: i64, _ret: u32| -> u32 {
            unsupported_fd(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_readdir",
        |_: Ctx<'_, H>, fd: u32, _buf: u32, _len: u32, _cookie: i64, _ret: u32| -> u32 {
            unsupported_fd(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_renumber",
        |_: Ctx<'_, H>, fd: u32, _to: u32| -> u32 { unsupported_fd(fd) },
    )?;

    // Paths: there are no preopened directories.
    linker.func_wrap(
        WASI,
        "path_open",
        |_: Ctx<'_, H>,
         _fd: u32,
         _dirflags: u32,
         _path: u32,
         _path_len: u32,
         _oflags: u32,
         _rights_base: i64,
         _rights_inheriting: i64,
         _fdflags: u32,
         _ret_fd: u32|
         -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_create_directory",
        |_: Ctx<'_, H>, _fd: u32, _path: u32, _len: u32| -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_remove_directory",
        |_: Ctx<'_, H>, _fd: u32, _path: u32, _len: u32| -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_unlink_file",
        |_: Ctx<'_, H>, _fd: u32, _path: u32, _len: u32| -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        |_: Ctx<'_, H>, _fd: u32, _flags: u32, _path: u32, _len: u32, _ret: u32| -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_set_times",
        |_: Ctx<'_, H>,
         _fd: u32,
         _flags: u32,
         _path: u32,
         _len: u32,
         _atime: i64,
         _mtime: i64,
         _fst_flags: u32|
         -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_link",
        |_: Ctx<'_, H>,
         _old_fd: u32,
         _flags: u32,
         _old_path: u32,
         _old_len: u32,
         _new_fd: u32,
         _new_path: u32,
         _new_len: u32|
         -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_rename",
        |_: Ctx<'_, H>,
         _fd: u32,
         _old_path: u32,
         _old_len: u32,
         _new_fd: u32,
         _new_path: u32,
         _new_len: u32|
         -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_symlink",
        |_: Ctx<'_, H>,
         _old_path: u32,
         _old_len: u32,
         _fd: u32,
         _new_path: u32,
         _new_len: u32|
         -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "path_readlink",
        |_: Ctx<'_, H>,
         _fd: u32,
         _path: u32,
         _len: u32,
         _buf: u32,
         _buf_len: u32,
         _ret: u32|
         -> u32 { NOTSUP },
    )?;

    // Process, clocks, randomness.
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Ctx<'_, H>, ret_count: u32, ret_size: u32| -> u32 {
            errno(with_memory(&mut c, |memory, _| {
                write_u32(memory, ret_count, 0)?;
                write_u32(memory, ret_size, 0)
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |_: Ctx<'_, H>, _argv: u32, _buf: u32| -> u32 { SUCCESS },
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Ctx<'_, H>, ret_count: u32, ret_size: u32| -> u32 {
            errno(with_memory(&mut c, |memory, _| {
                write_u32(memory, ret_count, 0)?;
                write_u32(memory, ret_size, 0)
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |_: Ctx<'_, H>, _environ: u32, _buf: u32| -> u32 { SUCCESS },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Ctx<'_, H>, clock: u32, _precision: i64, ret_time: u32| -> u32 {
            errno(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_time, 8)?;
                let now = match clock {
                    0 => state.host().get_current_time_nanoseconds()?,
                    1..=3 => state.host().get_monotonic_time_nanoseconds()?,
                    _ => return Err(Status::BadArgument),
                };
                write_u64(memory, ret_time, now)
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Ctx<'_, H>, clock: u32, ret_resolution: u32| -> u32 {
            if clock > 3 {
                return INVAL;
            }
            errno(with_memory(&mut c, |memory, _| {
                write_u64(memory, ret_resolution, 1)
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Ctx<'_, H>, buf: u32, len: u32| -> u32 {
            errno(with_memory(&mut c, |memory, _| {
                let len = usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
                let out = slice_mut(memory, buf, len)?;
                let state = RandomState::new();
                for (counter, chunk) in (0u64..).zip(out.chunks_mut(8)) {
                    let word = state.hash_one(counter).to_le_bytes();
                    chunk.copy_from_slice(&word[..chunk.len()]);
                }
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Ctx<'_, H>, exit_code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ProcExit(exit_code)))
        },
    )?;
    linker.func_wrap(WASI, "proc_raise", |_: Ctx<'_, H>, _signal: u32| -> u32 {
        NOTSUP
    })?;
    linker.func_wrap(WASI, "sched_yield", |_: Ctx<'_, H>| -> u32 { SUCCESS })?;
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |_: Ctx<'_, H>, _in: u32, _out: u32, _count: u32, _ret: u32| -> u32 { NOTSUP },
    )?;

    // Sockets.
    linker.func_wrap(
        WASI,
        "sock_accept",
        |_: Ctx<'_, H>, _fd: u32, _flags: u32, _ret: u32| -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "sock_recv",
        |_: Ctx<'_, H>,
         _fd: u32,
         _iovs: u32,
         _len: u32,
         _flags: u32,
         _ret: u32,
         _ret_flags: u32|
         -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "sock_send",
        |_: Ctx<'_, H>, _fd: u32, _iovs: u32, _len: u32, _flags: u32, _ret: u32| -> u32 { NOTSUP },
    )?;
    linker.func_wrap(
        WASI,
        "sock_shutdown",
        |_: Ctx<'_, H>, _fd: u32, _how: u32| -> u32 { NOTSUP },
    )?;
    Ok(())
}
