//! The one boundary between other crates' results and the report schema: every type of
//! `report.json` that another crate computes is copied field by field here. Renaming a field
//! in `qgate-bench`, `qgate-eval`, … breaks this file, not the schema.

#![allow(clippy::wildcard_imports)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

/// Converts another crate's result into its report twin.
pub trait Conv<T> {
    fn conv(&self) -> T;
}

macro_rules! same {
    ($($t:ty),*) => {$(
        impl Conv<$t> for $t {
            fn conv(&self) -> $t {
                self.clone()
            }
        }
    )*};
}
same!(
    bool,
    u8,
    u16,
    u32,
    u64,
    usize,
    i32,
    i64,
    f32,
    f64,
    String,
    PathBuf,
    &'static str,
    serde_json::Value
);

impl<A: Conv<B>, B> Conv<Vec<B>> for Vec<A> {
    fn conv(&self) -> Vec<B> {
        self.iter().map(Conv::conv).collect()
    }
}

impl<A: Conv<B>, B> Conv<Vec<B>> for [A] {
    fn conv(&self) -> Vec<B> {
        self.iter().map(Conv::conv).collect()
    }
}

impl<A: Conv<B>, B> Conv<Option<B>> for Option<A> {
    fn conv(&self) -> Option<B> {
        self.as_ref().map(Conv::conv)
    }
}

impl<A: Conv<B>, B, const N: usize> Conv<[B; N]> for [A; N] {
    fn conv(&self) -> [B; N] {
        std::array::from_fn(|i| self[i].conv())
    }
}

impl<K: Clone + Ord, A: Conv<B>, B> Conv<BTreeMap<K, B>> for BTreeMap<K, A> {
    fn conv(&self) -> BTreeMap<K, B> {
        self.iter().map(|(k, v)| (k.clone(), v.conv())).collect()
    }
}

impl<A: Conv<B>, B, C: Conv<D>, D> Conv<(B, D)> for (A, C) {
    fn conv(&self) -> (B, D) {
        (self.0.conv(), self.1.conv())
    }
}

impl Conv<Analysis> for qgate_quant::Analysis {
    fn conv(&self) -> Analysis {
        let v = self;
        Analysis {
            fp32_metric: v.fp32_metric.conv(),
            all_int8: v.all_int8.conv(),
            layers: v.layers.conv(),
            ranked_by: v.ranked_by.conv(),
            front: v.front.conv(),
            recommendation: v.recommendation.conv(),
            evaluations: v.evaluations.conv(),
            proxy_samples: v.proxy_samples.conv(),
            monotone: v.monotone.conv(),
            localisation: v.localisation.conv(),
            cost: v.cost.conv(),
        }
    }
}

impl Conv<Averages> for qgate_core::metrics::Averages {
    fn conv(&self) -> Averages {
        let v = self;
        Averages {
            precision: v.precision.conv(),
            recall: v.recall.conv(),
            f1: v.f1.conv(),
        }
    }
}

impl Conv<BootstrapSettings> for qgate_core::stats::BootstrapSettings {
    fn conv(&self) -> BootstrapSettings {
        let v = self;
        BootstrapSettings {
            resamples: v.resamples.conv(),
            confidence: v.confidence.conv(),
            seed: v.seed.conv(),
        }
    }
}

impl Conv<ClassDelta> for qgate_core::compare::ClassDelta {
    fn conv(&self) -> ClassDelta {
        let v = self;
        ClassDelta {
            class: v.class.conv(),
            name: v.name.conv(),
            support: v.support.conv(),
            baseline_recall: v.baseline_recall.conv(),
            candidate_recall: v.candidate_recall.conv(),
            recall_delta: v.recall_delta.conv(),
            precision_delta: v.precision_delta.conv(),
            baseline_f1: v.baseline_f1.conv(),
            candidate_f1: v.candidate_f1.conv(),
            f1_delta: v.f1_delta.conv(),
            negative_flips: v.negative_flips.conv(),
            positive_flips: v.positive_flips.conv(),
            flagged: v.flagged.conv(),
            mcnemar_p: v.mcnemar_p,
            p_holm: v.p_holm,
            p_bh: v.p_bh,
            significance: v.significance.conv(),
        }
    }
}

