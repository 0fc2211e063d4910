//! Long-running `zixiao` processes a test starts (a server, an agent, a
//! daemon): started so that the address they listen on is known before
//! the test goes on, and killed when the test ends, whether it passed or
//! panicked.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (its stdout piped, its stderr dropped) and returns it
/// with the address its first line names (`... listening on ADDR`), which
/// it prints once it accepts connections. Panics, naming the command, when
/// it exits or prints something else first.
pub fn start_listening(mut command: Command) -> (Running, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("a piped stdout");
    let read = std::io::BufReader::new(stdout).read_line(&mut line);
    let running = Running(child);
    read.unwrap_or_else(|e| panic!("cannot read what {command:?} printed: {e}"));
    let addr = line
        .trim()
        .rsplit_once(" listening on ")
        .map(|(_, addr)| addr.to_owned())
        .unwrap_or_else(|| panic!("{command:?} did not start: {line:?}"));
    (running, addr)
}
