//! The defaults `--help` shows, read from the values the libraries use: a flag's help ends in
//! `[default: …]` made here, never typed beside the flag, so the two cannot drift apart.
//! Defaults that depend on the machine or the runtime (threads, `--max-memory`, the
//! concurrency sweep, the output tolerance) stay in the flag's own words.

use qgate_bench::Plan;
use qgate_eval::EvalOptions;

const PERF: &[&str] = &["bench", "check"];
const ACCURACY: &[&str] = &["compare", "check"];
const SENSITIVITY: &[&str] = &["sensitivity"];
const DATA: &[&str] = &["compare", "check", "bench", "sensitivity"];

fn list<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// (commands, flag, default).
type Row = (&'static [&'static str], &'static str, String);

fn lower(x: &dyn std::fmt::Debug) -> String {
    format!("{x:?}").to_lowercase()
}

/// (commands, flag, default) for every flag whose default is a fixed value.
pub(crate) fn table() -> Vec<Row> {
    let mut rows = performance();
    rows.extend(accuracy());
    rows.extend(sensitivity());
    rows
}

/// The benchmark's defaults: `qgate_bench::Plan::default()`.
fn performance() -> Vec<Row> {
    let plan = Plan::default();
    vec![
        (PERF, "latency-batch", plan.batch.to_string()),
        (PERF, "warmup", plan.warmup_iterations.to_string()),
        (PERF, "warmup-time", plan.warmup_seconds.to_string()),
        (PERF, "warmup-max", plan.warmup_max_seconds.to_string()),
        (PERF, "duration", plan.seconds.to_string()),
        (PERF, "rounds", plan.rounds.to_string()),
        (PERF, "batch-sizes", list(&plan.batch_sweep)),
        (PERF, "load-fractions", list(&plan.load_fractions)),
        (PERF, "servers", plan.servers.to_string()),
        (
            PERF,
            "offline-batch",
            plan.offline_batch.map_or("none".into(), |b| b.to_string()),
        ),
        (PERF, "sweep-duration", plan.sweep_seconds.to_string()),
        (
            PERF,
            "perf-samples",
            qgate_app::measure::DEFAULT_PERF_SAMPLES.to_string(),
        ),
        (PERF, "bench-seed", plan.seed.to_string()),
    ]
}

/// Evaluation, runtime and data defaults of `compare` and `check` (and the data flags of
/// every command).
fn accuracy() -> Vec<Row> {
    let eval = EvalOptions::default();
    let images = qgate_data::ImagePreprocess::default();
    vec![
        (ACCURACY, "batch-size", eval.batch_size.to_string()),
        (ACCURACY, "top-k", eval.top_k.to_string()),
        (
            ACCURACY,
            "bootstrap-resamples",
            eval.bootstrap.resamples.to_string(),
        ),
        (ACCURACY, "bootstrap-seed", eval.bootstrap.seed.to_string()),
        (
            ACCURACY,
            "runtime-check-samples",
            qgate_eval::RUNTIME_CHECK_SAMPLES.to_string(),
        ),
        (
            &["compare", "check", "bench"],
            "timeout",
            qgate_runtime::DEFAULT_REMOTE_TIMEOUT_S.to_string(),
        ),
        (DATA, "image-layout", lower(&images.layout)),
        (DATA, "image-color", lower(&images.color)),
    ]
}

/// `qgate sensitivity`'s defaults.
fn sensitivity() -> Vec<Row> {
    vec![
        (
            SENSITIVITY,
            "calibration-method",
            // the flag spells `min_max` as `minmax`
            qgate_app::sensitivity::DEFAULT_METHOD
                .name()
                .replace('_', ""),
        ),
        (
            SENSITIVITY,
            "float-type",
            qgate_app::sensitivity::FloatType::default().name().into(),
        ),
        (
            SENSITIVITY,
            "calib-samples",
            qgate_app::sensitivity::DEFAULT_CALIB_SAMPLES.to_string(),
        ),
        (
            SENSITIVITY,
            "batch-size",
            qgate_app::sensitivity::DEFAULT_BATCH_SIZE.to_string(),
        ),
        (
            SENSITIVITY,
            "bench-seconds",
            qgate_app::sensitivity::DEFAULT_BENCH_SECONDS.to_string(),
        ),
        (
            SENSITIVITY,
            "latency-runtime",
            lower(&qgate_app::sensitivity::LatencyRuntime::default()),
        ),
    ]
}

/// `cmd` with `[default: …]` appended to the help of every flag in [`table`].
pub(crate) fn documented(mut cmd: clap::Command) -> clap::Command {
    for (commands, long, value) in table() {
        for name in commands {
            cmd = cmd.mut_subcommand(name, |sub| {
                let Some(id) = sub
                    .get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .map(|a| a.get_id().clone())
                else {
                    return sub;
                };
                sub.mut_arg(id, |a| {
                    let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                    let a = a.help(format!("{help} [default: {value}]"));
                    match a.get_long_help().map(ToString::to_string) {
                        Some(long_help) => a.long_help(format!("{long_help} [default: {value}]")),
                        None => a,
                    }
                })
            });
        }
    }
    cmd
}