impl Conv<Significance> for qgate_core::compare::Significance {
    fn conv(&self) -> Significance {
        use qgate_core::compare::Significance as S;
        match self {
            S::SignificantDrop => Significance::SignificantDrop,
            S::FdrDrop => Significance::FdrDrop,
            S::CouldBeNoise => Significance::CouldBeNoise,
            S::NoDrop => Significance::NoDrop,
            S::NotJudged => Significance::NotJudged,
        }
    }
}

impl Conv<ClassMetrics> for qgate_core::metrics::ClassMetrics {
    fn conv(&self) -> ClassMetrics {
        let v = self;
        ClassMetrics {
            class: v.class.conv(),
            name: v.name.conv(),
            precision: v.precision.conv(),
            recall: v.recall.conv(),
            f1: v.f1.conv(),
            support: v.support.conv(),
        }
    }
}

impl Conv<Cost> for qgate_quant::Cost {
    fn conv(&self) -> Cost {
        let v = self;
        Cost {
            reference_s: v.reference_s.conv(),
            full_evaluation_s: v.full_evaluation_s.conv(),
            one_at_a_time_s: v.one_at_a_time_s.conv(),
            full_evaluations_per_layer: v.full_evaluations_per_layer.conv(),
            all_but_s: v.all_but_s.conv(),
            method: crate::words::cost_method(v.method),
        }
    }
}

impl Conv<CriterionResult> for qgate_core::policy::CriterionResult {
    fn conv(&self) -> CriterionResult {
        let v = self;
        CriterionResult {
            key: v.key.conv(),
            description: v.description.conv(),
            direction: v.direction.conv(),
            threshold: v.threshold.conv(),
            source: v.source.conv(),
            observed: v.observed.conv(),
            interval: v.interval.conv(),
            status: v.status.conv(),
            message: crate::words::criterion_message(v),
            slice: v.slice.clone(),
        }
    }
}

impl Conv<Dim> for qgate_runtime::Dim {
    fn conv(&self) -> Dim {
        match self {
            qgate_runtime::Dim::Fixed(x0) => Dim::Fixed(x0.conv()),
            qgate_runtime::Dim::Symbolic(x0) => Dim::Symbolic(x0.conv()),
        }
    }
}

impl Conv<Direction> for qgate_core::policy::Direction {
    fn conv(&self) -> Direction {
        match self {
            qgate_core::policy::Direction::AtMost => Direction::AtMost,
            qgate_core::policy::Direction::AtLeast => Direction::AtLeast,
        }
    }
}

impl Conv<DivergingTensor> for qgate_eval::DivergingTensor {
    fn conv(&self) -> DivergingTensor {
        let v = self;
        DivergingTensor {
            name: v.name.conv(),
            op_type: v.op_type.conv(),
            max_abs_diff: v.max_abs_diff.conv(),
            tolerance: v.tolerance.conv(),
        }
    }
}

impl Conv<ElemType> for qgate_core::array::ElemType {
    fn conv(&self) -> ElemType {
        match self {
            qgate_core::array::ElemType::F16 => ElemType::F16,
            qgate_core::array::ElemType::F32 => ElemType::F32,
            qgate_core::array::ElemType::F64 => ElemType::F64,
            qgate_core::array::ElemType::I8 => ElemType::I8,
            qgate_core::array::ElemType::I16 => ElemType::I16,
            qgate_core::array::ElemType::I32 => ElemType::I32,
            qgate_core::array::ElemType::I64 => ElemType::I64,
            qgate_core::array::ElemType::U8 => ElemType::U8,
            qgate_core::array::ElemType::U16 => ElemType::U16,
            qgate_core::array::ElemType::U32 => ElemType::U32,
            qgate_core::array::ElemType::U64 => ElemType::U64,
            qgate_core::array::ElemType::Bool => ElemType::Bool,
            qgate_core::array::ElemType::Str => ElemType::Str,
        }
    }
}

