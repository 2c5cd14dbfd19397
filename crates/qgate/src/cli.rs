//! Raw flags and the run config file, merged and validated into a [`CompareConfig`].
//! Flags win over the config file; relative paths in a config file are relative to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use qgate_core::policy::{Policy, PolicyFile, Source};
use qgate_core::stats::BootstrapSettings;
use qgate_data::{ArrayKeys, ColorMode, ImagePreprocess, Layout};
use qgate_eval::{EvalOptions, InputMapping, OutputKind, RuntimeCheckSettings};
use qgate_runtime::{LoadOptions, ModelSpec};

/// Is this compressed model safe to ship? qgate compares a baseline and a candidate model
/// on the same data and gives one verdict CI can gate on (exit 0 pass, 1 fail, 2 error).
#[derive(Debug, Parser)]
#[command(name = "qgate", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare a baseline and a candidate model on a labelled data set.
    // A negative number reaches the flag's own range check (`--timeout -1: expected …`)
    // instead of clap's "unexpected argument '-1'".
    #[command(allow_negative_numbers = true, args_override_self = true)]
    Compare(Box<CompareArgs>),
    /// Measure inference performance of a baseline and a candidate (latency, throughput,
    /// memory, CPU, energy), each in its own worker process, interleaved.
    #[command(allow_negative_numbers = true, args_override_self = true)]
    Bench(Box<BenchArgs>),
    /// Accuracy and performance together: one report, one verdict.
    #[command(allow_negative_numbers = true, args_override_self = true)]
    Check(Box<CheckArgs>),
    /// Which layers quantization hurts, and a mixed-precision model that meets the policy.
    #[command(allow_negative_numbers = true, args_override_self = true)]
    Sensitivity(Box<SensitivityArgs>),
    /// Show a model's inputs, outputs, op counts and ops the runtime cannot run.
    Inspect(InspectArgs),
    /// Serve the pair behind an Open Inference Protocol V2 gateway: shadow, A/B or canary
    /// traffic, every request logged (see docs/serve.md).
    Serve(Box<ServeArgs>),
    /// Judge the gateway's log of live traffic: shadow agreement, A/B error rates and
    /// outcomes, sample-ratio mismatch, always-valid sequential tests (exit 0 pass, 1 fail
    /// or invalid, 2 error, 3 inconclusive; see docs/analyze.md).
    #[command(allow_negative_numbers = true, args_override_self = true)]
    Analyze(Box<AnalyzeArgs>),
    /// Print a shell completion script (e.g. `qgate completions bash >
    /// /etc/bash_completion.d/qgate`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): qgate's, or one command's (`qgate man compare >
    /// qgate-compare.1`).
    Man {
        /// The command whose page to print (default: qgate's own page).
        command: Option<String>,
    },
    /// Internal: the measuring worker of `bench` (JSON lines on stdin/stdout).
    #[command(name = "__worker", hide = true)]
    Worker,
}

/// Where and how models run (shared by `compare`, `check` and `bench`).
#[derive(Debug, Args, Default, Clone)]
pub struct RuntimeFlags {
    /// Execution device for both sides unless a spec says otherwise (`ort:m.onnx?device=cuda`):
    /// cpu, cuda, tensorrt, openvino [default: cpu].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Intra-op threads for both sides unless a spec says otherwise [default: 1 for ONNX Runtime].
    #[arg(long, value_name = "N", value_parser = count)]
    pub threads: Option<usize>,
    /// ONNX Runtime shared library (else ORT_DYLIB_PATH, else the onnxruntime Python package).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Seconds one request to a remote inference server may take.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Largest buffer qgate may allocate (e.g. 8GiB); sizes from declared shapes, archives and
    /// flags are checked before allocating [default: 75 % of physical memory, or of the
    /// cgroup or ulimit -v limit when smaller].
    #[arg(long, value_name = "SIZE", value_parser = memory_size)]
    pub max_memory: Option<u64>,
}

/// A count flag (`--batch-size`, `--limit`, …): a whole number ≥ 1, said so on the error's
/// first line (clap alone says "invalid digit found in string" for `-1`).
pub(crate) fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number ≥ 1".into()),
    }
}

/// `--max-memory SIZE`.
pub(crate) fn memory_size(s: &str) -> Result<u64, String> {
    qgate_core::memory::parse_size(s)
}

impl RuntimeFlags {
    /// The runtime options.
    pub(crate) fn load_options(self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            threads: match self.threads {
                Some(0) => bail!("--threads 0: expected 1 or more threads"),
                t => t,
            },
            device: self.device,
            ort_lib: self.ort_lib,
            max_memory: self.max_memory,
            ort_env_path: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
            python: "python3".into(),
            timeout: match self.timeout {
                Some(t) if t > 0.0 && t <= MAX_SECONDS => {
                    Some(std::time::Duration::from_secs_f64(t))
                }
                Some(t) => bail!("--timeout {t:?}: expected seconds in (0, {MAX_SECONDS}]"),
                None => None,
            },
            ..LoadOptions::default()
        })
    }
}

/// `qgate bench`.
#[derive(Debug, Args, Default)]
pub struct BenchArgs {
    #[command(flatten)]
    pub pair: PairFlags,
    /// Inputs to feed (.npz, .npy, .csv or an image folder); synthetic inputs shaped like
    /// the model's when absent.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub mapping: DataFlags,
    #[command(flatten)]
    pub report: ReportFlags,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    #[command(flatten)]
    pub perf: PerfFlags,
}

/// The model pair and where it will run (`compare`, `check`, `bench`).
#[derive(Debug, Args, Default, Clone)]
pub struct PairFlags {
    /// Reference model: PATH (tract), ort:PATH, http(s)://…/v2/models/NAME, preds:PATH.
    #[arg(long, value_name = "SPEC")]
    pub baseline: Option<String>,
    /// Compressed model, same syntax as --baseline. `compare` and `check` take several
    /// (repeat the flag: INT8 dynamic, INT8 static, FP16, pruned …), judged and ranked in one
    /// report.
    #[arg(long, value_name = "SPEC")]
    pub candidate: Vec<String>,
    /// The runtime the model will be deployed on; the report warns about figures from other
    /// runtimes.
    #[arg(long, value_name = "RUNTIME", value_enum)]
    pub deployment_runtime: Option<DeploymentArg>,
}

