//! Futures on the module's tokio runtime as asyncio awaitables.
//!
//! A runtime thread never takes the GIL: a thread that holds or waits for
//! it when the interpreter exits is ended by CPython mid-call, which aborts
//! the process. So a finished future only stores its outcome and writes a
//! byte to a socket pair; the event loop, watching the other end with
//! `add_reader`, converts the outcome on its own thread and completes the
//! asyncio future. Cancelling the asyncio future aborts the Rust one.

use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

/// Turns a finished future's outcome into Python, on the event loop's thread.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// The module's one multi-thread tokio runtime.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("zixiao-runtime")
            .enable_all()
            .build()
            .expect("cannot start the zixiao tokio runtime")
    })
}

/// An asyncio future, on the running loop, of `future`'s output as `T` converts.
pub(crate) fn awaitable<'py, T, F>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_future = event_loop.call_method0("create_future")?;
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    let slot: Arc<Mutex<Option<Convert>>> = Arc::default();
    let done = slot.clone();
    let task = runtime().spawn(async move {
        let outcome = future.await;
        let convert: Convert = Box::new(move |py| outcome?.into_py_any(py));
        *done.lock().unwrap_or_else(|p| p.into_inner()) = Some(convert);
        // The loop wakes on the byte, or on the end of stream if it fails.
        let _ = (&writer).write(&[1]);
    });
    let delivery = Bound::new(
        py,
        Delivery {
            reader,
            slot,
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

/// Completes one asyncio future from its Rust future; called by the loop.
#[pyclass(module = "zixiao._native", frozen)]
struct Delivery {
    reader: UnixStream,
    slot: Arc<Mutex<Option<Convert>>>,
    task: tokio::task::AbortHandle,
    future: Py<PyAny>,
    event_loop: Py<PyAny>,
}

#[pymethods]
impl Delivery {
    /// The Rust future finished: sets the asyncio future's result or exception.
    fn deliver(&self, py: Python<'_>) -> PyResult<()> {
        self.event_loop
            .call_method1(py, "remove_reader", (self.reader.as_raw_fd(),))?;
        let convert = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let future = self.future.bind(py);
        let (Some(convert), false) = (convert, future.call_method0("done")?.is_truthy()?) else {
            return Ok(());
        };
        match convert(py) {
            Ok(value) => future.call_method1("set_result", (value,))?,
            Err(e) => future.call_method1("set_exception", (e.value(py),))?,
        };
        Ok(())
    }

    /// The asyncio future is done; when it was cancelled, so is the Rust future.
    fn finished(&self, py: Python<'_>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
            self.event_loop
                .call_method1(py, "remove_reader", (self.reader.as_raw_fd(),))?;
        }
        Ok(())
    }
}