impl Conv<EnergyFigures> for qgate_bench::EnergyFigures {
    fn conv(&self) -> EnergyFigures {
        let v = self;
        EnergyFigures {
            sources: v.sources.conv(),
            joules_per_inference: v.joules_per_inference.conv(),
            joules_per_inference_ci: v.joules_per_inference_ci.conv(),
            decision_ci: v.decision_ci.conv(),
            unavailable: v.unavailable.conv(),
        }
    }
}

impl Conv<EnergyReading> for qgate_bench::EnergyReading {
    fn conv(&self) -> EnergyReading {
        let v = self;
        EnergyReading {
            source: v.source.conv(),
            scope: v.scope.conv(),
            joules: v.joules.conv(),
            seconds: v.seconds.conv(),
            mean_watts: v.mean_watts.conv(),
            domains: v.domains.conv(),
        }
    }
}

impl Conv<EvalResult> for qgate_quant::EvalResult {
    fn conv(&self) -> EvalResult {
        let v = self;
        EvalResult {
            metric: v.metric.conv(),
            kl_mean: v.kl_mean.conv(),
            passes: v.passes.conv(),
            failed: v.failed.conv(),
        }
    }
}

impl Conv<Fingerprint> for qgate_bench::Fingerprint {
    fn conv(&self) -> Fingerprint {
        let v = self;
        Fingerprint {
            cpu_model: v.cpu_model.conv(),
            arch: v.arch.conv(),
            cpu_features: v.cpu_features.conv(),
            logical_cores: v.logical_cores.conv(),
            physical_cores: v.physical_cores.conv(),
            memory_total_bytes: v.memory_total_bytes.conv(),
            os: v.os.conv(),
            kernel: v.kernel.conv(),
            governor: v.governor.conv(),
            max_freq_mhz: v.max_freq_mhz.conv(),
            smt: v.smt.conv(),
        }
    }
}

impl Conv<Flip> for qgate_core::compare::Flip {
    fn conv(&self) -> Flip {
        let v = self;
        Flip {
            index: v.index.conv(),
            id: v.id.conv(),
            label: v.label.conv(),
            baseline: v.baseline.conv(),
            candidate: v.candidate.conv(),
        }
    }
}

impl Conv<Flips> for qgate_core::compare::Flips {
    fn conv(&self) -> Flips {
        let v = self;
        Flips {
            negative: v.negative.conv(),
            positive: v.positive.conv(),
        }
    }
}

impl Conv<FrontLatency> for qgate_quant::FrontLatency {
    fn conv(&self) -> FrontLatency {
        let v = self;
        FrontLatency {
            median_ms: v.median_ms.conv(),
            p99_ms: v.p99_ms.conv(),
            speedup_vs_fp32: v.speedup_vs_fp32.conv(),
            speedup_ci: v.speedup_ci.conv(),
        }
    }
}

impl Conv<FrontPoint> for qgate_quant::FrontPoint {
    fn conv(&self) -> FrontPoint {
        let v = self;
        FrontPoint {
            method: v.method.conv(),
            keep_float: v.keep_float.conv(),
            n_float_layers: v.n_float_layers.conv(),
            metric: v.metric.conv(),
            kl: v.kl.conv(),
            passes: v.passes.conv(),
            model_bytes: v.model_bytes.conv(),
            latency: v.latency.conv(),
        }
    }
}

impl Conv<GpuDeviceReading> for qgate_bench::GpuDeviceReading {
    fn conv(&self) -> GpuDeviceReading {
        let v = self;
        GpuDeviceReading {
            index: v.index.conv(),
            name: v.name.conv(),
            mean_util_pct: v.mean_util_pct.conv(),
            peak_mem_used_bytes: v.peak_mem_used_bytes.conv(),
            mem_total_bytes: v.mem_total_bytes.conv(),
        }
    }
}