impl PairFlags {
    /// The baseline's spec and every candidate's, parsed; a missing one is named.
    fn specs(&self) -> Result<(ModelSpec, Vec<ModelSpec>)> {
        let baseline = self
            .baseline
            .as_deref()
            .context("missing --baseline (or `baseline` in the config file)")?;
        let baseline = ModelSpec::parse(baseline).context("--baseline")?;
        if self.candidate.is_empty() {
            bail!("missing --candidate (or `candidate` in the config file)");
        }
        let several = self.candidate.len() > 1;
        let candidates = self
            .candidate
            .iter()
            .enumerate()
            .map(|(k, v)| {
                ModelSpec::parse(v).with_context(|| {
                    if several {
                        format!("--candidate #{} ({v})", k + 1)
                    } else {
                        "--candidate".to_string()
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((baseline, candidates))
    }
}

/// The run config, the report folder, the policy that judges and the terminal (every
/// command that writes reports).
#[derive(Debug, Args, Default, Clone)]
pub struct ReportFlags {
    /// Run config (TOML) holding any of these options under the same names (docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the reports: report.json, report.md, report.html, junit.xml (and
    /// latencies.csv of a benchmark, mixed.onnx and exclusions.json of a sensitivity analysis).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Gate policy (TOML; docs/config.md lists the keys); built-in defaults otherwise.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A run config's inline `[policy]` table (set by --config).
    #[arg(long, hide = true)]
    pub policy_table: Option<String>,
    /// Never draw a progress bar or spinner.
    #[arg(long)]
    pub no_progress: bool,
}

impl ReportFlags {
    /// The report folder and the policy.
    fn resolve(&self) -> Result<(PathBuf, Policy)> {
        let out = report_dir(self.out.clone())?;
        let policy = resolve_policy(
            self.policy.clone(),
            self.policy_table.clone(),
            self.config.as_deref(),
        )?;
        Ok((out, policy))
    }
}

/// How data files are read and bound to model inputs: the same flags, meaning the same, for
/// every command that reads data (`compare`, `check`, `bench`, `sensitivity`).
#[derive(Debug, Args, Default, Clone)]
pub struct DataFlags {
    /// Data array that feeds a single-input model.
    #[arg(long, value_name = "KEY")]
    pub input_key: Option<String>,
    /// Model input fed by a data array, for several inputs (repeatable).
    #[arg(long = "input", value_name = "NAME=KEY")]
    pub inputs: Vec<String>,
    /// Array or column holding the labels (default: label, labels, y, target).
    #[arg(long, value_name = "KEY")]
    pub label_key: Option<String>,
    /// Array or column holding sample ids (default: id, ids, else the index).
    #[arg(long, value_name = "KEY")]
    pub id_key: Option<String>,
    /// Image folders: resize to WxH.
    #[arg(long, value_name = "WxH", allow_hyphen_values = true, value_parser = valid_image_size)]
    pub image_size: Option<String>,
    /// Image folders: pixel multiplier [default: 1/255].
    #[arg(long, value_name = "F")]
    pub image_scale: Option<f32>,
    /// Image folders: mean subtracted, one value or one per channel (comma-separated).
    #[arg(long, value_name = "M[,M,M]", allow_hyphen_values = true, value_parser = valid_floats)]
    pub image_mean: Option<String>,
    /// Image folders: std divided by, one value or one per channel.
    #[arg(long, value_name = "S[,S,S]", value_parser = valid_floats)]
    pub image_std: Option<String>,
    /// Image folders: channel layout.
    #[arg(long, value_name = "LAYOUT", value_enum)]
    pub image_layout: Option<LayoutArg>,
    /// Image folders: colour mode.
    #[arg(long, value_name = "COLOR", value_enum)]
    pub image_color: Option<ColorArg>,
    /// Image folders: keep class folders with no image as classes with zero samples (by
    /// default an error: they shift every later class index).
    #[arg(long)]
    pub allow_empty_classes: bool,
}

/// Resolved data settings.
pub struct DataSettings {
    pub keys: ArrayKeys,
    pub images: ImagePreprocess,
    pub mapping: InputMapping,
}

impl DataFlags {
    /// The validated data settings.
    fn resolve(self) -> Result<DataSettings> {
        let images = self.images()?;
        let pairs = input_pairs(&self.inputs)?;
        Ok(DataSettings {
            keys: ArrayKeys {
                label_key: self.label_key,
                id_key: self.id_key,
            },
            images,
            mapping: InputMapping {
                single_key: self.input_key,
                pairs,
            },
        })
    }

    /// The image-folder preprocessing.
    fn images(&self) -> Result<ImagePreprocess> {
        let mut images = ImagePreprocess::default();
        if let Some(s) = &self.image_size {
            images.resize = Some(image_size(s)?);
        }
        images.scale = self.image_scale.unwrap_or(images.scale);
        if !images.scale.is_finite() {
            bail!("--image-scale {}: expected a finite number", images.scale);
        }
        if let Some(s) = self.image_mean.as_deref() {
            images.mean = floats("--image-mean", s)?;
        }
        if let Some(s) = self.image_std.as_deref() {
            images.std = floats("--image-std", s)?;
        }
        images.layout = match self.image_layout {
            Some(LayoutArg::Nchw) | None => Layout::Nchw,
            Some(LayoutArg::Nhwc) => Layout::Nhwc,
        };
        images.color = match self.image_color {
            Some(ColorArg::Rgb) | None => ColorMode::Rgb,
            Some(ColorArg::Gray) => ColorMode::Gray,
        };
        images.allow_empty_classes = self.allow_empty_classes;
        Ok(images)
    }
}

/// `qgate check`: every `compare` option plus the benchmark's.
#[derive(Debug, Args, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub compare: CompareArgs,
    #[command(flatten)]
    pub perf: PerfFlags,
}

/// How to measure (shared by `bench` and `check`).
#[derive(Debug, Args, Default, Clone)]
pub struct PerfFlags {
    /// Samples per call of the latency test (1: MLPerf SingleStream).
    #[arg(long, value_name = "N", value_parser = count)]
    pub latency_batch: Option<usize>,
    /// Warm-up: at least N calls, then until latency is steady.
    #[arg(long, value_name = "N")]
    pub warmup: Option<u64>,
    /// Warm-up: at least SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub warmup_time: Option<f64>,
    /// Warm-up: at most SECS seconds even if not steady.
    #[arg(long, value_name = "SECS")]
    pub warmup_max: Option<f64>,
    /// Timed calls per model (split over the rounds) instead of --duration.
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
    /// Timed seconds per model, split over the rounds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Interleaved rounds (A B, B A, …).
    #[arg(long, value_name = "N", value_parser = count)]
    pub rounds: Option<usize>,
    /// Batch sizes of the throughput sweep, comma-separated, or `none`.
    #[arg(long, value_name = "LIST", value_parser = valid_counts)]
    pub batch_sizes: Option<String>,
    /// Requests in flight of the closed-loop sweep, or `none` [default: 1,2,…,cores].
    #[arg(long, value_name = "LIST", value_parser = valid_counts)]
    pub concurrency: Option<String>,
    /// Poisson load points as fractions of the baseline's capacity, or `none`.
    #[arg(long, value_name = "LIST", value_parser = valid_positives)]
    pub load_fractions: Option<String>,
    /// Extra Poisson arrival rates, queries per second, comma-separated.
    #[arg(long, value_name = "LIST", value_parser = valid_positives)]
    pub arrival_rates: Option<String>,
    /// Search the highest Poisson rate whose p99 latency stays under MS milliseconds.
    #[arg(long, value_name = "MS")]
    pub slo_p99_ms: Option<f64>,
    /// Model instances serving Poisson arrivals and the offline run.
    #[arg(long, value_name = "N", value_parser = count)]
    pub servers: Option<usize>,
    /// Batch of the offline (maximum throughput) run, or `none`.
    #[arg(long, value_name = "N", value_parser = valid_count_or_none)]
    pub offline_batch: Option<String>,
    /// Seconds per sweep point and model.
    #[arg(long, value_name = "SECS")]
    pub sweep_duration: Option<f64>,
    /// Skip every sweep (latency, memory, energy only).
    #[arg(long)]
    pub no_sweeps: bool,
    /// Distinct samples of --data cycled through (MLPerf's performance sample count).
    #[arg(long, value_name = "N", value_parser = count)]
    pub perf_samples: Option<usize>,
    /// Shape of a synthetic input, for symbolic dimensions (repeatable): NAME=1x3x224x224.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    pub shapes: Vec<String>,
    /// Do not compare the timed outputs with an untimed pass.
    #[arg(long)]
    pub no_output_check: bool,
    /// Tolerance of that comparison [default: exact for CPU runtimes, float32 for GPUs and
    /// servers].
    #[arg(long, value_name = "LEVEL", value_enum)]
    pub output_tolerance: Option<ToleranceArg>,
    /// A `--save-outputs` directory of an accuracy run: the timed outputs must match
    /// DIR/baseline.npz and DIR/candidate.npz (float32 tolerance).
    #[arg(long, value_name = "DIR")]
    pub reference_outputs: Option<PathBuf>,
    /// Where the RAPL (powercap), Jetson (INA3221) and cpufreq readers look [default: /sys].
    #[arg(long, value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,
    /// NVIDIA management library (libnvidia-ml.so.1) [default: the driver's].
    #[arg(long, value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
    /// Do not query NVIDIA GPUs.
    #[arg(long)]
    pub no_nvml: bool,
    /// Seed of synthetic inputs and arrival times.
    #[arg(long, value_name = "S")]
    pub bench_seed: Option<u64>,
}

/// `qgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The gateway config (TOML; docs/serve.md lists its keys).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The address to listen on, replacing the config's `listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Validate the config, load both models and open the log, then exit without serving.
    #[arg(long)]
    pub check_config: bool,
    /// Only parse and validate the config (keys, ranges, URLs, the environment variables it
    /// names), without loading a model or reaching the log: for checking deployment files.
    #[arg(long, conflicts_with = "check_config")]
    pub parse_only: bool,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
}

/// `qgate analyze`.
#[derive(Debug, Args, Default)]
pub struct AnalyzeArgs {
    /// The gateway's log: its SQLite file (or sqlite:PATH) or a postgres:// URL (in a run
    /// config, relative to the working directory).
    #[arg(long, value_name = "URL")]
    pub log: Option<String>,
    /// The model (`model_name`) to judge; needed when the log holds several.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Requests from this time: RFC 3339 (2026-11-30T04:00:00Z), `now` or relative (-1h).
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Requests before this time (same forms as --since).
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Time-series windows: a duration (1m, 30s) or a request count (1000req); default about
    /// 20 windows over the span read.
    #[arg(long, value_name = "W")]
    pub window: Option<String>,
    /// Output holding class scores (default: the first output shaped [N, C]).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// What that output holds (default: detected).
    #[arg(long, value_name = "logits|probs|labels", value_parser = str::parse::<OutputKind>)]
    pub output_kind: Option<OutputKind>,
    /// k of the top-k agreement.
    #[arg(long, value_name = "K", value_parser = count)]
    pub top_k: Option<usize>,
    /// Seed of the bootstrap intervals.
    #[arg(long, value_name = "S")]
    pub bootstrap_seed: Option<u64>,
    /// Write the logged inputs (when the gateway stored them) with their request ids, joined
    /// labels and shadow disagreements as an .npz data set for compare, check and sensitivity.
    #[arg(long, value_name = "FILE")]
    pub export_inputs: Option<PathBuf>,
    #[command(flatten)]
    pub report: ReportFlags,
}

/// A validated `qgate analyze`.
#[derive(Debug)]
pub struct AnalyzeConfig {
    pub log: String,
    pub out: PathBuf,
    pub export: Option<PathBuf>,
    pub analysis: qgate_online::AnalyzeConfig,
    pub progress: bool,
}

impl AnalyzeArgs {
    /// Flags → a validated config: times parsed against `now_ms`, the policy read.
    pub fn resolve(self, interactive: bool, now_ms: i64) -> Result<AnalyzeConfig> {
        let log = match self.log {
            Some(l) if !l.trim().is_empty() => l,
            _ => bail!("missing --log: the gateway's SQLite log file or a postgres:// URL"),
        };
        let out = report_dir(self.report.out.clone())?;
        let (policy, policy_source) = match (&self.report.policy, &self.report.policy_table) {
            (Some(p), _) => {
                let origin = p.display().to_string();
                (
                    PolicyFile::parse(&read_text(p, "policy")?, &origin)?,
                    Source::File(origin),
                )
            }
            (None, Some(t)) => {
                let origin = format!(
                    "[policy] in {}",
                    self.report
                        .config
                        .as_deref()
                        .unwrap_or(Path::new("config"))
                        .display()
                );
                (PolicyFile::parse(t, &origin)?, Source::File(origin))
            }
            (None, None) => (PolicyFile::default(), Source::Default),
        };
        let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
            v.as_deref()
                .map(|t| qgate_online::window::parse_time(t, now_ms))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--{flag} {e}"))
        };
        let (since_ms, until_ms) = (time("since", &self.since)?, time("until", &self.until)?);
        if let (Some(a), Some(b)) = (since_ms, until_ms) {
            if a >= b {
                bail!("--since must be before --until");
            }
        }
        let window = self
            .window
            .as_deref()
            .map(qgate_online::window::parse_window)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--window {e}"))?;
        if let Some(p) = &self.export_inputs {
            if p.extension().and_then(|e| e.to_str()) != Some("npz") {
                bail!(
                    "--export-inputs {}: the data set is written as .npz; name the file FILE.npz",
                    p.display()
                );
            }
        }
        Ok(AnalyzeConfig {
            log,
            out,
            export: self.export_inputs,
            progress: interactive && !self.report.no_progress,
            analysis: qgate_online::AnalyzeConfig {
                model: self.model,
                since_ms,
                until_ms,
                window,
                output: self.output,
                output_kind: self.output_kind,
                policy,
                policy_source,
                top_k: self.top_k.unwrap_or(5),
                seed: self.bootstrap_seed.unwrap_or(0),
                with_inputs: false,
            },
        })
    }
}

/// `qgate inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The model (a path to an ONNX file).
    pub model: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `qgate compare`.
#[derive(Debug, Args, Default)]
pub struct CompareArgs {
    #[command(flatten)]
    pub pair: PairFlags,
    /// Labelled data: .npz, .npy, .csv, or a folder with one subfolder per class.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub mapping: DataFlags,
    #[command(flatten)]
    pub report: ReportFlags,
    /// Samples per inference call.
    #[arg(long, value_name = "N", value_parser = count)]
    pub batch_size: Option<usize>,
    /// k of top-k accuracy and agreement.
    #[arg(long, value_name = "K", value_parser = count)]
    pub top_k: Option<usize>,
    /// Output holding class scores (default: the first output shaped [N, C]).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// What that output holds (default: detected).
    #[arg(long, value_name = "logits|probs|labels", value_parser = str::parse::<OutputKind>)]
    pub output_kind: Option<OutputKind>,
    /// Evaluate only N samples (the first N, or a seeded random subset with --seed).
    #[arg(long, value_name = "N", value_parser = count)]
    pub limit: Option<usize>,
    /// Seed of the --limit subset.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Bootstrap resamples of the confidence intervals.
    #[arg(long, value_name = "N", value_parser = count)]
    pub bootstrap_resamples: Option<usize>,
    /// Seed of the bootstrap.
    #[arg(long, value_name = "S")]
    pub bootstrap_seed: Option<u64>,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Slices of the data: a CSV or JSON-lines manifest with an `id` column and one column
    /// per tag (`id,lighting,size`). Every metric is also computed per `tag=value`. An
    /// `.npz`'s own `slice_<tag>` arrays are read without it.
    #[arg(long, value_name = "FILE")]
    pub slices: Option<PathBuf>,
    /// With several candidates: `all` (default) passes the run only when every candidate
    /// passes its gate, `any` when at least one does.
    #[arg(long, value_name = "all|any", value_parser = str::parse::<qgate_report::Require>)]
    pub require: Option<qgate_report::Require>,
    /// Also evaluate both models on corrupted copies of the images: `all`, or a list of
    /// dark, contrast, noise, blur, occlusion, jpeg, rotate (docs/corruptions.md). Each
    /// corruption × severity is a slice `corruption=dark:5`.
    #[arg(long, value_name = "LIST", value_parser = valid_corruptions)]
    pub corruptions: Option<String>,
    /// Severities of the corruptions, 1 (mild) to 5 (severe).
    #[arg(long, value_name = "LIST", value_parser = valid_severities)]
    pub severities: Option<String>,
    /// Seed of the random corruptions (noise, occlusion).
    #[arg(long, value_name = "S")]
    pub corruption_seed: Option<u64>,
    /// How an image array holds pixels, for --corruptions: `0,1` or `0,255` (the values of
    /// black and white before --image-mean/--image-std normalised them).
    #[arg(long, value_name = "0,1|0,255", value_parser = valid_input_range)]
    pub input_range: Option<String>,
    /// Layout of an image array, for --corruptions (default nchw).
    #[arg(long, value_name = "nchw|nhwc", value_enum)]
    pub input_layout: Option<LayoutArg>,
    /// Also write each model's outputs to DIR/baseline.npz and DIR/candidate.npz, or
    /// DIR/candidate-K.npz for the K-th of several candidates (reusable as
    /// preds:DIR/candidate-2.npz).
    #[arg(long, value_name = "DIR")]
    pub save_outputs: Option<PathBuf>,
    /// Skip the runtime check: a quantized model run in tract is first compared with
    /// onnxruntime's node-by-node execution on a few samples when onnxruntime is found.
    #[arg(long)]
    pub no_runtime_check: bool,
    /// Samples the runtime check compares.
    #[arg(long, value_name = "N", value_parser = count)]
    pub runtime_check_samples: Option<usize>,
    /// Testing only: hand models to tract without qgate's graph rewrites, so the runtime
    /// check can be shown to catch a model tract gets wrong.
    #[arg(long, hide = true)]
    pub no_tract_rewrites: bool,
}

pub use qgate_app::compare::CompareConfig;

/// `--input NAME=KEY` pairs.
fn input_pairs(inputs: &[String]) -> Result<Vec<(String, String)>> {
    inputs
        .iter()
        .map(|s| {
            let (n, k) = s
                .split_once('=')
                .with_context(|| format!("--input {s}: expected NAME=KEY"))?;
            Ok((n.to_string(), k.to_string()))
        })
        .collect()
}

/// `--image-size WxH`.
fn image_size(s: &str) -> Result<[u32; 2]> {
    let expected =
        || format!("--image-size {s}: expected WxH with whole numbers ≥ 1, e.g. 224x224");
    let (w, h) = s.split_once(['x', 'X']).with_context(expected)?;
    let w: u32 = w.trim().parse().ok().with_context(expected)?;
    let h: u32 = h.trim().parse().ok().with_context(expected)?;
    if w == 0 || h == 0 {
        bail!(expected());
    }
    Ok([w, h])
}

// Value parsers for text flags that are parsed again when resolving: checked when clap
// reads them, a bad value — also a run config's — is refused naming the flag (and the
// file, line and key); the text is kept.

fn valid_image_size(s: &str) -> Result<String, String> {
    image_size(s).map(|_| s.to_string()).map_err(|e| tail(&e))
}

fn valid_floats(s: &str) -> Result<String, String> {
    floats("", s).map(|_| s.to_string()).map_err(|e| tail(&e))
}

fn valid_counts(s: &str) -> Result<String, String> {
    match list::<usize>("", s) {
        Ok(v) if v.contains(&0) => Err("expected counts ≥ 1, or `none`".into()),
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(tail(&e)),
    }
}

fn valid_positives(s: &str) -> Result<String, String> {
    match list::<f64>("", s) {
        Ok(v) if v.iter().any(|x| !(*x > 0.0 && x.is_finite())) => {
            Err("expected positive numbers, or `none`".into())
        }
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(tail(&e)),
    }
}

fn valid_count_or_none(s: &str) -> Result<String, String> {
    match s.trim() {
        "none" => Ok(s.to_string()),
        v => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(s.to_string()),
            _ => Err("expected a count ≥ 1 or `none`".into()),
        },
    }
}

/// An error's message without the flag its first part names (clap names it).
fn tail(e: &anyhow::Error) -> String {
    let text = e.to_string();
    text.split_once(": ")
        .map_or(text.clone(), |(_, rest)| rest.to_string())
}

fn floats(flag: &str, s: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .with_context(|| format!("{flag}: '{v}' is not a number"))
        })
        .collect()
}

