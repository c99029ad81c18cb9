//! What the end-to-end tests share: the real `veto` binary in a scratch
//! directory, free ports, and servers killed when a test ends. Each test
//! runs only with `VETO_TEST_E2E=1` (see [`enabled`]).

#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const E2E_VAR: &str = "VETO_TEST_E2E";

/// Kills `veto serve` when the test ends, however it ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn veto(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
    cmd.args(args).current_dir(dir).env_clear().env("HOME", dir);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[track_caller]
pub fn run(dir: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let out = veto(dir, args, env).output().expect("run the veto binary");
    assert!(
        out.status.success(),
        "`veto {}` failed: {}",
        args.join(" "),
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn show(out: &Output) -> String {
    format!(
        "{:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("veto serve exited with {status}: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `veto serve` (or `veto demo`), as a service manager would.
pub fn sigterm(server: &Server) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", server.0.id())])
        .status()
        .expect("run sh");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for the server to exit; its status (the test fails after `within`).
pub fn wait_exit(server: &mut Server, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.0.try_wait().expect("wait for veto serve") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "veto serve still runs {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the end-to-end tests are switched on; says so when they are not.
pub fn enabled(what: &str) -> bool {
    if std::env::var_os(E2E_VAR).is_some_and(|v| v == "1") {
        return true;
    }
    println!("skipped: {what} (set {E2E_VAR}=1)");
    false
}