impl Conv<Histogram> for qgate_core::divergence::Histogram {
    fn conv(&self) -> Histogram {
        let v = self;
        Histogram {
            edges: v.edges.conv(),
            counts: v.counts.conv(),
        }
    }
}

impl Conv<HostInfo> for qgate_runtime::HostInfo {
    fn conv(&self) -> HostInfo {
        let v = self;
        HostInfo {
            cpu: v.cpu.conv(),
            cores: v.cores.conv(),
            os: v.os.conv(),
        }
    }
}

impl Conv<IgnoredArray> for qgate_eval::IgnoredArray {
    fn conv(&self) -> IgnoredArray {
        let v = self;
        IgnoredArray {
            name: v.name.conv(),
            reason: crate::words::ignored(&v.reason),
        }
    }
}

impl Conv<InputBinding> for qgate_eval::InputBinding {
    fn conv(&self) -> InputBinding {
        let v = self;
        InputBinding {
            input: v.input.conv(),
            array: v.array.conv(),
            how: crate::words::bound_by(v),
        }
    }
}

impl Conv<KlSummary> for qgate_core::divergence::KlSummary {
    fn conv(&self) -> KlSummary {
        let v = self;
        KlSummary {
            n: v.n.conv(),
            mean: v.mean.conv(),
            median: v.median.conv(),
            p95: v.p95.conv(),
            p99: v.p99.conv(),
            max: v.max.conv(),
            histogram: v.histogram.conv(),
        }
    }
}

impl Conv<LatencySummary> for qgate_core::latency::LatencySummary {
    fn conv(&self) -> LatencySummary {
        let v = self;
        LatencySummary {
            n: v.n.conv(),
            mean: v.mean.conv(),
            std: v.std.conv(),
            min: v.min.conv(),
            max: v.max.conv(),
            p50: v.p50.conv(),
            p90: v.p90.conv(),
            p95: v.p95.conv(),
            p99: v.p99.conv(),
            p999: v.p999.conv(),
            mean_ci: v.mean_ci.conv(),
            median_ci: v.median_ci.conv(),
            outliers: v.outliers.conv(),
        }
    }
}

impl Conv<Layer> for qgate_quant::Layer {
    fn conv(&self) -> Layer {
        let v = self;
        Layer {
            node: v.node.conv(),
            op_type: v.op_type.conv(),
            index: v.index.conv(),
            weight: v.weight.conv(),
            weight_slot: v.weight_slot.conv(),
            weight_axis: v.weight_axis.conv(),
            activations: v.activations.conv(),
            output: v.output.conv(),
            cut_inputs: v.cut_inputs.conv(),
        }
    }
}

impl Conv<LayerSensitivity> for qgate_quant::LayerSensitivity {
    fn conv(&self) -> LayerSensitivity {
        let v = self;
        LayerSensitivity {
            node: v.node.conv(),
            op_type: v.op_type.conv(),
            metric_drop: v.metric_drop.conv(),
            kl: v.kl.conv(),
            mse: v.mse.conv(),
            sqnr_db: v.sqnr_db.conv(),
            weight_sqnr_db: v.weight_sqnr_db.conv(),
            all_but_metric_drop: v.all_but_metric_drop.conv(),
            all_but_kl: v.all_but_kl.conv(),
            confirmed: v.confirmed.conv(),
        }
    }
}

impl Conv<LoadFigures> for qgate_bench::LoadFigures {
    fn conv(&self) -> LoadFigures {
        let v = self;
        LoadFigures {
            achieved_per_s: v.achieved_per_s.conv(),
            p50_ms: v.p50_ms.conv(),
            p90_ms: v.p90_ms.conv(),
            p99_ms: v.p99_ms.conv(),
            unserved: v.unserved.conv(),
        }
    }
}

impl Conv<LoadPoint> for qgate_bench::LoadPoint {
    fn conv(&self) -> LoadPoint {
        let v = self;
        LoadPoint {
            offered_per_s: v.offered_per_s.conv(),
            baseline: v.baseline.conv(),
            candidate: v.candidate.conv(),
        }
    }
}

