//! A measured side: in this process ([`LocalSide`], for tests and mocks) or in a worker
//! process of its own ([`ChildSide`]) so that each model's memory, CPU time and start-up are
//! its own and one model's allocations cannot slow the other.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

use qgate_data::{ArrayKeys, Dataset, ImagePreprocess};
use qgate_runtime::{load, LoadOptions, ModelSpec};

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, Factory};
use crate::protocol::{Init, Request, Response, Startup};
use crate::BenchError;

/// Something the orchestrator can measure.
pub trait Side {
    /// `baseline` or `candidate`.
    fn name(&self) -> &str;
    /// What loading cost.
    fn startup(&self) -> &Startup;
    /// Runs one request.
    fn call(&mut self, req: &Request) -> Result<Response, BenchError>;
}

/// A side measured in this process.
pub struct LocalSide {
    name: String,
    engine: Engine,
}

impl LocalSide {
    /// Starts an engine on models made by `factory`.
    pub fn new(
        name: &str,
        factory: Factory,
        data: Option<&Dataset>,
        init: &Init,
        first_batch: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<LocalSide, BenchError> {
        let engine = Engine::start(
            factory,
            data,
            &init.workload,
            first_batch,
            clock,
            &init.probe,
        )
        .map_err(|e| e.on(name))?;
        Ok(LocalSide {
            name: name.to_string(),
            engine,
        })
    }
}

impl Side for LocalSide {
    fn name(&self) -> &str {
        &self.name
    }

    fn startup(&self) -> &Startup {
        self.engine.startup()
    }

    fn call(&mut self, req: &Request) -> Result<Response, BenchError> {
        match self.engine.handle(req) {
            Response::Error { message } => Err(BenchError::Side {
                side: self.name.clone(),
                message,
            }),
            r => Ok(r),
        }
    }
}

/// The serialised first message also carries the first batch size.
#[derive(serde::Serialize, serde::Deserialize)]
struct Hello {
    init: Init,
    first_batch: usize,
}

/// A side measured in a worker process (`qgate` run with the hidden worker subcommand),
/// spoken to in JSON lines over its stdin and stdout.
pub struct ChildSide {
    name: String,
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr_path: PathBuf,
    startup: Startup,
}

impl ChildSide {
    /// Starts `program args…`, sends `init` and waits for the model to load. The worker's
    /// stderr goes to `scratch/<side>.stderr`, quoted when the worker fails.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        init: Init,
        first_batch: usize,
        scratch: &Path,
    ) -> Result<ChildSide, BenchError> {
        let name = init.side.clone();
        let stderr_path = scratch.join(format!("{name}.stderr"));
        let err_file = std::fs::File::create(&stderr_path).map_err(|e| BenchError::Side {
            side: name.clone(),
            message: format!("cannot create {}: {e}", stderr_path.display()),
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file))
            .spawn()
            .map_err(|e| BenchError::Side {
                side: name.clone(),
                message: format!("cannot start the worker {}: {e}", program.display()),
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BenchError::Side {
                side: name,
                message: "the worker has no stdin/stdout pipe".into(),
            });
        };
        let mut side = ChildSide {
            name,
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
            stderr_path,
            startup: placeholder_startup(),
        };
        side.send(&Hello { init, first_batch })?;
        let line = side.receive()?;
        let hello: Result<Startup, String> =
            serde_json::from_str(&line).map_err(|e| side.protocol_error(&e.to_string(), &line))?;
        side.startup = hello.map_err(|message| BenchError::Side {
            side: side.name.clone(),
            message,
        })?;
        Ok(side)
    }

    fn send<T: serde::Serialize>(&mut self, msg: &T) -> Result<(), BenchError> {
        let text =
            serde_json::to_string(msg).map_err(|e| self.protocol_error(&e.to_string(), ""))?;
        writeln!(self.stdin, "{text}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| self.died(&format!("cannot write to the worker: {e}")))
    }

    fn receive(&mut self) -> Result<String, BenchError> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(self.died("the worker exited")),
            Ok(_) => Ok(line),
            Err(e) => Err(self.died(&format!("cannot read from the worker: {e}"))),
        }
    }

    fn protocol_error(&self, what: &str, line: &str) -> BenchError {
        BenchError::Side {
            side: self.name.clone(),
            message: format!(
                "unreadable answer from the worker ({what}): {}",
                line.chars().take(200).collect::<String>()
            ),
        }
    }

    fn died(&mut self, what: &str) -> BenchError {
        let status = self
            .child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let mut err = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut err);
        }
        let tail: String = err
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        BenchError::Side {
            side: self.name.clone(),
            message: if tail.is_empty() {
                format!("{what}{status}")
            } else {
                format!("{what}{status}; its stderr ends with:\n{tail}")
            },
        }
    }
}