impl CompareArgs {
    /// Merges flags over the config file and validates the result.
    pub fn resolve(self, interactive: bool) -> Result<CompareConfig> {
        let data_settings = self.mapping.resolve()?;
        let (baseline, candidates) = self.pair.specs()?;
        let data = self
            .data
            .context("missing --data (or `data` in the config file)")?;
        let (out, policy) = self.report.resolve()?;
        let eval = EvalOptions::default();
        let resamples = self.bootstrap_resamples.unwrap_or(eval.bootstrap.resamples);
        if !(1..=MAX_RESAMPLES).contains(&resamples) {
            // 0 printed "95% CI [NaN, NaN]" beside a PASS; 10⁸ ran for hours, 10⁹ aborted.
            bail!("--bootstrap-resamples {resamples}: expected 1 to {MAX_RESAMPLES}");
        }
        let mut load = self.runtime.load_options()?;
        load.tract_rewrites = !self.no_tract_rewrites;
        let runtime_check =
            runtime_check(self.no_runtime_check, self.runtime_check_samples, &load)?;
        if self.require.is_some() && candidates.len() < 2 {
            bail!("--require decides between several candidates; give --candidate more than once");
        }
        Ok(CompareConfig {
            baseline,
            candidates,
            require: self.require.unwrap_or_default(),
            data,
            slices: self.slices,
            out,
            keys: data_settings.keys,
            images: data_settings.images,
            limit: self.limit,
            seed: self.seed,
            eval: EvalOptions {
                batch_size: self.batch_size.unwrap_or(eval.batch_size),
                top_k: self.top_k.unwrap_or(eval.top_k),
                output: self.output,
                output_kind: self.output_kind,
                inputs: data_settings.mapping,
                bootstrap: BootstrapSettings {
                    resamples,
                    confidence: 0.95,
                    seed: self.bootstrap_seed.unwrap_or(eval.bootstrap.seed),
                },
                corruptions: None,
                keep_outputs: 0,
            },
            policy,
            progress: interactive && !self.report.no_progress,
            load,
            save_outputs: self.save_outputs,
            deployment_runtime: self.pair.deployment_runtime.map(deployment_name),
            runtime_check,
            corruptions: corruption_request(
                self.corruptions,
                self.severities,
                self.corruption_seed,
                self.input_range,
                self.input_layout,
            )?,
        })
    }
}