impl Conv<Localisation> for qgate_quant::Localisation {
    fn conv(&self) -> Localisation {
        let v = self;
        Localisation {
            activations: v.activations.conv(),
            weights: v.weights.conv(),
            first_jump: v.first_jump.conv(),
        }
    }
}

impl Conv<MemoryFigures> for qgate_bench::MemoryFigures {
    fn conv(&self) -> MemoryFigures {
        let v = self;
        MemoryFigures {
            rss_before_load_bytes: v.rss_before_load_bytes.conv(),
            rss_after_load_bytes: v.rss_after_load_bytes.conv(),
            load_delta_bytes: v.load_delta_bytes.conv(),
            peak_rss_bytes: v.peak_rss_bytes.conv(),
            peak_rss_run_bytes: v.peak_rss_run_bytes.conv(),
            peak_rss_with_sweeps_bytes: v.peak_rss_with_sweeps_bytes.conv(),
        }
    }
}

impl Conv<ModelInfo> for qgate_runtime::ModelInfo {
    fn conv(&self) -> ModelInfo {
        let v = self;
        ModelInfo {
            inputs: v.inputs.conv(),
            outputs: v.outputs.conv(),
            op_counts: v.op_counts.conv(),
            opset: v.opset.conv(),
            producer: v.producer.conv(),
            file_bytes: v.file_bytes.conv(),
            sha256: v.sha256.conv(),
        }
    }
}

impl Conv<Normalization> for qgate_quant::Normalization {
    fn conv(&self) -> Normalization {
        let v = self;
        Normalization {
            constants_lifted: v.constants_lifted.conv(),
            names_generated: v.names_generated.conv(),
            external_tensors: v.external_tensors.conv(),
            opset_in: v.opset_in.conv(),
            opset_out: v.opset_out.conv(),
            weight_scales: v.weight_scales.conv(),
            opset_note: crate::words::opset_note(v),
        }
    }
}

impl Conv<OutputCheck> for qgate_bench::protocol::OutputCheck {
    fn conv(&self) -> OutputCheck {
        let v = self;
        OutputCheck {
            tolerance: v.tolerance.conv(),
            batches: v.batches.conv(),
            mismatched_batches: v.mismatched_batches.conv(),
            non_finite_batches: v.non_finite_batches.conv(),
            max_abs_diff: v.max_abs_diff.conv(),
            reference_samples: v.reference_samples.conv(),
            reference_mismatches: v.reference_mismatches.conv(),
            reference_tolerance: v.reference_tolerance.conv(),
            first_mismatch: v.first_mismatch.conv(),
        }
    }
}

impl Conv<OutputKind> for qgate_eval::OutputKind {
    fn conv(&self) -> OutputKind {
        match self {
            qgate_eval::OutputKind::Logits => OutputKind::Logits,
            qgate_eval::OutputKind::Probs => OutputKind::Probs,
            qgate_eval::OutputKind::Labels => OutputKind::Labels,
        }
    }
}

impl Conv<PerfComparison> for qgate_bench::PerfComparison {
    fn conv(&self) -> PerfComparison {
        let v = self;
        PerfComparison {
            speedup: v.speedup.conv(),
            speedup_ci: v.speedup_ci.conv(),
            speedup_decision_ci: v.speedup_decision_ci.conv(),
            throughput_ratio: v.throughput_ratio.conv(),
            p99_ratio: v.p99_ratio.conv(),
            peak_rss_ratio: v.peak_rss_ratio.conv(),
            model_bytes_ratio: v.model_bytes_ratio.conv(),
            summary: crate::words::speed_sentence(v.speedup, v.speedup_ci, v.verdict),
        }
    }
}

