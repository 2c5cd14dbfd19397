//! The `qgate` binary: argv → validated config → library calls → exit code
//! (0 pass, 1 fail, 2 error).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use qgate_core::policy::{Status, Verdict};
use qgate_data::Dataset;
use qgate_eval::evaluate_pair;
use qgate_report::{exporters, Report};
use qgate_runtime::{inspect_onnx, load, tract_unsupported, ModelSpec};

use cli::{Cli, Command, CompareConfig, InspectArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compare(args) => (*args)
            .resolve(std::io::stderr().is_terminal())
            .and_then(compare),
        Command::Inspect(args) => inspect(args).map(|()| Verdict::Pass),
    };
    match result {
        Ok(Verdict::Pass) => ExitCode::from(0),
        Ok(Verdict::Fail) => ExitCode::from(1),
        Err(e) => {
            eprintln!("qgate: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn compare(cfg: CompareConfig) -> Result<Verdict> {
    let mut data = Dataset::load(&cfg.data, &cfg.keys, &cfg.images)?;
    data.subset(cfg.limit, cfg.seed);
    let mut baseline = load(&cfg.baseline, &cfg.load).context("baseline")?;
    let mut candidate = load(&cfg.candidate, &cfg.load).context("candidate")?;
    let bar = if cfg.progress {
        let bar = ProgressBar::new((2 * data.len()) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:>9} [{bar:30}] {pos}/{len} samples ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let n = data.len() as u64;
    let mut progress = |side: &str, done: usize, _all: usize| {
        let offset = if side == "candidate" { n } else { 0 };
        bar.set_message(side.to_string());
        bar.set_position(offset + done as u64);
    };
    let eval = evaluate_pair(
        baseline.as_mut(),
        candidate.as_mut(),
        &data,
        &cfg.policy,
        &cfg.eval,
        &mut progress,
    )?;
    bar.finish_and_clear();
    if let Some(dir) = &cfg.save_outputs {
        save_outputs(dir, &data, &eval)?;
    }
    let host = qgate_runtime::host_info();
    let report = Report::from_evaluation(&eval, "compare", cfg.deployment_runtime.as_deref(), host);
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create output directory {}", cfg.out.display()))?;
    for exporter in exporters() {
        let text = exporter.render(&report)?;
        let path = cfg.out.join(exporter.file_name());
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", report.summary);
    for c in &report.gate.criteria {
        let mark = match c.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        };
        println!("  [{mark}] {}: {}", c.key, c.message);
    }
    for w in &report.warnings {
        println!("  note: {}", w.message);
    }
    println!("reports: {}", cfg.out.join("report.html").display());
    Ok(eval.gate.verdict)
}

/// Writes each side's outputs with the sample ids, as `preds:` reads them back.
fn save_outputs(
    dir: &std::path::Path,
    data: &Dataset,
    eval: &qgate_eval::Evaluation,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ids = qgate_core::Array {
        shape: vec![data.len()],
        data: qgate_core::ArrayData::Str(data.ids.clone()),
    };
    for (name, side) in [("baseline", &eval.baseline), ("candidate", &eval.candidate)] {
        let path = dir.join(format!("{name}.npz"));
        let mut arrays: Vec<(&str, &qgate_core::Array)> =
            side.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        arrays.push(("id", &ids));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<()> {
    let spec = ModelSpec::parse(&args.model)?;
    let path = spec
        .path()
        .with_context(|| format!("{}: inspect reads model files, not servers", spec.raw))?;
    let info = inspect_onnx(path)?;
    let unsupported = tract_unsupported(path)?;
    if args.json {
        let v = serde_json::json!({ "model": info, "tract_unsupported": unsupported });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}  ({} bytes, opset {}, {})",
        path.display(),
        info.file_bytes,
        info.opset,
        info.producer
    );
    println!("inputs:");
    for t in &info.inputs {
        let ty = t
            .elem_type
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into());
        println!("  {:<24} {:<8} {}", t.name, ty, t.shape_text());
    }
    println!("outputs:");
    for t in &info.outputs {
        let ty = t
            .elem_type
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into());
        println!("  {:<24} {:<8} {}", t.name, ty, t.shape_text());
    }
    println!("ops ({} nodes):", info.op_counts.values().sum::<usize>());
    for (op, n) in &info.op_counts {
        println!("  {op:<32} {n}");
    }
    if unsupported.is_empty() {
        println!("tract: every op is supported");
    } else {
        println!("tract cannot run {} node(s):", unsupported.len());
        for u in &unsupported {
            let dom = if u.domain.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", u.domain)
            };
            println!("  {} : {}{dom}", u.node, u.op_type);
        }
    }
    Ok(())
}
