//! Killing a command at a chosen moment, as a power cut or an OOM kill
//! would: [`run_killed`] starts a program, sends SIGKILL after a delay
//! unless it ended first, and says which happened and what it printed.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a command ended under [`run_killed`].
#[derive(Debug)]
pub struct KillOutcome {
    /// Whether the SIGKILL cut it off (false: it ended before the delay).
    pub killed: bool,
    /// Its exit status (a signal when it was killed).
    pub status: ExitStatus,
    /// How long it ran.
    pub ran: Duration,
    /// What it wrote on stdout.
    pub stdout: String,
    /// What it wrote on stderr.
    pub stderr: String,
}

/// Runs `command` (its output captured) and SIGKILLs it `delay` after it
/// started, unless it has exited by then. Only the command's own process
/// is killed, as `kill -9 PID` does: what it started in process groups of
/// their own (detached monitors) lives on. Panics when it cannot start.
pub fn run_killed(command: &mut Command, delay: Duration) -> KillOutcome {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    // Drain the pipes meanwhile: a command blocked on a full pipe would
    // not be where it would be for a user.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = started + delay;
    let (killed, status) = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break (false, status);
        }
        let now = Instant::now();
        if now >= deadline {
            break (true, kill(&mut child));
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
    };
    KillOutcome {
        killed,
        status,
        ran: started.elapsed(),
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    }
}

fn kill(child: &mut Child) -> ExitStatus {
    // An exit between the check and the kill is no error: wait says how it ended.
    let _ = child.kill();
    child.wait().expect("wait for the killed command")
}

/// How long the output of a command that ended may stay open: a process
/// it started that inherited the pipe holds it open as long as it lives.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        let _ = send.send(String::from_utf8_lossy(&text).into_owned());
    });
    receive
}

fn collect(output: &mpsc::Receiver<String>) -> String {
    output
        .recv_timeout(OUTPUT_GRACE)
        .unwrap_or_else(|_| "(its output is still held open by a process it started)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_command_is_killed_and_a_short_one_is_not() {
        let long = run_killed(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
        );
        assert!(long.killed);
        assert!(long.ran < Duration::from_secs(10), "{:?}", long.ran);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&long.status),
            Some(9)
        );
        assert_eq!(long.stdout, "started\n");
        let short = run_killed(
            Command::new("sh").args(["-c", "echo done >&2"]),
            Duration::from_secs(30),
        );
        assert!(!short.killed);
        assert!(short.status.success());
        assert_eq!(short.stderr, "done\n");
    }
}