impl Conv<Performance> for qgate_bench::Performance {
    fn conv(&self) -> Performance {
        let v = self;
        Performance {
            scenario: crate::words::scenario(v.batch_size, v.rounds),
            batch_size: v.batch_size.conv(),
            rounds: v.rounds.conv(),
            baseline: v.baseline.conv(),
            candidate: v.candidate.conv(),
            comparison: v.comparison.conv(),
            sweeps: v.sweeps.conv(),
            environment: v.environment.conv(),
            notes: v.notes.iter().map(crate::words::note).collect(),
        }
    }
}

impl Conv<PointFigures> for qgate_bench::PointFigures {
    fn conv(&self) -> PointFigures {
        let v = self;
        PointFigures {
            samples_per_s: v.samples_per_s.conv(),
            requests_per_s: v.requests_per_s.conv(),
            mean_ms: v.mean_ms.conv(),
            p50_ms: v.p50_ms.conv(),
            p99_ms: v.p99_ms.conv(),
        }
    }
}

impl Conv<Provenance> for qgate_runtime::Provenance {
    fn conv(&self) -> Provenance {
        let v = self;
        Provenance {
            spec: v.spec.conv(),
            runtime: v.runtime.conv(),
            runtime_version: v.runtime_version.conv(),
            settings: v.settings.conv(),
        }
    }
}

impl Conv<Recommendation> for qgate_quant::Recommendation {
    fn conv(&self) -> Recommendation {
        let v = self;
        Recommendation {
            keep_float: v.keep_float.conv(),
            metric: v.metric.conv(),
            n_float_layers: v.n_float_layers.conv(),
            passes: v.passes.conv(),
            ort_nodes_to_exclude: v.ort_nodes_to_exclude.conv(),
            tensorrt_layer_precisions: v.tensorrt_layer_precisions.conv(),
            nncf_ignored_scope: v.nncf_ignored_scope.conv(),
        }
    }
}

impl Conv<RuntimeCheck> for qgate_eval::RuntimeCheck {
    fn conv(&self) -> RuntimeCheck {
        let v = self;
        RuntimeCheck {
            side: v.side.conv(),
            model: v.model.conv(),
            reference: v.reference.conv(),
            samples: v.samples.conv(),
            output: v.output.conv(),
            top1_agreement: v.top1_agreement.conv(),
            max_abs_diff: v.max_abs_diff.conv(),
            tolerance: v.tolerance.conv(),
            tolerance_basis: v.tolerance_basis.conv(),
            passed: v.passed.conv(),
            first_diverging_tensor: v.first_diverging_tensor.conv(),
        }
    }
}

impl Conv<RuntimeCheckOutcome> for qgate_eval::RuntimeCheckOutcome {
    fn conv(&self) -> RuntimeCheckOutcome {
        match self {
            qgate_eval::RuntimeCheckOutcome::Passed(x0) => RuntimeCheckOutcome::Passed(x0.conv()),
            qgate_eval::RuntimeCheckOutcome::Skipped { side, reason } => {
                RuntimeCheckOutcome::Skipped {
                    side: side.conv(),
                    reason: reason.conv(),
                }
            }
        }
    }
}

impl Conv<ScoreOutput> for qgate_eval::ScoreOutput {
    fn conv(&self) -> ScoreOutput {
        let v = self;
        ScoreOutput {
            name: v.name.conv(),
            kind: v.kind.conv(),
            chosen_by: crate::words::chosen_by(v.chosen_by).into(),
            kind_by: crate::words::kind_by(v.kind_by).into(),
            n_classes: v.n_classes.conv(),
        }
    }
}