fn valid_corruptions(s: &str) -> Result<String, String> {
    corruption_list(s).map(|_| s.to_string())
}

fn corruption_list(s: &str) -> Result<Vec<qgate_data::corrupt::Corruption>, String> {
    if s.trim() == "all" {
        return Ok(qgate_data::corrupt::ALL.to_vec());
    }
    let mut out: Vec<qgate_data::corrupt::Corruption> = Vec::new();
    for part in s.split(',') {
        let c: qgate_data::corrupt::Corruption = part.parse()?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn valid_severities(s: &str) -> Result<String, String> {
    severity_list(s).map(|_| s.to_string())
}

fn severity_list(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.trim().parse::<u8>() {
            Ok(v @ 1..=5) if !out.contains(&v) => out.push(v),
            Ok(1..=5) => {}
            _ => return Err(format!("'{part}': expected severities 1 to 5, e.g. 1,3,5")),
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn valid_input_range(s: &str) -> Result<String, String> {
    input_range(s).map(|_| s.to_string())
}

fn input_range(s: &str) -> Result<f32, String> {
    match s.replace(' ', "").as_str() {
        "0,1" => Ok(1.0),
        "0,255" => Ok(255.0),
        other => Err(format!("'{other}': expected 0,1 or 0,255")),
    }
}

/// `--corruptions` and the flags that only serve it, checked together.
fn corruption_request(
    corruptions: Option<String>,
    severities: Option<String>,
    seed: Option<u64>,
    range: Option<String>,
    layout: Option<LayoutArg>,
) -> Result<Option<qgate_app::compare::CorruptionRequest>> {
    let Some(list) = corruptions else {
        for (given, flag) in [
            (severities.is_some(), "--severities"),
            (seed.is_some(), "--corruption-seed"),
            (range.is_some(), "--input-range"),
            (layout.is_some(), "--input-layout"),
        ] {
            if given {
                bail!("{flag} serves --corruptions; give --corruptions LIST too");
            }
        }
        return Ok(None);
    };
    let tail = |e: String| anyhow::anyhow!(e);
    Ok(Some(qgate_app::compare::CorruptionRequest {
        corruptions: corruption_list(&list).map_err(tail)?,
        severities: severity_list(severities.as_deref().unwrap_or("1,2,3,4,5")).map_err(tail)?,
        seed: seed.unwrap_or(0),
        range: range
            .as_deref()
            .map(input_range)
            .transpose()
            .map_err(tail)?,
        layout: layout.map(|l| match l {
            LayoutArg::Nchw => qgate_data::Layout::Nchw,
            LayoutArg::Nhwc => qgate_data::Layout::Nhwc,
        }),
    }))
}

/// `--out`: required, and not empty (`out = ""` in a run config once wrote the reports into
/// the config's own folder).
fn report_dir(out: Option<PathBuf>) -> Result<PathBuf> {
    let out = out.context("missing --out (or `out` in the config file)")?;
    if out.as_os_str().is_empty() {
        bail!("--out (or `out` in the config file) is empty: name the report directory");
    }
    Ok(out)
}

/// The policy: `--policy`, else the run config's inline `[policy]` table, else the defaults.
fn resolve_policy(
    flag: Option<PathBuf>,
    table: Option<String>,
    config: Option<&Path>,
) -> Result<Policy> {
    Ok(match (flag, table) {
        (Some(p), _) => load_policy(&p)?,
        (None, Some(t)) => {
            let origin = format!(
                "[policy] in {}",
                config.unwrap_or(Path::new("config")).display()
            );
            let pf = PolicyFile::parse(&t, &origin)?;
            Policy::resolve(&pf, &Source::File(origin))
        }
        (None, None) => Policy::default(),
    })
}

/// The runtime check's settings: `--no-runtime-check`, `--runtime-check-samples` (≥ 1).
fn runtime_check(
    skip: bool,
    samples: Option<usize>,
    load: &LoadOptions,
) -> Result<RuntimeCheckSettings> {
    let samples = samples.unwrap_or(qgate_eval::RUNTIME_CHECK_SAMPLES);
    if samples == 0 {
        bail!(
            "--runtime-check-samples must be at least 1 (use --no-runtime-check to skip the check)"
        );
    }
    Ok(RuntimeCheckSettings {
        enabled: !skip,
        samples,
        ort: load.clone(),
    })
}

/// Channel layout of image folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    Nchw,
    Nhwc,
}

/// Colour mode of image folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    Rgb,
    #[value(alias = "grey")]
    Gray,
}

/// Tolerance of the same-artifact check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToleranceArg {
    /// Bit-for-bit equal.
    Exact,
    /// float32 reordering (GPUs, servers batching requests).
    Float32,
    /// float16 compute.
    Float16,
}

/// Precision of the layers sensitivity keeps out of INT8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloatArg {
    Fp32,
    Fp16,
}

