//! `qgate serve`: the gateway config file and flags → a validated `GatewayConfig` → the
//! qgate-serve gateway, which runs until SIGTERM or Ctrl-C.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use qgate_report::Verdict;
use qgate_serve::{Gateway, GatewayConfig};

use crate::cli::ServeArgs;

pub(crate) fn serve(args: ServeArgs) -> Result<Verdict> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let env = |k: &str| std::env::var(k).ok();
    let cfg = GatewayConfig::load(&args.config, args.listen.as_deref(), &env)?;
    let mut opts = args.runtime.load_options()?;
    // A remote model waits as long as the gateway does.
    opts.timeout.get_or_insert(cfg.backend_timeout);
    if args.parse_only {
        out!(
            "config {}: valid (parsed only: no model loaded, no log opened)",
            args.config.display()
        );
        for m in &cfg.models {
            out!(
                "model     {}: {} ({} → {})",
                m.name,
                m.mode.as_str(),
                m.baseline,
                m.candidate
            );
        }
        out!("log       {}", cfg.log.target);
        out!("listen    {}", cfg.listen);
        return Ok(Verdict::Pass);
    }
    let backends = qgate_serve::spec_backends(&cfg, &opts);
    let in_config = || format!("gateway config {}", args.config.display());
    if args.check_config {
        let report = qgate_serve::check(&cfg, &backends).with_context(in_config)?;
        out!("config {}: valid", args.config.display());
        for (m, r) in cfg.models.iter().zip(&report.models) {
            if cfg.models.len() > 1 {
                out!("model     {}", m.name);
            }
            out!("baseline  {} ({})", m.baseline, r.baseline);
            out!("candidate {} ({})", m.candidate, r.candidate);
            out!("inputs    {}", r.inputs.join(", "));
            out!("outputs   {}", r.outputs.join(", "));
        }
        out!("log       {}", cfg.log.target);
        out!("listen    {} (not bound by --check-config)", cfg.listen);
        if let Some(g) = cfg.grpc_listen {
            out!("grpc      {g} (not bound by --check-config)");
        }
        return Ok(Verdict::Pass);
    }
    let tls = cfg.tls.is_some();
    let gateway = Gateway::start(cfg, backends).with_context(in_config)?;
    gateway.stop_on_signals()?;
    if gateway.recovered_missing > 0 {
        eprintln!(
            "qgate: note: {} shadow copies an earlier run left pending are marked missing",
            gateway.recovered_missing
        );
    }
    if gateway.state_restored {
        eprintln!("qgate: note: mode, weights and canary step restored from the log");
    }
    let scheme = if tls { "https" } else { "http" };
    out!("listening on {scheme}://{}", gateway.addr());
    if let Some(g) = gateway.grpc_addr() {
        out!("grpc listening on {g}");
    }
    let summary = gateway.wait().context("the gateway did not stop cleanly")?;
    eprintln!(
        "qgate: stopped{}; {} pending shadow copies marked missing",
        if summary.drained {
            ""
        } else {
            " (grace period over; some requests were cut)"
        },
        summary.marked_missing
    );
    Ok(Verdict::Pass)
}