impl Conv<SidePerformance> for qgate_bench::SidePerformance {
    fn conv(&self) -> SidePerformance {
        let v = self;
        SidePerformance {
            runtime: v.runtime.conv(),
            model_bytes: v.model_bytes.conv(),
            model: v.model.conv(),
            latency_ms: v.latency_ms.conv(),
            p99_ci_ms: v.p99_ci_ms.conv(),
            p99_decision_ci_ms: v.p99_decision_ci_ms.conv(),
            throughput_per_s: v.throughput_per_s.conv(),
            peak_rss_bytes: v.peak_rss_bytes.conv(),
            memory: v.memory.conv(),
            startup: v.startup.conv(),
            warmup: v.warmup.conv(),
            utilisation: v.utilisation.conv(),
            energy: v.energy.conv(),
            gpus: v.gpus.conv(),
            output_check: v.output_check.conv(),
            workload: v.workload.conv(),
            timer_overhead: v.timer_overhead.conv(),
            round_medians_ms: v.round_medians_ms.conv(),
            round_calls: v.round_calls.conv(),
            raw_latencies_ms: v.raw_latencies_ms.conv(),
        }
    }
}

impl Conv<Signal> for qgate_quant::Signal {
    fn conv(&self) -> Signal {
        match self {
            qgate_quant::Signal::MetricDrop => Signal::MetricDrop,
            qgate_quant::Signal::Kl => Signal::Kl,
            qgate_quant::Signal::LogitMse => Signal::LogitMse,
        }
    }
}

impl Conv<SloSearch> for qgate_bench::SloSearch {
    fn conv(&self) -> SloSearch {
        let v = self;
        SloSearch {
            slo_p99_ms: v.slo_p99_ms.conv(),
            baseline_max_per_s: v.baseline_max_per_s.conv(),
            candidate_max_per_s: v.candidate_max_per_s.conv(),
            trials: v.trials.conv(),
        }
    }
}

impl Conv<SloTrial> for qgate_bench::SloTrial {
    fn conv(&self) -> SloTrial {
        let v = self;
        SloTrial {
            side: v.side.conv(),
            offered_per_s: v.offered_per_s.conv(),
            p99_ms: v.p99_ms.conv(),
            met: v.met.conv(),
        }
    }
}

impl Conv<Source> for qgate_core::policy::Source {
    fn conv(&self) -> Source {
        match self {
            qgate_core::policy::Source::Default => Source::Default,
            qgate_core::policy::Source::File(x0) => Source::File(x0.conv()),
        }
    }
}

impl Conv<StartupFigures> for qgate_bench::StartupFigures {
    fn conv(&self) -> StartupFigures {
        let v = self;
        StartupFigures {
            load_ms: v.load_ms.conv(),
            first_inference_ms: v.first_inference_ms.conv(),
        }
    }
}

impl Conv<Status> for qgate_core::policy::Status {
    fn conv(&self) -> Status {
        match self {
            qgate_core::policy::Status::Pass => Status::Pass,
            qgate_core::policy::Status::Fail => Status::Fail,
            qgate_core::policy::Status::Skipped => Status::Skipped,
        }
    }
}

impl Conv<SweepPoint> for qgate_bench::SweepPoint {
    fn conv(&self) -> SweepPoint {
        let v = self;
        SweepPoint {
            batch: v.batch.conv(),
            streams: v.streams.conv(),
            baseline: v.baseline.conv(),
            candidate: v.candidate.conv(),
        }
    }
}

impl Conv<Sweeps> for qgate_bench::Sweeps {
    fn conv(&self) -> Sweeps {
        let v = self;
        Sweeps {
            batch: v.batch.conv(),
            concurrency: v.concurrency.conv(),
            offline: v.offline.conv(),
            load: v.load.conv(),
            slo: v.slo.conv(),
            skipped: v.skipped.conv(),
        }
    }
}

impl Conv<TensorError> for qgate_quant::TensorError {
    fn conv(&self) -> TensorError {
        let v = self;
        TensorError {
            tensor: v.tensor.conv(),
            op_type: v.op_type.conv(),
            sqnr_db: v.sqnr_db.conv(),
            cosine: v.cosine.conv(),
            max_abs: v.max_abs.conv(),
        }
    }
}

impl Conv<TensorInfo> for qgate_runtime::TensorInfo {
    fn conv(&self) -> TensorInfo {
        let v = self;
        TensorInfo {
            name: v.name.conv(),
            elem_type: v.elem_type.conv(),
            shape: v.shape.conv(),
        }
    }
}