/// The runtime that times sensitivity's front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyArg {
    Tract,
    Ort,
}

/// The runtimes a deployment can name: those a report's sides can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeploymentArg {
    Tract,
    Onnxruntime,
    #[value(name = "kserve-v2")]
    KserveV2,
}

/// The deployment runtime's name, as the reports write it.
fn deployment_name(d: DeploymentArg) -> String {
    use clap::ValueEnum as _;
    d.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn load_policy(path: &Path) -> Result<Policy> {
    let text = read_text(path, "policy")?;
    let origin = path.display().to_string();
    let file = PolicyFile::parse(&text, &origin)?;
    Ok(Policy::resolve(&file, &Source::File(origin)))
}

/// A policy or run config's text: a regular file only (a named pipe would block forever).
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{what} {}: not a regular file (a folder, named pipe or device); give the path of a TOML file",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

pub use qgate_app::measure::PerfConfig;

pub use qgate_app::bench::BenchConfig;

fn list<T: std::str::FromStr>(flag: &str, s: &str) -> Result<Vec<T>> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{flag}: '{v}' is not a valid value (expected a comma-separated list or `none`)"))
        })
        .collect()
}

fn positive(flag: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x > 0.0 && x.is_finite()) => {
            bail!("{flag} {x:?}: expected a positive number")
        }
        other => Ok(other),
    }
}