impl Side for ChildSide {
    fn name(&self) -> &str {
        &self.name
    }

    fn startup(&self) -> &Startup {
        &self.startup
    }

    fn call(&mut self, req: &Request) -> Result<Response, BenchError> {
        self.send(req)?;
        let line = self.receive()?;
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Error { message }) => Err(BenchError::Side {
                side: self.name.clone(),
                message,
            }),
            Ok(r) => Ok(r),
            Err(e) => Err(self.protocol_error(&e.to_string(), &line)),
        }
    }
}

impl Drop for ChildSide {
    fn drop(&mut self) {
        let _ = writeln!(
            self.stdin,
            "{}",
            serde_json::to_string(&Request::Quit).unwrap_or_default()
        );
        let _ = self.stdin.flush();
        // A worker stuck in a runtime call is killed rather than waited for.
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn placeholder_startup() -> Startup {
    Startup {
        provenance: qgate_runtime::Provenance {
            spec: String::new(),
            runtime: String::new(),
            runtime_version: String::new(),
            settings: Default::default(),
        },
        info: Default::default(),
        load_ms: 0.0,
        first_inference_ms: 0.0,
        rss_before_load_bytes: None,
        rss_after_load_bytes: None,
        model_bytes: None,
        timer: crate::clock::TimerOverhead {
            read_ns: 0.0,
            resolution_ns: 0.0,
        },
        workload: crate::workload::WorkloadInfo {
            source: String::new(),
            samples: 0,
            fixed_batch: None,
        },
        meters: Vec::new(),
        meters_unavailable: Vec::new(),
        pid: 0,
    }
}

/// The worker's main loop: reads the first message, loads the model and data, answers
/// requests until `quit` or end of input. Errors while loading are sent back as the first
/// answer so the parent can name them.
pub fn serve_worker(input: impl Read, mut output: impl Write) -> Result<(), BenchError> {
    let mut input = BufReader::new(input);
    let mut line = String::new();
    let io = |e: std::io::Error| BenchError::Side {
        side: "worker".into(),
        message: e.to_string(),
    };
    input.read_line(&mut line).map_err(io)?;
    let hello: Hello = serde_json::from_str(&line).map_err(|e| BenchError::Side {
        side: "worker".into(),
        message: format!("unreadable first message: {e}"),
    })?;
    let mut engine = match start_worker_engine(&hello) {
        Ok(engine) => {
            reply(&mut output, &Ok::<_, String>(engine.startup().clone()))?;
            engine
        }
        Err(e) => return reply(&mut output, &Err::<Startup, String>(e.to_string())),
    };
    loop {
        line.clear();
        if input.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Quit) => return Ok(()),
            Ok(req) => engine.handle(&req),
            Err(e) => Response::Error {
                message: format!("unreadable request: {e}"),
            },
        };
        reply(&mut output, &resp)?;
    }
}

/// Writes one answer line and flushes it.
fn reply(output: &mut impl Write, msg: &impl serde::Serialize) -> Result<(), BenchError> {
    let text = serde_json::to_string(msg).map_err(|e| BenchError::Workload(e.to_string()))?;
    writeln!(output, "{text}")
        .and_then(|()| output.flush())
        .map_err(|e| BenchError::Side {
            side: "worker".into(),
            message: e.to_string(),
        })
}

fn start_worker_engine(hello: &Hello) -> Result<Engine, BenchError> {
    let init = &hello.init;
    let data = match &init.workload.data {
        Some(path) => Some(
            Dataset::load(
                path,
                &ArrayKeys {
                    label_key: None,
                    id_key: Some("id".into()),
                },
                &ImagePreprocess::default(),
            )
            .and_then(|mut d| d.materialize().map(|()| d))
            .map_err(|e| BenchError::Workload(e.to_string()))?,
        ),
        None => None,
    };
    let spec = ModelSpec::parse(&init.spec).map_err(BenchError::Runtime)?;
    let opts = LoadOptions::from(&init.load);
    if let Some(bytes) = opts.max_memory {
        qgate_core::memory::set_limit(bytes);
    }
    let factory: Factory = Box::new(move || load(&spec, &opts));
    Engine::start(
        factory,
        data.as_ref(),
        &init.workload,
        hello.first_batch,
        Arc::new(SystemClock::new()),
        &init.probe,
    )
}