impl Conv<Threshold> for qgate_core::policy::Threshold {
    fn conv(&self) -> Threshold {
        let v = self;
        Threshold {
            key: v.key.conv(),
            value: v.value.conv(),
            source: v.source.conv(),
        }
    }
}

impl Conv<Thumbnail> for qgate_eval::Thumbnail {
    fn conv(&self) -> Thumbnail {
        let v = self;
        Thumbnail {
            id: v.id.conv(),
            width: v.width.conv(),
            height: v.height.conv(),
            channels: v.channels.conv(),
            pixels: v.pixels.conv(),
        }
    }
}

impl Conv<TimerOverhead> for qgate_bench::clock::TimerOverhead {
    fn conv(&self) -> TimerOverhead {
        let v = self;
        TimerOverhead {
            read_ns: v.read_ns.conv(),
            resolution_ns: v.resolution_ns.conv(),
        }
    }
}

impl Conv<Tolerance> for qgate_core::tolerance::Tolerance {
    fn conv(&self) -> Tolerance {
        match self {
            qgate_core::tolerance::Tolerance::Exact => Tolerance::Exact,
            qgate_core::tolerance::Tolerance::Rounding => Tolerance::Rounding,
            qgate_core::tolerance::Tolerance::Float32Reordering => Tolerance::Float32Reordering,
            qgate_core::tolerance::Tolerance::Float16Compute => Tolerance::Float16Compute,
        }
    }
}

impl Conv<Unavailable> for qgate_bench::Unavailable {
    fn conv(&self) -> Unavailable {
        let v = self;
        Unavailable {
            source: v.source.conv(),
            reason: v.reason.conv(),
        }
    }
}

impl Conv<Utilisation> for qgate_bench::Utilisation {
    fn conv(&self) -> Utilisation {
        let v = self;
        Utilisation {
            cpu_seconds: v.cpu_seconds.conv(),
            wall_seconds: v.wall_seconds.conv(),
            cores_busy: v.cores_busy.conv(),
            per_core_pct: v.per_core_pct.conv(),
        }
    }
}

impl Conv<Verdict> for qgate_core::policy::Verdict {
    fn conv(&self) -> Verdict {
        match self {
            qgate_core::policy::Verdict::Pass => Verdict::Pass,
            qgate_core::policy::Verdict::Fail => Verdict::Fail,
        }
    }
}

impl Conv<Warmed> for qgate_bench::protocol::Warmed {
    fn conv(&self) -> Warmed {
        let v = self;
        Warmed {
            iterations: v.iterations.conv(),
            seconds: v.seconds.conv(),
            steady: v.steady.conv(),
            last_window_median_ms: v.last_window_median_ms.conv(),
        }
    }
}

impl Conv<WeightScales> for qgate_quant::WeightScales {
    fn conv(&self) -> WeightScales {
        match self {
            qgate_quant::WeightScales::PerChannel => WeightScales::PerChannel,
            qgate_quant::WeightScales::PerTensor => WeightScales::PerTensor,
        }
    }
}

impl Conv<WorkloadInfo> for qgate_bench::WorkloadInfo {
    fn conv(&self) -> WorkloadInfo {
        let v = self;
        WorkloadInfo {
            source: v.source.conv(),
            samples: v.samples.conv(),
            fixed_batch: v.fixed_batch.conv(),
        }
    }
}

impl From<&qgate_quant::Analysis> for Analysis {
    fn from(a: &qgate_quant::Analysis) -> Analysis {
        a.conv()
    }
}

impl From<&qgate_quant::Normalization> for Normalization {
    fn from(n: &qgate_quant::Normalization) -> Normalization {
        n.conv()
    }
}

impl Conv<Meter> for qgate_bench::Meter {
    fn conv(&self) -> Meter {
        match self {
            qgate_bench::Meter::Rapl => Meter::Rapl,
            qgate_bench::Meter::Jetson => Meter::Jetson,
            qgate_bench::Meter::Nvml => Meter::Nvml,
        }
    }
}