/// The most bootstrap resamples (scipy's default is 9 999; the interval's Monte Carlo error
/// at 10⁵ is far below its width).
const MAX_RESAMPLES: usize = 100_000;

/// The longest time a measuring flag accepts: a day (`--duration 1e300` once panicked in the
/// worker converting it to a `Duration`).
const MAX_SECONDS: f64 = 86_400.0;

/// A positive number of seconds, at most [`MAX_SECONDS`].
fn seconds(flag: &str, v: Option<f64>) -> Result<Option<f64>> {
    match positive(flag, v)? {
        Some(x) if x > MAX_SECONDS => {
            bail!("{flag} {x:?}: expected seconds in (0, {MAX_SECONDS}] (one day at most)")
        }
        other => Ok(other),
    }
}

impl PerfFlags {
    /// Validates the measuring options.
    pub fn resolve(&self) -> Result<PerfConfig> {
        let mut plan = qgate_bench::Plan::default();
        self.timing(&mut plan)?;
        self.sweeps(&mut plan)?;
        let tolerance = self.output_checks(&mut plan)?;
        plan.seed = self.bench_seed.unwrap_or(plan.seed);
        let perf_samples = self
            .perf_samples
            .unwrap_or(qgate_app::measure::DEFAULT_PERF_SAMPLES);
        let shapes = self.shapes()?;
        let sys = self
            .sysfs_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys"));
        Ok(PerfConfig {
            plan,
            perf_samples,
            shapes,
            probe: qgate_bench::protocol::ProbeSpec {
                proc_root: PathBuf::from("/proc"),
                sys_root: sys,
                nvml_lib: self.nvml_lib.clone(),
                enable_nvml: !self.no_nvml,
            },
            tolerance,
        })
    }

