//! A real `redis-server` for tests: started on a free loopback port with its own temporary
//! directory, killed (and its directory removed) on drop.

// Test support: a server that cannot start must fail the test with a message saying why.
#![allow(
    clippy::panic,
    reason = "test support fails the test loudly when redis-server cannot run"
)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::redis::{command, roundtrip};

/// A `redis-server` process on `127.0.0.1`, for tests that talk to a real Redis (the
/// emulator's real-Redis mode, [`Proxy::run_redis`](crate::Proxy::run_redis)).
///
/// It persists nothing (`--save ''`, no AOF) and runs in a fresh temporary directory. The port
/// is one the kernel picked free a moment before; if another process takes it first, the
/// server fails to bind and is started again on another port, so tests may start servers in
/// parallel. Panics when `redis-server` is not installed: tests that need Redis never skip.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    password: Option<String>,
}

/// How long a server gets to answer its first command.
const STARTUP: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts a server without authentication.
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// Starts a server that requires `password` (`--requirepass`) for the default user.
    pub fn with_password(password: &str) -> RedisServer {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start(password) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn try_start(password: Option<&str>) -> Result<RedisServer, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free loopback port: {error}"))?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "proxy-async-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let mut server = Command::new("redis-server");
        server
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            server.args(["--requirepass", password]);
        }
        let child = match server.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "redis-server is not installed, and this test needs a real Redis: install the Debian package `redis-server` (`cargo xtask test` does)"
                );
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot run redis-server: {error}"));
            }
        };
        let mut server = RedisServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
            password: password.map(str::to_string),
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                // Most likely another process took the port; `Drop` cleans up.
                return Err(format!("redis-server on port {port} exited with {status}"));
            }
            // The process id tells this server from another test's that won the same port.
            let ours = format!("process_id:{}\r\n", server.child.id());
            if server
                .try_command(&["INFO", "server"])
                .is_ok_and(|reply| String::from_utf8_lossy(&reply).contains(&ours))
            {
                return Ok(server);
            }
            if started.elapsed() > STARTUP {
                return Err(format!(
                    "redis-server on port {port} did not answer PING within {STARTUP:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs a command on a connection of its own (authenticated when the server has a
    /// password) and returns the reply's RESP bytes: for setting up and checking data beside
    /// the plugin. Panics when the server does not answer.
    pub fn command(&self, args: &[&str]) -> Vec<u8> {
        self.try_command(args)
            .unwrap_or_else(|error| panic!("redis-server at {}: {args:?}: {error}", self.addr))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<Vec<u8>> {
        let mut connection = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
        connection.set_read_timeout(Some(Duration::from_secs(5)))?;
        if let Some(password) = &self.password {
            roundtrip(
                &mut connection,
                &command(&[b"AUTH".as_slice(), password.as_bytes()]),
            )?;
        }
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        roundtrip(&mut connection, &command(&args))
    }

    /// Stops the server now (a Redis that went down); later calls to it fail to connect.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
