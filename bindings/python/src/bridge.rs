//! Futures on the module's tokio runtime as asyncio awaitables.
//!
//! A runtime thread never takes the GIL: a thread that holds or waits for
//! it when the interpreter exits is ended by CPython mid-call, which aborts
//! the process. So a finished future only stores its outcome and writes a
//! byte to a socket pair; the event loop, watching the other end with
//! `add_reader`, converts the outcome on its own thread and completes the
//! asyncio future. Reports a future makes on its way (an image import's
//! progress) travel the same path and are handed to a Python callback on
//! the loop's thread. Cancelling the asyncio future aborts the Rust one.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{BoundObject, IntoPyObjectExt};
use tokio::sync::mpsc;

/// Turns a value from the runtime into Python, on the event loop's thread.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Turns a report into the report callback's arguments, on the loop's thread.
type ConvertArgs = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyTuple>> + Send>;

/// The module's one multi-thread tokio runtime.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        zixiao_client::runtime("zixiao-runtime").expect("cannot start the zixiao tokio runtime")
    })
}

/// An asyncio future, on the running loop, of `future`'s output as `T` converts.
pub(crate) fn awaitable<'py, T, F>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let (_, reports) = mpsc::unbounded_channel::<()>();
    awaitable_reporting(py, future, reports, None)
}

/// [`awaitable`], and each value `reports` receives before `future` ends
/// is passed to `on_report` on the loop's thread, in order, as its
/// arguments (a tuple). An exception
/// `on_report` raises ends the asyncio future with it and aborts `future`.
pub(crate) fn awaitable_reporting<'py, T, R, F>(
    py: Python<'py>,
    future: F,
    mut reports: mpsc::UnboundedReceiver<R>,
    on_report: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    R: for<'a> IntoPyObject<'a, Target = PyTuple> + Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_future = event_loop.call_method0("create_future")?;
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    let mailbox: Arc<Mutex<Mailbox>> = Arc::default();
    let post = mailbox.clone();
    let task = runtime().spawn(async move {
        // The loop wakes on each byte, or on the end of stream if this fails.
        let wake = || {
            let _ = (&writer).write(&[1]);
        };
        tokio::pin!(future);
        let outcome = loop {
            tokio::select! {
                // Reports first, so every one made arrives before the outcome.
                biased;
                Some(report) = reports.recv() => {
                    let convert: ConvertArgs = Box::new(move |py| {
                        Ok(report.into_pyobject(py).map_err(Into::into)?.unbind())
                    });
                    lock(&post).reports.push_back(convert);
                    wake();
                }
                outcome = &mut future => break outcome,
            }
        };
        let convert: Convert = Box::new(move |py| outcome?.into_py_any(py));
        lock(&post).outcome = Some(convert);
        wake();
    });
    let delivery = Bound::new(
        py,
        Delivery {
            reader,
            mailbox,
            on_report,
            task: task.abort_handle(),
            future: py_future.clone().unbind(),
            event_loop: event_loop.clone().unbind(),
        },
    )?;
    let fd = delivery.borrow().reader.as_raw_fd();
    event_loop.call_method1("add_reader", (fd, delivery.getattr("deliver")?))?;
    py_future.call_method1("add_done_callback", (delivery.getattr("finished")?,))?;
    Ok(py_future)
}

/// What a task left for the loop: reports in order, then its outcome.
#[derive(Default)]
struct Mailbox {
    reports: VecDeque<ConvertArgs>,
    outcome: Option<Convert>,
}

fn lock(mailbox: &Mutex<Mailbox>) -> std::sync::MutexGuard<'_, Mailbox> {
    mailbox.lock().unwrap_or_else(|p| p.into_inner())
}

/// Completes one asyncio future from its Rust future; called by the loop.
#[pyclass(module = "zixiao._native", frozen)]
struct Delivery {
    reader: UnixStream,
    mailbox: Arc<Mutex<Mailbox>>,
    on_report: Option<Py<PyAny>>,
    task: tokio::task::AbortHandle,
    future: Py<PyAny>,
    event_loop: Py<PyAny>,
}

impl Delivery {
    fn stop_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.event_loop
            .call_method1(py, "remove_reader", (self.reader.as_raw_fd(),))?;
        Ok(())
    }

    /// Empties the socket; whether its writer is gone (the task ended).
    fn drain(&self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match (&self.reader).read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

#[pymethods]
impl Delivery {
    /// The task posted something: hands reports to the callback, then sets
    /// the asyncio future's result or exception once the outcome is there.
    fn deliver(&self, py: Python<'_>) -> PyResult<()> {
        let writer_gone = self.drain();
        let (reports, outcome) = {
            let mut mailbox = lock(&self.mailbox);
            (std::mem::take(&mut mailbox.reports), mailbox.outcome.take())
        };
        let future = self.future.bind(py);
        if future.call_method0("done")?.is_truthy()? {
            return self.stop_reading(py);
        }
        if let Some(on_report) = &self.on_report {
            for report in reports {
                if let Err(e) = report(py).and_then(|args| on_report.call1(py, args.bind(py))) {
                    self.task.abort();
                    self.stop_reading(py)?;
                    future.call_method1("set_exception", (e.value(py),))?;
                    return Ok(());
                }
            }
        }
        match outcome {
            Some(convert) => {
                self.stop_reading(py)?;
                match convert(py) {
                    Ok(value) => future.call_method1("set_result", (value,))?,
                    Err(e) => future.call_method1("set_exception", (e.value(py),))?,
                };
            }
            // A task that ended without an outcome (it panicked) wakes the
            // loop once by closing its end; nothing more will come.
            None if writer_gone => self.stop_reading(py)?,
            None => {}
        }
        Ok(())
    }

    /// The asyncio future is done; when it was cancelled, so is the Rust future.
    fn finished(&self, py: Python<'_>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
            self.stop_reading(py)?;
        }
        Ok(())
    }
}