    /// Warm-up, duration or iterations, rounds.
    fn timing(&self, plan: &mut qgate_bench::Plan) -> Result<()> {
        if let Some(b) = self.latency_batch {
            plan.batch = b;
        }
        plan.warmup_iterations = self.warmup.unwrap_or(plan.warmup_iterations);
        if let Some(t) = self.warmup_time {
            if !(0.0..=MAX_SECONDS).contains(&t) {
                bail!("--warmup-time {t:?}: expected seconds in [0, {MAX_SECONDS}]");
            }
            plan.warmup_seconds = t;
        }
        if let Some(t) = seconds("--warmup-max", self.warmup_max)? {
            plan.warmup_max_seconds = t;
        }
        plan.warmup_max_seconds = plan.warmup_max_seconds.max(plan.warmup_seconds);
        if let Some(i) = self.iterations {
            if i == 0 {
                bail!("--iterations must be at least 1");
            }
            plan.iterations = Some(i);
        }
        if let Some(d) = seconds("--duration", self.duration)? {
            plan.seconds = d;
        }
        if let Some(r) = self.rounds {
            if r < 2 {
                bail!("--rounds {r}: at least 2 rounds are needed for a speed-up interval");
            }
            plan.rounds = r;
        }
        Ok(())
    }

    /// The sweeps: batch sizes, concurrency, Poisson loads, the SLO search, the offline run.
    fn sweeps(&self, plan: &mut qgate_bench::Plan) -> Result<()> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        plan.concurrency_sweep = std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|&n| n <= cores.max(2))
            .collect();
        if let Some(s) = &self.batch_sizes {
            plan.batch_sweep = list("--batch-sizes", s)?;
        }
        if let Some(s) = &self.concurrency {
            plan.concurrency_sweep = list("--concurrency", s)?;
        }
        if let Some(s) = &self.load_fractions {
            plan.load_fractions = list("--load-fractions", s)?;
        }
        if let Some(s) = &self.arrival_rates {
            plan.arrival_rates = list("--arrival-rates", s)?;
        }
        if plan.batch_sweep.contains(&0) || plan.concurrency_sweep.contains(&0) {
            bail!("--batch-sizes and --concurrency take counts ≥ 1");
        }
        if plan
            .load_fractions
            .iter()
            .chain(&plan.arrival_rates)
            .any(|x| !(*x > 0.0 && x.is_finite()))
        {
            bail!("--load-fractions and --arrival-rates take positive numbers");
        }
        plan.slo_p99_ms = positive("--slo-p99-ms", self.slo_p99_ms)?;
        if let Some(n) = self.servers {
            plan.servers = n;
        }
        if let Some(s) = &self.offline_batch {
            plan.offline_batch = match s.trim() {
                "none" => None,
                v => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => bail!("--offline-batch {v}: expected a count ≥ 1 or `none`"),
                },
            };
        }
        if let Some(d) = seconds("--sweep-duration", self.sweep_duration)? {
            plan.sweep_seconds = d;
        }
        if self.no_sweeps {
            plan.batch_sweep.clear();
            plan.concurrency_sweep.clear();
            plan.load_fractions.clear();
            plan.arrival_rates.clear();
            plan.offline_batch = None;
            if plan.slo_p99_ms.is_some() {
                bail!("--slo-p99-ms needs the load sweep; drop --no-sweeps");
            }
        }
        Ok(())
    }

    /// The same-artifact check: untimed rerun, saved reference outputs, tolerance.
    fn output_checks(&self, plan: &mut qgate_bench::Plan) -> Result<Option<qgate_core::Tolerance>> {
        plan.output_check = !self.no_output_check;
        let tolerance = self.output_tolerance.map(|t| match t {
            ToleranceArg::Exact => qgate_core::Tolerance::Exact,
            ToleranceArg::Float32 => qgate_core::Tolerance::Float32Reordering,
            ToleranceArg::Float16 => qgate_core::Tolerance::Float16Compute,
        });
        if let Some(dir) = &self.reference_outputs {
            for side in ["baseline", "candidate"] {
                let p = dir.join(format!("{side}.npz"));
                if !p.is_file() {
                    bail!(
                        "--reference-outputs {}: no {side}.npz there (write it with `qgate compare --save-outputs DIR`)",
                        dir.display()
                    );
                }
            }
            plan.reference_outputs = [
                Some(dir.join("baseline.npz")),
                Some(dir.join("candidate.npz")),
            ];
        }
        Ok(tolerance)
    }

    /// `--shape NAME=1x3x224x224` of synthetic inputs.
    fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        let mut shapes = BTreeMap::new();
        for s in &self.shapes {
            let (name, dims) = s
                .split_once('=')
                .with_context(|| format!("--shape {s}: expected NAME=1x3x224x224"))?;
            let dims: Vec<usize> = dims
                .split(['x', 'X', ','])
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!("--shape {s}: dimensions must be counts, e.g. 1x128")
                })?;
            if dims.contains(&0) {
                bail!("--shape {s}: every dimension must be 1 or more");
            }
            shapes.insert(name.to_string(), dims);
        }
        Ok(shapes)
    }
}

impl BenchArgs {
    /// Validates `qgate bench`'s flags.
    pub fn resolve(self, interactive: bool) -> Result<BenchConfig> {
        let (baseline, mut candidates) = self.pair.specs()?;
        if candidates.len() > 1 {
            bail!(
                "--candidate given {} times: `qgate bench` measures one candidate; `qgate check` measures several, each against the baseline",
                candidates.len()
            );
        }
        let candidate = candidates.remove(0);
        let (out, policy) = self.report.resolve()?;
        let data_settings = self.mapping.resolve()?;
        Ok(BenchConfig {
            baseline,
            candidate,
            data: self.data,
            keys: data_settings.keys,
            images: data_settings.images,
            mapping: data_settings.mapping,
            out,
            policy,
            load: self.runtime.load_options()?,
            perf: self.perf.resolve()?,
            progress: interactive && !self.report.no_progress,
            deployment_runtime: self.pair.deployment_runtime.map(deployment_name),
        })
    }
}

/// `qgate sensitivity`.
#[derive(Debug, Args, Default)]
pub struct SensitivityArgs {
    /// The FP32 model (ONNX).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Labelled evaluation data (.npz, .npy, .csv or an image folder).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub mapping: DataFlags,
    /// Calibration data; without it the first --calib-samples samples of --data calibrate
    /// and the rest evaluate (the report says so).
    #[arg(long, value_name = "PATH")]
    pub calibration: Option<PathBuf>,
    /// An existing QDQ model (e.g. from onnxruntime.quantization): its own calibration is
    /// used, its error is localised, and mixed.onnx is it with the kept layers' Q/DQ removed.
    #[arg(long, value_name = "PATH")]
    pub quantized: Option<PathBuf>,
    /// The report folder, the policy (its accuracy keys judge each configuration against
    /// FP32), the run config.
    #[command(flatten)]
    pub report: ReportFlags,
    /// Activation calibration: minmax, percentile[:P] or entropy.
    #[arg(long, value_name = "METHOD", value_parser = str::parse::<qgate_app::sensitivity::CalibMethod>)]
    pub calibration_method: Option<qgate_app::sensitivity::CalibMethod>,
    /// Precision of the layers kept out of INT8.
    #[arg(long, value_name = "TYPE", value_enum)]
    pub float_type: Option<FloatArg>,
    /// Calibration samples (at most a third of --data when it also evaluates).
    #[arg(long, value_name = "N", value_parser = count)]
    pub calib_samples: Option<usize>,
    /// Evaluate on at most N samples.
    #[arg(long, value_name = "N", value_parser = count)]
    pub limit: Option<usize>,
    /// Samples per inference call.
    #[arg(long, value_name = "N", value_parser = count)]
    pub batch_size: Option<usize>,
    /// Seconds per side to time each configuration of the trade-off front against FP32
    /// (batch 1, interleaved rounds, as `qgate bench`); 0 = no latency.
    #[arg(long, value_name = "SECS")]
    pub bench_seconds: Option<f64>,
    /// Runtime that times the front (ort: ONNX Runtime on the CPU).
    #[arg(long, value_name = "RUNTIME", value_enum)]
    pub latency_runtime: Option<LatencyArg>,
    /// ONNX Runtime shared library for `--latency-runtime ort` (else ORT_DYLIB_PATH, else
    /// the onnxruntime Python package).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Largest buffer qgate may allocate (e.g. 8GiB) [default: 75 % of physical memory, or of
    /// the cgroup or ulimit -v limit when smaller].
    #[arg(long, value_name = "SIZE", value_parser = memory_size)]
    pub max_memory: Option<u64>,
}

impl SensitivityArgs {
    /// Validates the flags into the library's config; `worker_exe` times the front.
    pub fn resolve(self, worker_exe: PathBuf) -> Result<qgate_app::sensitivity::SensitivityConfig> {
        use qgate_app::sensitivity::{FloatType, LatencyRuntime, SensitivityConfig};
        let model = self
            .model
            .context("missing --model (the FP32 ONNX model)")?;
        let data = self
            .data
            .context("missing --data (labelled evaluation data)")?;
        let (out, policy) = self.report.resolve()?;
        let method = self
            .calibration_method
            .unwrap_or(qgate_app::sensitivity::DEFAULT_METHOD);
        let float_type = match self.float_type {
            None | Some(FloatArg::Fp32) => FloatType::Fp32,
            Some(FloatArg::Fp16) => FloatType::Fp16,
        };
        if float_type == FloatType::Fp16 && self.quantized.is_some() {
            bail!(
                "--float-type fp16 applies to qgate's own quantization; with --quantized the kept layers get their FP32 weights back"
            );
        }
        let bench_seconds = self
            .bench_seconds
            .unwrap_or(qgate_app::sensitivity::DEFAULT_BENCH_SECONDS);
        if !(0.0..=MAX_SECONDS).contains(&bench_seconds) {
            bail!("--bench-seconds {bench_seconds:?}: expected 0 (no latency) to {MAX_SECONDS} seconds");
        }
        let latency_runtime = match self.latency_runtime {
            None | Some(LatencyArg::Tract) => LatencyRuntime::Tract,
            Some(LatencyArg::Ort) => LatencyRuntime::Ort,
        };
        let data_settings = self.mapping.resolve()?;
        let bench_load = RuntimeFlags {
            ort_lib: self.ort_lib,
            max_memory: self.max_memory,
            ..Default::default()
        }
        .load_options()?;
        Ok(SensitivityConfig {
            model,
            data,
            calibration: self.calibration,
            quantized: self.quantized,
            policy,
            out,
            method,
            float_type,
            calib_samples: self.calib_samples,
            limit: self.limit,
            keys: data_settings.keys,
            images: data_settings.images,
            mapping: data_settings.mapping,
            batch_size: self
                .batch_size
                .unwrap_or(qgate_app::sensitivity::DEFAULT_BATCH_SIZE),
            bench_seconds,
            latency_runtime,
            bench_load,
            worker_exe,
        })
    }
}
